"""The daemon as editors see it: protocol overhead on a 2048x2048 harmonization, and quick-request latency
while a training job runs. Starts a real `engine serve` in a temporary home.

Run: python -m bench.bench_serve [--side 2048] [--repeats 5] [--backend onnxruntime]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from editor_bridge import Client, frames
from editor_bridge.connection import read_connection_file
from editor_bridge.errors import BridgeError
from editor_bridge.plugin_core import mask_bbox
from editor_bridge.protocol import ApplyRequest, JobState, TrainRequest

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images" / "harmonization"


def start_daemon(home: Path, backend: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--home", str(home), "--backend", backend]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if read_connection_file(home=home).pid == proc.pid:
                return proc
        except BridgeError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("engine serve did not start")


def layers(side: int) -> dict[str, np.ndarray]:
    def load(name: str, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
        return cv2.resize(cv2.imread(str(IMAGES / name), flags), (side, side), interpolation=cv2.INTER_CUBIC)

    mask = load("scream_naive_mask.jpg", cv2.IMREAD_GRAYSCALE)
    return {
        "background": cv2.cvtColor(load("scream.jpg"), cv2.COLOR_BGR2BGRA),
        "naive": cv2.cvtColor(load("scream_naive.jpg"), cv2.COLOR_BGR2BGRA),
        "mask": np.where(mask > 127, 255, 0).astype(np.uint8)[:, :, None],
    }


def harmonize(layer: dict[str, np.ndarray], **fields) -> tuple[ApplyRequest, list]:
    """The request the Krita plugin sends (editor_bridge.plugin_core.apply_job): the layer and the mask with
    the selection's bounding box, and only that box asked back."""
    buffers: list = []
    bbox = mask_bbox(layer["mask"][:, :, 0])
    image = frames.attach(buffers, layer["naive"], "BGRA", bbox)
    mask = frames.attach(buffers, layer["mask"], "GRAY", bbox)
    fields = {"crop_to_bbox": True, **fields}
    background = None
    if "model_id" not in fields:
        background = frames.attach(buffers, layer["background"], "BGRA")
        fields = {"train_if_missing": True, **fields}
    return ApplyRequest(
        operation="harmonize", image=image, mask=mask, background=background, **fields
    ), buffers


def timed(fn, repeats: int) -> tuple[list[float], list]:
    times, results = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - start)
    return times, results


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms (min {min(values) * 1000:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pings", type=int, default=50)
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        proc = start_daemon(home, args.backend)
        try:
            with Client.from_connection_file(home=home, timeout=300) as client:
                run(client, args)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(120)


def run(client: Client, args: argparse.Namespace) -> None:
    big = layers(args.side)
    # A model with the `fast` preset's shape (3 stages up to 250 px) but only a few iterations: the cost of
    # applying it is what a real fast model costs; its quality does not matter here.
    request, buffers = harmonize(big, train={"preset": "fast", "iters": 2})
    start = time.perf_counter()
    model = client.run_job(request, buffers).content.model
    print(f"model {model.model_id}: {model.n_stages} stages, {model.width}x{model.height}, "
          f"trained + first harmonization in {time.perf_counter() - start:.1f} s")  # fmt: skip

    # 1. Protocol overhead on a big harmonization: client round trip minus the daemon's own work time.
    request, buffers = harmonize(big, model_id=model.model_id)
    client.run_job(request, buffers)  # warm-up (session, caches)
    totals, replies = timed(lambda: client.run_job(request, buffers), args.repeats)
    work = [r.content.elapsed_s for r in replies]
    overhead = [t - w for t, w in zip(totals, work, strict=True)]
    mb = big["naive"].nbytes / 2**20
    print(f"\n{args.side}x{args.side} BGRA harmonization ({mb:.0f} MiB layer + mask in, selection box out), "
          f"{args.backend}, median of {args.repeats}:")  # fmt: skip
    print(f"  round trip in the client      {ms(totals)}")
    print(f"  work inside the daemon        {ms(work)}")
    print(f"  protocol + queueing overhead  {ms(overhead)}  = "
          f"{statistics.median(overhead) / statistics.median(work):.1%} of the work")  # fmt: skip

    # 2. Quick requests while training runs, against the same requests on an idle daemon.
    small = layers(512)
    quick, quick_buffers = harmonize(small, model_id=model.model_id)
    client.run_job(quick, quick_buffers)
    idle_ping, _ = timed(client.ping, args.pings)
    idle_quick, _ = timed(lambda: client.run_job(quick, quick_buffers), args.repeats)

    train_buffers: list = []
    image = frames.attach(train_buffers, small["background"], "BGRA")
    options = {"preset": "fast", "iters": 5000, "seed": 1}
    train = TrainRequest(task="harmonization", image=image, options=options)
    job_id = client.submit(train, train_buffers)
    while client.job_status(job_id).state is not JobState.RUNNING:
        time.sleep(0.05)
    time.sleep(2.0)  # well into training
    busy_ping, _ = timed(client.ping, args.pings)
    busy_quick, _ = timed(lambda: client.run_job(quick, quick_buffers), args.repeats)
    still_running = client.job_status(job_id).state is JobState.RUNNING
    client.cancel(job_id)
    print(f"\nquick requests, idle vs while a `fast` training job runs ({os.cpu_count()} cores):")
    print(f"  ping                          idle {ms(idle_ping)}   training {ms(busy_ping)}")
    print(f"  harmonize 512x512             idle {ms(idle_quick)}   training {ms(busy_quick)}")
    print(f"  training job still running after the quick requests: {still_running}")


if __name__ == "__main__":
    main()
