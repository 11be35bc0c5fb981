"""Issue 25 with trained models: the colour step (colour match 0.5, the old default, and 1.0, whose
lightness is half Poisson's, half the band around the selection: engine/families/consingan/blend.py) and
how much of the selection's own fine detail stays on top of the generator's result (keep detail 0, 0.5, 0.75,
1: engine/families/consingan/apply.with_detail), on the models of bench/experiments/case_models.py (one per
inpainted painting; the case's colour step and detail are applied at harmonize time, so one model serves
every variant). Ring Reinhard (issue 25's baseline), Poisson and the composite beside them.

    python -m bench.experiments.case_models --iters 150            # the models (cached)
    python -m bench.experiments.keep_detail --iters 150 [--sheet runs/keep_detail.png]

Cases whose model is not trained yet are left out (said at the end) unless --train.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench.baselines import poisson_blend, ring_reinhard
from bench.bench_harmonization import to_u8
from bench.bench_preview import write_sheet
from bench.experiments.case_models import all_cases, case_model, model_dir
from bench.quality import masked_error, texture_score
from engine.device import configure_threads
from engine.families.consingan import apply
from engine.imageio import Picture

VARIANTS = [(cm, kd) for cm in (0.5, 0.75, 1.0) for kd in (0.0, 0.5, 1.0)] + [(1.0, 0.75)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--models", type=Path, default=Path("runs/case_models"))
    parser.add_argument("--train", action="store_true", help="train the models that are missing")
    parser.add_argument("--sheet", type=Path, help="a contact sheet: truth, then every method, per case")
    args = parser.parse_args()
    configure_threads()
    totals: dict[str, dict[str, list[tuple[float, float, float]]]] = {"lab": {}, "hsv": {}}
    missing, sheet = [], []
    print("| case | method | MSE (0-255) | texture | Delta E |\n|---|---|---|---|---|", flush=True)
    for case in all_cases():
        if not args.train and not (model_dir(case, args.models, args.iters) / "model.json").is_file():
            missing.append(case.name)
            continue
        model = case_model(case, args.models, args.iters)
        picture = Picture(case.composite.astype(np.float32) / 255.0)
        inside = case.mask > 127
        mask = inside.astype(np.float32)
        results = {
            "composite": case.composite,
            "poisson": poisson_blend(case.composite, inside, case.background),
            "ring reinhard": ring_reinhard(case.composite, inside, 20),
        }
        for cm, kd in VARIANTS:
            results[f"cm {cm:g}, detail {kd:g}"] = to_u8(
                apply.apply_to_selection(model, picture, mask, color_match=cm, keep_detail=kd).rgb
            )
        kind = "lab" if case.name.endswith(("_colour", "_texture")) else "hsv"
        for method, image in results.items():
            mse = float(np.mean((image.astype(np.float64) - case.ground_truth)[inside] ** 2))
            texture = texture_score(image, case.ground_truth, case.mask)
            delta_e = masked_error(image, case.ground_truth, case.mask).delta_e
            totals[kind].setdefault(method, []).append((mse, texture, delta_e))
            print(f"| {case.name} | {method} | {mse:.0f} | {texture:.2f} | {delta_e:.1f} |", flush=True)
        sheet.append(np.concatenate([case.ground_truth, *results.values()], axis=1))
    for kind, methods in totals.items():
        if not methods:
            continue
        ring = np.array([v[0] for v in methods["ring reinhard"]])
        n = len(ring)
        print(f"\n| {kind}: method (mean of {n}) | MSE | texture | Delta E | below ring |")
        print("|---|---|---|---|---|")
        for method, values in methods.items():
            mse, texture, delta_e = np.mean(values, axis=0)
            below = int((np.array([v[0] for v in values]) < ring).sum())
            print(f"| {method} | {mse:.0f} | {texture:.2f} | {delta_e:.1f} | {below} of {n} |")
    if missing:
        print(f"\nleft out (no model yet): {', '.join(missing)}")
    if args.sheet is not None and sheet:
        write_sheet(args.sheet, sheet, 120)
        print(f"sheet: {args.sheet}")


if __name__ == "__main__":
    main()
