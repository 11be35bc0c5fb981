"""Issue 24: where a `fast` harmonization run's time goes, and what a cheaper critic costs in quality.

Each variant trains one model per case painting (bench/experiments/case_models.py's cases, cached beside
that script's models; `base` is the `fast` preset at --iters, trained again here so that its time is
measured in the same run as the others') and harmonizes the case with the engine's defaults; the table
gives each variant's training seconds (model.json), its mean squared error, texture and Delta E inside
the region against the truth, and the ring transfer's error beside them.

    python -m bench.experiments.train_cost --iters 150 [--variants base d2 d1 gp2] [--profile]

Training times compare only between models trained by the same code on the same idle machine: the cache
(keyed by the painting and the iterations) keeps a model from any earlier run.

--whole-run V [V ...] trains the Scream (the demo's painting) with the full `fast` preset once per variant
named, into a temporary folder, and prints each whole run's seconds beside the machine's convolution rate.

--profile first times one iteration of the last stage by part (critic steps with and without the
gradient penalty, the generator's step) on the Scream, with torch.profiler's busiest operators.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.baselines import ring_reinhard
from bench.bench_harmonization import to_u8
from bench.bench_training import SHARED
from bench.experiments.case_models import all_cases, case_model, model_dir
from bench.machine import measure
from bench.quality import masked_error, texture_score
from engine.device import configure_threads, select_device
from engine.families.consingan import apply, store, training
from engine.families.consingan.config import ModelConfig, TrainConfig, training_configs
from engine.imageio import Picture, read_image

# name: the TrainConfig fields it sets on `fast` (whose harmonization took 3 critic steps when measured)
VARIANTS = {
    "base": {"d_steps": 3},
    "d2": {"d_steps": 2},
    "d1": {"d_steps": 1},
    "gp2": {"d_steps": 3, "gp_every": 2},
    "d2gp2": {"d_steps": 2, "gp_every": 2},
    "seed1": {"d_steps": 3, "seed": 1},  # the base with another seed: how far one seed moves the figures
}
CASES = [
    "oil_tree_hard", "pen_building_hard", "scream_hard", "watercolor_tree_hard",
    "oil_tree_0_colour", "oil_tree_0_texture", "pen_building_0_colour", "pen_building_0_texture",
    "zebra_0_colour", "zebra_0_texture", "angkorwat_0_colour", "angkorwat_0_texture",
]  # fmt: skip


def variant_model(case, variant: str, root: Path, iters: int, device) -> tuple[store.TrainedModel, float]:
    model = case_model(case, root, iters, device, variant, **VARIANTS[variant])
    seconds = store.read_meta(model_dir(case, root, iters, variant))["info"]["training_seconds"]
    return model, seconds


def scream(device) -> tuple[np.ndarray, ModelConfig, TrainConfig]:
    """The demo's painting and `fast` harmonization's configs."""
    _, model_cfg, train_cfg = training_configs("harmonization", device, "fast")
    return read_image(SHARED / "harmonization/scream.jpg").rgb, model_cfg, train_cfg


def profile(device) -> None:
    """One iteration of the Scream's last `fast` stage with 3 critic steps, timed by part, then the busiest
    operators."""
    image, model_cfg, train_cfg = scream(device)
    train_cfg = dataclasses.replace(train_cfg, checkpoint_every_s=1e9)
    trainer = training.Trainer(model_cfg, train_cfg, image, Path("/nonexistent"), device)
    for depth in range(len(trainer.shapes)):
        trainer._prepare_stage(depth)
    depth = len(trainer.shapes) - 1
    parts = {}
    for name, changes in [
        ("whole (d3)", {"d_steps": 3}),
        ("d1", {"d_steps": 1}),
        ("d3, no penalty", {"d_steps": 3, "gp_every": 100}),
    ]:
        trainer.train = dataclasses.replace(train_cfg, iters=8, **changes)
        trainer.iteration = 0
        trainer._train_stage(depth)  # warm-up: 8 iterations
        # from iteration 1: "no penalty" (gp_every 100) then computes none of its 18 critic steps
        trainer.iteration, start = 1, time.perf_counter()
        trainer.train = dataclasses.replace(trainer.train, iters=7)
        trainer._train_stage(depth)
        parts[name] = (time.perf_counter() - start) / 6
    whole, d1, no_gp = parts["whole (d3)"], parts["d1"], parts["d3, no penalty"]
    critic_step = (whole - d1) / 2
    penalty = (whole - no_gp) / 3
    print(f"last stage {trainer.shapes[depth]}: {whole:.3f} s an iteration")
    print(f"  a critic step {critic_step:.3f} s ({3 * critic_step / whole:.0%} of it for 3), of which the")
    print(f"  gradient penalty {penalty:.3f} s ({3 * penalty / whole:.0%} of the iteration for 3)")
    print(f"  the generator's step and the rest {whole - 3 * critic_step:.3f} s")
    trainer.train = dataclasses.replace(train_cfg, iters=3, d_steps=3)
    trainer.iteration = 0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer._train_stage(depth)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def whole_runs(device, variants: list[str]) -> None:
    image, model_cfg, train_cfg = scream(device)
    print("| variant | whole `fast` run on the Scream, s |\n|---|---|")
    for variant in variants:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            changed = dataclasses.replace(train_cfg, **VARIANTS[variant])
            training.train(image, model_cfg, changed, Path(tmp) / "m", device)
            print(f"| {variant} | {time.perf_counter() - start:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=150)
    parser.add_argument("--models", type=Path, default=Path("runs/case_models"))
    parser.add_argument(
        "--variants", nargs="+", default=["base", "d2", "d1", "gp2", "seed1"], choices=list(VARIANTS)
    )
    parser.add_argument("--cases", nargs="+", default=CASES)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--whole-run", nargs="+", default=[], choices=list(VARIANTS), metavar="VARIANT")
    args = parser.parse_args()
    configure_threads()
    device = select_device("cpu")
    print(measure(device).line(), flush=True)
    if args.profile:
        profile(device)
    if args.whole_run:
        whole_runs(device, args.whole_run)
        return
    cases = {c.name: c for c in all_cases()}
    rows: dict[str, list[tuple[float, ...]]] = {}
    print(
        "| case | variant | training s | MSE | texture | Delta E | ring MSE |\n|---|---|---|---|---|---|---|"
    )
    for name in args.cases:
        case = cases[name]
        inside = case.mask > 127
        ring = ring_reinhard(case.composite, inside, 20)
        ring_mse = float(np.mean((ring.astype(np.float64) - case.ground_truth)[inside] ** 2))
        picture = Picture(case.composite.astype(np.float32) / 255.0)
        for variant in args.variants:
            model, seconds = variant_model(case, variant, args.models, args.iters, device)
            mask = inside.astype(np.float32)
            image = to_u8(apply.apply_to_selection(model, picture, mask).rgb)
            mse = float(np.mean((image.astype(np.float64) - case.ground_truth)[inside] ** 2))
            texture = texture_score(image, case.ground_truth, case.mask)
            delta_e = masked_error(image, case.ground_truth, case.mask).delta_e
            rows.setdefault(variant, []).append((seconds, mse, texture, delta_e, ring_mse))
            print(f"| {name} | {variant} | {seconds:.0f} | {mse:.0f} | {texture:.2f} | {delta_e:.1f} | "
                  f"{ring_mse:.0f} |", flush=True)  # fmt: skip
    print(
        "\n| variant (mean) | training s | MSE | texture | Delta E | below ring |\n|---|---|---|---|---|---|"
    )
    for variant, values in rows.items():
        seconds, mse, texture, delta_e, _ = np.mean(values, axis=0)
        below = sum(v[1] < v[4] for v in values)
        n = len(values)
        print(f"| {variant} | {seconds:.0f} | {mse:.0f} | {texture:.2f} | {delta_e:.1f} | {below} of {n} |")
    print(measure(device).line())


if __name__ == "__main__":
    main()
