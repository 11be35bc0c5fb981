"""Peak memory of one sample on the CPU, per backend and size, against the bound the engine refuses by.

python -m bench.sample_memory [--presets fast paper] [--sizes 1000x750 2000x1500 4000x3000]
    [--backends onnxruntime torch]

Each measurement runs in its own process (peak resident memory is per process): a preset's generation
network (random weights: memory does not depend on them), one sample at the size, then the process's
peak resident memory over what it held before sampling, per output pixel and feature channel. The
engine refuses a sample whose estimate, `consingan.apply.SAMPLE_BYTES_PER_PIXEL_CHANNEL` x channels x
pixels, is over the memory available (`engine.device.available_memory`). "held after" is what the
process still holds once the sample is returned: onnxruntime's arena gives back what it grew by.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_latency import parse_size


def _resident() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(preset: str, backend_name: str, height: int, width: int) -> dict:
    from bench.bench_runtime import paper_model
    from engine.device import configure_threads
    from engine.families.consingan import apply
    from engine.families.consingan.onnx_export import export
    from engine.runtime import OnnxBackend, SessionCache

    configure_threads()
    model = paper_model(preset)
    if backend_name == "onnxruntime":
        backend = OnnxBackend(export(model, Path(tempfile.mkdtemp()) / "g.onnx"), cache=SessionCache())
    else:
        backend = apply.TorchBackend(model)
    before = _resident()
    start = time.perf_counter()
    apply.sample(model, 1, height, width, backend=backend)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pixels_channels = height * width * model.model.nfc
    return {
        "seconds": seconds,
        "peak_gb": (peak - before) / 1e9,
        "held_gb": (_resident() - before) / 1e9,
        "bytes_per_pixel_channel": (peak - before) / pixels_channels,
        "estimate_gb": apply.sample_memory(model, height, width) / 1e9,
    }


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--presets", nargs="+", default=["fast", "paper"])
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(750, 1000), (1500, 2000)])
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"])
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)  # PRESET BACKEND H W, in a child process
    args = parser.parse_args()
    if args.one:
        preset, backend, h, w = args.one
        print(json.dumps(measure(preset, backend, int(h), int(w))))
        return
    from engine.families.consingan.apply import SAMPLE_BYTES_PER_PIXEL_CHANNEL

    print(f"bound: {SAMPLE_BYTES_PER_PIXEL_CHANNEL} bytes per pixel and channel\n")
    print("| preset | backend | size | seconds | peak GB | B per pixel-channel | estimate GB | held after |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        for backend in args.backends:
            for h, w in args.sizes:
                one = [preset, backend, str(h), str(w)]
                command = [sys.executable, "-m", "bench.sample_memory", "--one", *one]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                r = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"| {preset} | {backend} | {w}x{h} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | "
                    f"{r['bytes_per_pixel_channel']:.1f} | {r['estimate_gb']:.2f} | {r['held_gb']:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
