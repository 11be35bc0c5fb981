"""A sheet of a generation image's `fast` and `paper` models side by side: the training image, then three
samples (seed 1), `fast` above, `paper` below (docs/benchmarks.md).

    python -m bench.experiments.fast_vs_paper zebra --out docs/images/generation-zebra-fast-vs-paper.jpg

Uses the models `python -m bench.bench_generation` cached (runs/bench_generation/NAME_fast_bf16 and
runs/bench_generation_paper/NAME_paper_bf16).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.families.consingan import apply, store
from engine.imageio import Picture, read_image, write_image

WIDTH = 1000  # the sheet's width in pixels: four tiles a row


def row(model_dir: Path, n: int, seed: int) -> list[np.ndarray]:
    model = store.load_model(model_dir, torch.device("cpu"))
    training = read_image(model_dir / "training_image.png").rgb
    return [training, *apply.sample(model, n=n, seed=seed)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", help="image name without extension, e.g. zebra")
    parser.add_argument("--out", required=True)
    parser.add_argument("--fast", default="runs/bench_generation")
    parser.add_argument("--paper", default="runs/bench_generation_paper")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = [
        row(Path(args.fast) / f"{args.name}_fast_bf16", 3, args.seed),
        row(Path(args.paper) / f"{args.name}_paper_bf16", 3, args.seed),
    ]
    h, w = rows[0][0].shape[:2]
    tile_w = WIDTH // 4
    tile_h = round(h * tile_w / w)
    tiles = [[cv2.resize(t, (tile_w, tile_h), interpolation=cv2.INTER_AREA) for t in r] for r in rows]
    sheet = np.concatenate([np.concatenate(r, axis=1) for r in tiles])
    write_image(Path(args.out), Picture(sheet.clip(0, 1)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
