"""SinGAN's super-resolution on the shared images, against bicubic and Lanczos (issue 23).

    python -m bench singan --preset fast --out runs/bench_singan
    python -m bench singan --preset fast --images zebra.png --factor 4

Each image (../shared/images/generation, cut to a multiple of the factor) is shrunk by --factor (antialiased
bicubic, as SR benchmarks make their small images; --shrink area for area averaging), a super-resolution
model is trained on the small image (cached under --out, as `engine upscale` would), and the small image is
made --factor times larger again by SinGAN, bicubic and Lanczos. The table gives the PSNR against the
original inside a border of 8 px (dB; higher is closer) and the sharpness: the variance of the Laplacian of
the result's luminance over the original's (1 = as sharp as the original; below: blurred; far above:
invented detail). SinGAN's paper reports x4 on BSD100 with RMSE 16.22 against the original (PSNR about 23.9
dB on 0-255) and a NIQE of 3.71, with bicubic sharper in RMSE but blurred; those are the paper's numbers on
its own data, not these. --sheet writes original | bicubic | SinGAN strips.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.sheet import write_strips
from engine import families
from engine.device import configure_threads, select_device
from engine.families.singan import Options
from engine.families.singan.apply import downscale, to_image, to_tensor, upscale
from engine.families.singan.config import resolve
from engine.family import TrainData, TrainRun
from engine.imageio import read_image

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images" / "generation"
BORDER = 8


def psnr(result: np.ndarray, original: np.ndarray) -> float:
    inside = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    mse = float(np.mean((result[inside] - original[inside]) ** 2))
    return 10 * np.log10(1 / max(mse, 1e-12))


def sharpness(image: np.ndarray) -> float:
    grey = cv2.cvtColor(np.clip(image, 0, 1).astype(np.float32), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def shrink(image: np.ndarray, factor: int, method: str) -> np.ndarray:
    """The image `factor` times smaller (its sides multiples of the factor)."""
    h, w = image.shape[0] // factor, image.shape[1] // factor
    if method == "area":
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(to_image(downscale(to_tensor(image), (h, w))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="fast", choices=["paper", "fast", "tiny"])
    parser.add_argument("--iters", type=int, help="iterations per stage (default: the preset's)")
    parser.add_argument("--images", nargs="*", help="file names in shared/images/generation (default: all)")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument(
        "--shrink",
        default="bicubic",
        choices=["bicubic", "area"],
        help="how the small image is made: antialiased bicubic (a = -0.5, MATLAB's imresize, as SR "
        "benchmarks such as BSD100 x4 make theirs; default) or area averaging",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=0.75,
        help="of the stage's change each pass (default: engine upscale's)",
    )
    parser.add_argument("--crop", type=int, help="cut the original's centre to this side first (px)")
    parser.add_argument(
        "--max-size",
        type=int,
        help="the training window's side: a larger small image trains on its piece with the most detail "
        "(default: the preset's)",
    )
    parser.add_argument("--out", default="runs/bench_singan")
    parser.add_argument("--sheet", help="write original | bicubic | SinGAN strips to this file")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.max_size is not None and args.max_size < 16:
        parser.error("--max-size must be at least 16 px")
    configure_threads()
    device = select_device(args.device)
    names = args.images or sorted(p.name for p in IMAGES.iterdir())
    family = families.get("singan")
    options = Options(preset=args.preset, iters=args.iters, max_size=args.max_size)
    # the training window as resolved (the preset's unless --max-size): part of the cached model's name
    window = resolve("super_resolution", device, args.preset, max_size=args.max_size)[1].max_size
    f = args.factor
    rows, strips = [], []
    for name in names:
        original = read_image(IMAGES / name).rgb
        if args.crop:
            top, left = (
                max(0, (original.shape[0] - args.crop) // 2),
                max(0, (original.shape[1] - args.crop) // 2),
            )
            original = original[top : top + args.crop, left : left + args.crop]
        h, w = original.shape[0] // f * f, original.shape[1] // f * f
        original = np.ascontiguousarray(original[:h, :w])
        small = shrink(original, f, args.shrink)
        suffix = (f"_{args.iters}" if args.iters else "") + f"_w{window}"
        crop = f"_crop{args.crop}" if args.crop else ""
        model_dir = Path(args.out) / f"{Path(name).stem}{crop}_x{f}_{args.shrink}_{args.preset}{suffix}"
        timing = model_dir / "bench_seconds.txt"
        if not (model_dir / "model.json").is_file():
            start = time.perf_counter()
            run = TrainRun("super_resolution", TrainData(image=small), options, model_dir, device)
            family.train(run)
            timing.write_text(f"{time.perf_counter() - start:.1f}")
        seconds = float(timing.read_text()) if timing.is_file() else None  # (cached: as measured then)
        loaded = families.load(model_dir, device, backend="torch")
        with torch.no_grad():
            ours = upscale(loaded.model["pyramid"], loaded.runner, small, float(f), 0, strength=args.strength)
        bicubic = np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 1)
        lanczos = np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_LANCZOS4), 0, 1)
        sharp = sharpness(original)
        rows.append(
            (name, f"{w // f}x{h // f}", *(psnr(x, original) for x in (ours, bicubic, lanczos)),
             *(sharpness(x) / sharp for x in (ours, bicubic, lanczos)), seconds)
        )  # fmt: skip
        strips.append(np.concatenate([original, bicubic, ours], axis=1))
        print(f"{name}: done", flush=True)
    print(
        f"\npreset {args.preset}{f', {args.iters} iterations' if args.iters else ''}"
        f", window {window} px, x{f}, strength "
        f"{args.strength:g}, {device.type}\n"
    )
    print("| image | small | PSNR SinGAN | bicubic | Lanczos | sharpness SinGAN | bicubic | Lanczos | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, size, p_s, p_b, p_l, s_s, s_b, s_l, seconds in rows:
        t = f"{seconds / 60:.1f} min" if seconds is not None else "(not timed)"
        scores = " | ".join(f"{v:.2f}" for v in (p_s, p_b, p_l, s_s, s_b, s_l))
        print(f"| {name} | {size} | {scores} | {t} |")
    if args.sheet and strips:
        write_strips(args.sheet, strips)


if __name__ == "__main__":
    main()
