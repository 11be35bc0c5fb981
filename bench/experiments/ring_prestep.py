"""Does the candidate colour step of bench/bench_colour.py ("ring lightness") keep its gain once a trained
model runs after it? The same models, trained once per case on the case's inpainted painting (the colour
step is applied at harmonize time, so one model serves every step), harmonize each case with the
engine's default step (colour match 0.5), with 1.0, and with the candidate; ring Reinhard and the
composite beside them.

    python -m bench.experiments.ring_prestep --iters 150 --out runs/ring_prestep

--iters overrides the `fast` preset's iterations per stage (300) to keep the run short; the models are
cached in --out and reused.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from bench.baselines import ring_reinhard
from bench.bench_colour import ring_lightness
from bench.quality import texture_score
from bench.synthetic_cases import load_cases, load_lab_cases
from engine.device import configure_threads, select_device
from engine.families.consingan import apply, store, training
from engine.families.consingan.config import training_configs
from engine.imageio import Picture

CASES = ("oil_tree_0_texture", "pen_building_0_texture", "zebra_0_colour", "stone_1_texture")


def candidate_offset(rgb: np.ndarray, inside: np.ndarray, share: float) -> np.ndarray:
    return np.where(inside[..., None], ring_lightness(rgb, inside) - rgb, 0.0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/ring_prestep"))
    args = parser.parse_args()
    configure_threads()
    device = select_device("cpu")
    everything = {c.name: c for c in [*load_lab_cases(), *load_cases()]}
    totals: dict[str, list[tuple[float, float]]] = {}
    print("| case | method | MSE (0-255) | texture |\n|---|---|---|---|", flush=True)
    for name in args.cases:
        case = everything[name]
        model_dir = args.out / name
        if not (model_dir / "model.json").is_file():
            _, model_cfg, train_cfg = training_configs("harmonization", device, "fast")
            if args.iters:
                train_cfg = dataclasses.replace(train_cfg, iters=args.iters)
            training.train(case.background / 255.0, model_cfg, train_cfg, model_dir, device)
        model = store.load_model(model_dir, device)
        picture = Picture(case.composite.astype(np.float32) / 255.0)
        inside = case.mask > 127
        mask = inside.astype(np.float32)
        results = {
            "composite": case.composite,
            "ring reinhard": ring_reinhard(case.composite, inside, 20),
            "engine (colour match 0.5)": apply.apply_to_selection(model, picture, mask).rgb,
            "engine, colour match 1.0": apply.apply_to_selection(model, picture, mask, color_match=1.0).rgb,
        }
        original = apply.color_match_offset
        apply.color_match_offset = candidate_offset  # type: ignore[assignment]
        try:
            results["engine, ring lightness"] = apply.apply_to_selection(
                model, picture, mask, color_match=1.0
            ).rgb
        finally:
            apply.color_match_offset = original
        for method, image in results.items():
            image8 = (
                image if image.dtype == np.uint8 else np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
            )
            mse = float(np.mean((image8.astype(np.float64) - case.ground_truth)[inside] ** 2))
            texture = texture_score(image8, case.ground_truth, case.mask)
            totals.setdefault(method, []).append((mse, texture))
            print(f"| {name} | {method} | {mse:.0f} | {texture:.2f} |", flush=True)
    print(f"\n| method (mean of {len(args.cases)}) | MSE | texture |\n|---|---|---|")
    for method, values in totals.items():
        mse, texture = np.mean(values, axis=0)
        print(f"| {method} | {mse:.0f} | {texture:.2f} |")


if __name__ == "__main__":
    main()
