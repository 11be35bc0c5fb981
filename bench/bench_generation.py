"""Generation quality without downloaded weights: patch-statistics distance and diversity per image.

    python -m bench.bench_generation --preset fast --out runs/bench_generation
    python -m bench.bench_generation --preset fast --precision fp32 --images zebra.png

For every image in ../shared/images/generation a model is trained (cached under --out), 10 samples are
drawn, and the table gives the sliced Wasserstein distance between their multi-scale 7x7 patches and the
training image's (lower is closer; the row "noise" is uniform noise for scale) and SinGAN's pixel
diversity (std across samples over the image's std; 0 = every sample the same). "recomputed steps" counts
training steps redone after non-finite gradients (see bench/experiments/check_bf16_conv.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.quality import diversity, swd
from engine.device import configure_threads, select_device
from engine.families.consingan import apply, store, training
from engine.families.consingan.config import training_configs
from engine.imageio import read_image

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images" / "generation"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="fast", choices=["paper", "fast", "tiny"])
    parser.add_argument("--precision", choices=["fp32", "bf16"])
    parser.add_argument("--images", nargs="*", help="file names in shared/images/generation (default: all)")
    parser.add_argument("--n", type=int, default=10, help="samples per model")
    parser.add_argument("--out", default="runs/bench_generation")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    configure_threads()
    device = select_device(args.device)
    names = args.images or sorted(p.name for p in IMAGES.iterdir())
    rows = []
    for name in names:
        _, model_cfg, train_cfg = training_configs("generation", device, args.preset, args.precision)
        model_dir = Path(args.out) / f"{Path(name).stem}_{args.preset}_{train_cfg.precision.value}"
        seconds = None
        if not (model_dir / "model.json").is_file():
            start = time.perf_counter()
            training.train(read_image(IMAGES / name).rgb, model_cfg, train_cfg, model_dir, device)
            seconds = time.perf_counter() - start
        model = store.load_model(model_dir, device)
        image = store.load_training_image(model_dir)
        samples = apply.sample(model, n=args.n, seed=1)
        if not all(np.isfinite(s).all() for s in samples):
            raise SystemExit(f"{name}: the model at {model_dir} samples non-finite values")
        recomputed = store.read_meta(model_dir)["info"].get("recomputed_steps", "?")
        noise = [np.random.default_rng(i).random(image.shape, dtype=np.float32) for i in range(args.n)]
        rows.append(
            (name, swd([image], samples), swd([image], noise), diversity(samples, image), seconds, recomputed)
        )
        print(f"{name}: done", flush=True)
    print(
        f"\npreset {args.preset}, {args.precision or 'default precision'}, {device.type}, {args.n} samples\n"
    )
    print("| image | SWD samples | SWD noise | diversity | training time | recomputed steps |")
    print("|---|---|---|---|---|---|")
    for name, s, s_noise, div, seconds, recomputed in rows:
        t = f"{seconds / 60:.1f} min" if seconds is not None else "(cached)"
        print(f"| {name} | {s:.3f} | {s_noise:.3f} | {div:.2f} | {t} | {recomputed} |")


if __name__ == "__main__":
    main()
