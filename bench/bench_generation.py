"""Generation quality without downloaded weights: patch-statistics distance, diversity and training time
per image, for one family or several side by side (issue 23: SinGAN against ConSinGAN).

    python -m bench.bench_generation --preset fast --out runs/bench_generation
    python -m bench.bench_generation --preset fast --precision fp32 --images zebra.png
    python -m bench.bench_generation --family consingan singan --preset fast --precision fp32 --max-size 200

For every image in ../shared/images/generation and every family a generation model is trained through the
family's own `train` (cached under --out: a model directory keeps its training time in bench_seconds.txt),
10 samples are drawn by the family's `sample` operation (seeds 1-10), and the table gives the sliced
Wasserstein distance between their multi-scale 7x7 patches and the training image's (lower is closer; the
column "noise" is uniform noise for scale) and SinGAN's pixel diversity (std across samples over the
image's std; 0 = every sample the same); --sheet draws each model's training image and first samples.
"recomputed steps" counts ConSinGAN's training steps redone after non-finite gradients (see
bench/experiments/check_bf16_conv.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from bench.quality import diversity, swd
from bench.sheet import write_strips
from engine import families
from engine.device import configure_threads, select_device
from engine.family import TrainData, TrainRun
from engine.imageio import read_image
from engine.model_dir import load_training_image, read_meta
from engine.operations import OperationInput

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images" / "generation"
SECONDS = "bench_seconds.txt"  # beside model.json: how long its training took


def model_for(family: str, name: str, args: argparse.Namespace, device: object) -> tuple[Path, float]:
    """The family's generation model of image `name` (trained unless cached) and its training seconds."""
    fam = families.get(family)
    given = dict(preset=args.preset, precision=args.precision, max_size=args.max_size, iters=args.iters)
    options = fam.checked_options({k: v for k, v in given.items() if v is not None})
    resolved = fam.resolved("generation", options, device)
    precision = args.precision or _precision(resolved.settings)
    parts = [
        Path(name).stem, family if family != "consingan" else None, args.preset, precision,
        f"{args.max_size}px" if args.max_size else None, f"{args.iters}it" if args.iters else None,
    ]  # fmt: skip
    model_dir = Path(args.out) / "_".join(p for p in parts if p)
    if not (model_dir / "model.json").is_file():
        start = time.perf_counter()
        image = read_image(IMAGES / name).rgb
        fam.train(TrainRun("generation", TrainData(image=image), options, model_dir, device))
        (model_dir / SECONDS).write_text(f"{time.perf_counter() - start:.1f}\n")
    seconds = model_dir / SECONDS
    return model_dir, float(seconds.read_text()) if seconds.is_file() else float("nan")


def _precision(settings: dict) -> str:
    for key in ("train", "config"):
        if isinstance(settings.get(key), dict) and "precision" in settings[key]:
            return str(settings[key]["precision"])
    return "default"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", nargs="+", default=["consingan"], choices=["consingan", "singan"])
    parser.add_argument("--preset", default="fast", choices=["paper", "fast", "tiny"])
    parser.add_argument("--precision", choices=["fp32", "bf16"])
    parser.add_argument("--max-size", type=int, help="finest stage's long side, px")
    parser.add_argument("--iters", type=int, help="iterations per stage (default: the preset's)")
    parser.add_argument("--images", nargs="*", help="file names in shared/images/generation (default: all)")
    parser.add_argument("--n", type=int, default=10, help="samples per model")
    parser.add_argument("--out", default="runs/bench_generation")
    parser.add_argument("--device", default=None)
    parser.add_argument("--sheet", help="write a row per model: its training image, then samples 1-3")
    args = parser.parse_args()
    configure_threads()
    device = select_device(args.device)
    names = args.images or sorted(p.name for p in IMAGES.iterdir())
    header = (
        "| image | family | size | SWD samples | SWD noise | diversity | training time | recomputed steps |"
    )
    rows, strips = [], []
    for name in names:
        for family in args.family:
            model_dir, seconds = model_for(family, name, args, device)
            loaded = families.load(model_dir, device, backend="torch")
            spec = next(op for op in loaded.family.operations if op.name == "sample")
            params = spec.check_params({"n": args.n, "seed": 1})
            samples = [p.rgb for p in spec.run(loaded, OperationInput(params=params)).pictures]
            if not all(np.isfinite(s).all() for s in samples):
                raise SystemExit(f"{name}: the model at {model_dir} samples non-finite values")
            image = load_training_image(model_dir)
            recomputed = read_meta(model_dir).get("info", {}).get("recomputed_steps", "-")
            noise = [np.random.default_rng(i).random(image.shape, dtype=np.float32) for i in range(args.n)]
            t = f"{seconds / 60:.1f} min" if np.isfinite(seconds) else "(not recorded)"
            rows.append(
                f"| {name} | {family} | {image.shape[1]}x{image.shape[0]} | {swd([image], samples):.3f} | "
                f"{swd([image], noise):.3f} | {diversity(samples, image):.2f} | {t} | {recomputed} |"
            )
            shown = [cv2.resize(x, image.shape[1::-1]) for x in samples[:3]]  # (the same size: a safeguard)
            strips.append(np.concatenate([image, *shown], axis=1))
            print(f"{name}, {family}: done  {rows[-1]}", flush=True)
    precision = args.precision or "default precision"
    print(f"\npreset {args.preset}, {precision}, {device.type}, {args.n} samples\n")
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.sheet and strips:
        write_strips(args.sheet, strips)


if __name__ == "__main__":
    main()
