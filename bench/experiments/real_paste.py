"""A contact strip of one real paste harmonized by each method, for looking at (there is no answer to
measure against).

    python -m bench.experiments.real_paste out/demo/model --image examples/scream_naive.jpg \\
        --mask examples/scream_naive_mask.jpg --out docs/images/real-paste-comparison.jpg

Left to right: the composite, Reinhard colour transfer, Poisson blending (both given the model's training
image, the painting before the paste, as the background), the ring Reinhard transfer (issue 25's
baseline: each CIELAB channel given the mean and spread of a 20 px ring around the selection), then the
engine at each --color-match value (and each --keep-detail value, if given);
with --linear, each value between 0 and 1 is preceded by the colour match as it was before 2026-11-25 (a
share of Poisson blending's whole change, lightness included).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from bench.baselines import poisson_blend, reinhard_transfer, ring_reinhard
from bench.bench_harmonization import to_u8
from bench.experiments.cached_cases import color_match_step, linear
from engine.families.consingan import apply, blend, store
from engine.families.consingan.pyramid import resize
from engine.imageio import read_image, read_mask


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--image", required=True)
    parser.add_argument("--mask", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--color-match", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    parser.add_argument(
        "--keep-detail", nargs="+", type=float, default=[None], help="each value with each colour match"
    )
    parser.add_argument("--height", type=int, default=256, help="height of the strip")
    parser.add_argument(
        "--linear", action="store_true", help="also show the colour match before 2026-11-25 at each value"
    )
    parser.add_argument(
        "--crop", action="store_true", help="show only the selection's box (and a margin), to judge detail"
    )
    args = parser.parse_args()
    model = store.load_model(args.model_dir)
    picture = read_image(args.image)
    mask = read_mask(args.mask, picture.shape)
    composite = to_u8(picture.rgb)
    background = to_u8(resize(store.load_training_image(args.model_dir), picture.shape))
    panels = [
        composite,
        reinhard_transfer(composite, mask, background),
        poisson_blend(composite, mask, background),
        ring_reinhard(composite, mask > 0.5, 20),
    ]
    names = ["composite", "Reinhard", "Poisson", "ring Reinhard"]
    for color in args.color_match:
        if args.linear and 0 < color < 1:
            with color_match_step(linear(blend.surroundings_offset)):
                panels.append(to_u8(apply.apply_to_selection(model, picture, mask, color_match=color).rgb))
            names.append(f"linear color match {color:g}")
        for detail in args.keep_detail:
            result = apply.apply_to_selection(model, picture, mask, color_match=color, keep_detail=detail)
            panels.append(to_u8(result.rgb))
            label = "" if detail is None else f", detail {detail:g}"
            names.append(f"engine, color match {color:g}{label}")
    if args.crop:
        x, y, w, h = cv2.boundingRect((mask > 0.5).astype(np.uint8))
        margin = max(w, h) // 4
        x0, y0 = max(0, x - margin), max(0, y - margin)
        panels = [p[y0 : y + h + margin, x0 : x + w + margin] for p in panels]
    h, w = panels[0].shape[:2]
    width = round(w * args.height / h)
    strip = np.concatenate(
        [cv2.resize(p, (width, args.height), interpolation=cv2.INTER_AREA) for p in panels], axis=1
    )
    cv2.imwrite(args.out, cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(f"{args.out}: {', '.join(names)}")


if __name__ == "__main__":
    main()
