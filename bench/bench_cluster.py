"""`engine batch` on Ray against the local batch: images per second, what Ray adds per image, and what N
nodes would give.

    python -m bench.bench_cluster                         # 24 images of 1024 px, a `fast`-sized model
    python -m bench.bench_cluster --images 48 --side 2048

A model with the `fast` preset's architecture is trained for 2 iterations a stage (what an image costs to
re-style depends on the architecture and the image size, not on how long the weights trained), on the
harmonization painting; the images are the shared naive composites scaled to --side px on the long side.
Then, on this machine:
- local: `engine batch`'s in-process loop (one model on every core), the model loaded beforehand;
- ray, N workers: a one-node Ray cluster on loopback with all the cores (bench/local_cluster.py),
  `engine batch --cluster` with N model replicas, the cores shared among them. Its wall time includes
  connecting and starting the actors (each loads the model); "startup" is the time to the first finished
  image, and the steady rate is counted from then on.
Ray's cost per image = the steady seconds per image of one Ray worker with every core, minus the local
loop's (Ray Data's scheduling, moving each row, an actor's call): the same cores, one model each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import torch

from bench.local_cluster import LocalCluster
from engine import batch
from engine.cluster import batch as on_cluster
from engine.families.consingan import training
from engine.families.consingan.config import preset, with_overrides
from engine.imageio import read_image

SHARED = Path(os.environ.get("SHARED_IMAGES", Path(__file__).resolve().parents[2] / "shared" / "images"))
NAIVE = ("scream", "oil_tree", "pen_building", "watercolor_tree")


def make_inputs(folder: Path, n: int, side: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        image = cv2.imread(str(SHARED / "harmonization" / f"{NAIVE[i % len(NAIVE)]}_naive.jpg"))
        h, w = image.shape[:2]
        scale = side / max(h, w)
        size = (round(w * scale), round(h * scale))
        cv2.imwrite(str(folder / f"img{i:03d}.png"), cv2.resize(image, size, interpolation=cv2.INTER_CUBIC))


def timed_local(model: Path, inputs: Path, out: Path) -> float:
    apply_fn = batch.in_process(model, None, "cpu", {})
    items = batch.plan(inputs, out, None)
    start = time.perf_counter()
    report = batch.run(items, apply_fn, False)
    assert not report.failed, report.failed
    return time.perf_counter() - start


def timed_cluster(address: str, model: Path, inputs: Path, out: Path, workers: int) -> tuple[float, float]:
    """(wall seconds, seconds to the first finished image)."""
    todo = on_cluster.plan(str(inputs), str(out), None)
    first: list[float] = []
    start = time.perf_counter()

    def progress(i: int, n: int, name: str) -> None:
        if name and not first:
            first.append(time.perf_counter() - start)

    report = on_cluster.run(address, model, todo, False, None, None, {}, workers, progress)
    assert not report.failed, report.failed
    return time.perf_counter() - start, first[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--side", type=int, default=1024, help="long side of each image, px")
    parser.add_argument("--preset", default="fast", choices=["fast", "tiny"], help="the model's architecture")
    parser.add_argument("--workers", default="1,2", help="replica counts to measure")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        model_cfg, train_cfg = with_overrides(*preset(args.preset, "harmonization"), iters=2)
        image = read_image(SHARED / "harmonization" / "scream.jpg").rgb
        model = training.train(image, model_cfg, train_cfg, root / "model", torch.device("cpu"))
        inputs = root / "in"
        make_inputs(inputs, args.images, args.side)
        print(f"{args.images} images, {args.side} px long side, `{args.preset}` model, {cores} cores")
        local = timed_local(model, inputs, root / "local")
        per_local = local / args.images
        rows = [("local (in-process)", "-", local, None, args.images / local)]
        cluster = LocalCluster(root).start(workers=0, head_cpus=cores)
        try:
            for n in (int(w) for w in args.workers.split(",")):
                wall, startup = timed_cluster(cluster.address, model, inputs, root / f"ray{n}", n)
                steady = (wall - startup) / max(args.images - 1, 1)
                rows.append((f"ray, {n} worker{'s' * (n > 1)}", f"{cores // n}", wall, startup, 1 / steady))
        finally:
            cluster.stop()
        print("| run | cores each | wall s | startup s | images / s (steady) | s / image |")
        print("|---|---|---|---|---|---|")
        for name, each, wall, startup, rate in rows:
            start = "-" if startup is None else f"{startup:.1f}"
            print(f"| {name} | {each} | {wall:.1f} | {start} | {rate:.2f} | {1 / rate:.3f} |")
        best = max(rate for name, _, _, _, rate in rows if name.startswith("ray"))
        one = next((rate for name, _, _, _, rate in rows if name == "ray, 1 worker"), None)
        if one is not None:  # the same cores and one model, as the local loop: what Ray adds
            print(
                f"Ray's cost per image (1 worker with every core against the local loop): "
                f"{(1 / one - per_local) * 1000:+.0f} ms ({1 / one:.3f} s against {per_local:.3f} s)"
            )
        projected = ", ".join(f"{k} nodes {best * k:.1f}/s" for k in (1, 4, 16, 64))
        print(f"on N nodes like this one, if the shared storage keeps up (best Ray row x N): {projected}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
