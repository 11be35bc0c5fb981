"""The colour step of harmonization against issue 25's baselines, on both case sets, without a model.

    python -m bench.bench_colour                    # both case sets, the per-case rows and the means
    python -m bench.bench_colour --sets lab --out runs/bench_colour   # and a contact sheet

Case sets (bench/synthetic_cases.py, at 250 px): "lab", issue 25's: every shared painting (12), two
regions each shaped like the shared pasted objects, each recoloured in CIELAB (lightness gain and offset,
a*/b* gains and offsets) as a "colour" case and also smoothed like a photo as a "texture" case, 48 in all;
"hsv", the harmonization benchmark's eight (hue, saturation, channel gains, contrast).

Methods: the untouched composite; Poisson blending into the inpainted painting; Reinhard's transfer from
the whole painting outside the region ("reinhard") and from a ring of painting 20 px wide around it ("ring
reinhard", issue 25's baseline); the engine's colour match as its harmonization models apply it before the
generator (`color match 0.5`, and 1.0, whose lightness is half Poisson's, half the band around the
selection's); the candidate that 1.0 came from (`ring lightness`, below); and the training-free preview
(engine/preview.py).
What the trained models add on top of their colour step is bench/bench_harmonization.py's (it trains one
model per case). Errors inside the region against the original painting: mean squared RGB error on a
0-255 scale (issue 25's measure), and the texture score (bench/quality.py: 1 = as much fine texture as the
painting there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from bench.baselines import poisson_blend, reinhard_transfer, ring_mask, ring_reinhard
from bench.bench_preview import write_sheet
from bench.quality import texture_score
from bench.synthetic_cases import HarmonizationCase, load_cases, load_lab_cases
from engine.families.consingan.blend import color_match_offset, surroundings_offset
from engine.imageio import Picture
from engine.preview import PreviewSettings, harmonize_preview


def _u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def ring_lightness(rgb: np.ndarray, inside: np.ndarray, ring_share: float = 0.04) -> np.ndarray:
    """The candidate colour step of 2026-12-04, kept to compare with: half the colour match at 0.5 with
    the selection's mean lightness moved to that of a ring of painting around it (`ring_share` of the long
    side wide, 10 px at 250 px), half Poisson's whole change, mixed in RGB. The engine's colour match at
    1.0 now makes the same mix in CIELAB, with the mean's move limited (blend.color_match_offset). Float
    RGB in [0, 1]."""
    width = max(2, round(ring_share * max(inside.shape)))
    ring = ring_mask(inside, width)
    half = np.clip(rgb + color_match_offset(rgb, inside, 0.5), 0, 1)
    lab = cv2.cvtColor(half, cv2.COLOR_RGB2Lab)
    ring_light = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[..., 0][ring].mean()
    lab[..., 0] = np.where(inside, lab[..., 0] - lab[..., 0][inside].mean() + ring_light, lab[..., 0])
    moved = np.where(inside[..., None], np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), 0, 1), rgb)
    poisson = np.clip(rgb + surroundings_offset(rgb, inside), 0, 1)
    return 0.5 * moved + 0.5 * poisson


def methods(case: HarmonizationCase) -> dict[str, np.ndarray]:
    inside = case.mask > 127
    rgb = case.composite.astype(np.float32) / 255
    return {
        "composite": case.composite,
        "poisson": poisson_blend(case.composite, inside, case.background),
        "reinhard": reinhard_transfer(case.composite, inside, case.background),
        "ring reinhard": ring_reinhard(case.composite, inside, 20),
        "color match 0.5": _u8(rgb + color_match_offset(rgb, inside, 0.5)),
        "color match 1.0": _u8(rgb + color_match_offset(rgb, inside, 1.0)),
        "ring lightness (candidate)": _u8(ring_lightness(rgb, inside)),
        "preview": _u8(
            harmonize_preview(Picture(rgb), inside.astype(np.float32), None, PreviewSettings()).rgb
        ),
    }


def run(name: str, cases: list[HarmonizationCase], out: Path | None) -> None:
    rows, totals, sheet = [], {}, []
    for case in cases:
        inside = case.mask > 127
        found = methods(case)
        for method, image in found.items():
            mse = float(np.mean((image.astype(np.float64) - case.ground_truth)[inside] ** 2))
            texture = texture_score(image, case.ground_truth, case.mask)
            rows.append((case.name, method, mse, texture))
            totals.setdefault(method, []).append((mse, texture))
        if out is not None:
            sheet.append(np.concatenate([case.ground_truth, *found.values()], axis=1))
    print(f"\n{name}: {len(cases)} cases")
    print("\n| case | method | MSE (0-255) | texture |\n|---|---|---|---|")
    for case_name, method, mse, texture in rows:
        print(f"| {case_name} | {method} | {mse:.0f} | {texture:.2f} |")
    ring = np.array([m for m, _ in totals["ring reinhard"]])
    print(
        f"\n| method (mean of {len(cases)}) | MSE | texture | cases below ring reinhard |\n|---|---|---|---|"
    )
    for method, values in totals.items():
        mse, texture = np.mean(values, axis=0)
        below = int((np.array([m for m, _ in values]) < ring).sum())
        print(f"| {method} | {mse:.0f} | {texture:.2f} | {below} of {len(cases)} |")
    if out is not None:
        write_sheet(out / f"{name}.png", sheet, 160)
        print(f"\nsheet (truth, {', '.join(totals)}): {out / f'{name}.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", nargs="+", default=["lab", "hsv"], choices=["lab", "hsv"])
    parser.add_argument("--regions", type=int, default=2, help="regions per painting in the lab set")
    parser.add_argument("--paintings", type=int, default=None, help="only the first N paintings (lab)")
    parser.add_argument("--out", type=Path, help="folder for the contact sheets")
    args = parser.parse_args()
    if "lab" in args.sets:
        cases = load_lab_cases(regions=args.regions)
        if args.paintings is not None:
            cases = cases[: args.paintings * args.regions * 2]
        run("lab", cases, args.out)
    if "hsv" in args.sets:
        run("hsv", load_cases(), args.out)


if __name__ == "__main__":
    main()
