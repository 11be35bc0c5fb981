"""Sampling and harmonization latency on this machine at 250 px, 1024 px and 4000x3000, per backend.

python -m bench.bench_latency --harmonization MODEL_DIR [--sizes 250 1024 4000x3000] [--repeats 3]
    [--tasks sample harmonize] [--backends onnxruntime torch]

Sampling: a `fast`-shaped generation model (32 feature channels, 6 stages, trained size 188x250; random
weights: timing only). Harmonization: the given trained harmonization model (e.g. the one `engine demo`
writes to out/demo/model) applied to examples/scream_naive.jpg and its mask, resized to each size: the
full-resolution path users get (generator at model size, change carried to full size, feathered blend).
Times are seconds per call (best of --repeats after a warm-up), without reading or writing files. A
4000x3000 sample needs about 12 GB; run each backend in its own process there (a process's peak memory is
its largest, and onnxruntime's arena keeps its growth for the session's lifetime here, as on the command
line: bench.sample_memory).
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.bench_runtime import best_of, paper_model
from engine.device import configure_threads
from engine.families.consingan import apply, store
from engine.families.consingan.onnx_export import export
from engine.imageio import Picture, read_image
from engine.runtime import OnnxBackend, SessionCache, make_backend

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def parse_size(text: str) -> tuple[int, int]:
    """'1024' (long side, 4:3 landscape) or 'WxH' -> (height, width)."""
    if "x" in text:
        w, h = (int(v) for v in text.split("x"))
        return h, w
    side = int(text)
    return round(side * 3 / 4), side


def row(task: str, h: int, w: int, cells: list[float]) -> None:
    print(f"| {task} | {w}x{h} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--harmonization", type=Path, help="a trained harmonization model directory")
    parser.add_argument("--sizes", nargs="+", default=["250", "1024", "4000x3000"])
    parser.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--shape", default="fast", choices=["paper", "fast", "tiny"], help="the sampled model's preset shape"
    )
    parser.add_argument(
        "--tasks", nargs="+", default=["sample", "harmonize"], choices=["sample", "harmonize"]
    )
    args = parser.parse_args()
    configure_threads()
    print(f"threads: {torch.get_num_threads()}; best of {args.repeats} after a warm-up, seconds per call\n")
    print("| task | size | " + " | ".join(args.backends) + " |")
    print("|---|---|" + "---|" * len(args.backends))

    if "sample" in args.tasks:
        sampling(args)
    if "harmonize" in args.tasks and args.harmonization is not None:
        harmonizing(args)


def sampling(args: argparse.Namespace) -> None:
    generation = paper_model(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        backends: dict = {}  # only those asked for: an export takes seconds
        if "onnxruntime" in args.backends:
            backends["onnxruntime"] = OnnxBackend(
                export(generation, Path(tmp) / "g.onnx"), cache=SessionCache()
            )
        if "torch" in args.backends:
            backends["torch"] = apply.TorchBackend(generation)
        for size in args.sizes:
            h, w = parse_size(size)
            cells = []
            for name in args.backends:
                backend = backends[name]
                cells.append(
                    best_of(partial(apply.sample, generation, 1, h, w, backend=backend), args.repeats)
                )
            row(f"sample (`{args.shape}`-shaped generation model)", h, w, cells)


def harmonizing(args: argparse.Namespace) -> None:
    model = store.load_model(args.harmonization, "cpu")
    naive = read_image(EXAMPLES / "scream_naive.jpg").rgb
    mask = cv2.imread(str(EXAMPLES / "scream_naive_mask.jpg"), cv2.IMREAD_GRAYSCALE)
    for size in args.sizes:
        h, w = parse_size(size)
        picture = Picture(cv2.resize(naive, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1))
        selection = (cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR) > 127).astype(np.float32)
        cells = []
        for name in args.backends:
            backend = make_backend(model, name)
            run = partial(apply.apply_to_selection, model, picture, selection, backend=backend)
            cells.append(best_of(run, args.repeats))
        row(f"harmonize ({args.harmonization})", h, w, cells)


if __name__ == "__main__":
    main()
