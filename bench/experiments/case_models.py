"""One harmonization model per distinct inpainted painting of the benchmark cases (bench/synthetic_cases.py),
trained once and cached by the painting's pixels, so that experiments which vary only what happens at
harmonize time (the colour step, how the change is carried) compare on the same models.

    python -m bench.experiments.case_models --iters 150 --out runs/case_models    # trains what is missing
    python -m bench.experiments.case_models --iters 150 --skip '*_easy' '*_hard' 'stone_1_*'   # not those

The order puts the hsv set first, then one region of eight varied paintings (FIRST), then the rest, so a
run cut short still covers both sets. --iters overrides the `fast` preset's 300 iterations per stage.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import hashlib
import time
from pathlib import Path

from bench.synthetic_cases import HarmonizationCase, load_cases, load_lab_cases
from engine.device import configure_threads, select_device
from engine.families.consingan import store, training
from engine.families.consingan.config import training_configs
from engine.families.consingan.store import TrainedModel

# Paintings whose first region comes first, for the most varied sample of a run cut short.
FIRST = ("oil_tree", "pen_building", "zebra", "scream", "watercolor_tree", "angkorwat", "tree", "lightning1")


def all_cases() -> list[HarmonizationCase]:
    """Every case of both sets, in training order (see the module's docstring)."""
    lab = load_lab_cases()
    first = [c for name in FIRST for c in lab if c.name.startswith(f"{name}_0_")]
    return [*load_cases(), *first, *[c for c in lab if c not in first]]


def model_dir(case: HarmonizationCase, root: Path, iters: int | None, variant: str = "") -> Path:
    key = hashlib.sha1(case.background.tobytes()).hexdigest()[:10]
    return root / (f"{key}-{iters or 'fast'}" + (f"-{variant}" if variant else ""))


def case_model(
    case: HarmonizationCase, root: Path, iters: int | None, device=None, variant: str = "", **changes
) -> TrainedModel:
    """The case's model (trained on its inpainted painting), trained first if the cache lacks it; a named
    variant (bench/experiments/train_cost.py) is trained with `changes` to the TrainConfig, cached apart."""
    device = device or select_device("cpu")
    directory = model_dir(case, root, iters, variant)
    if not (directory / "model.json").is_file():
        _, model_cfg, train_cfg = training_configs("harmonization", device, "fast")
        # 3 critic steps: `fast` as it was when these models were measured (2026-12-06; it takes 2 since),
        # so that the cache (keyed by the painting and the iterations) holds one kind of model
        train_cfg = dataclasses.replace(train_cfg, d_steps=3)
        if iters:
            train_cfg = dataclasses.replace(train_cfg, iters=iters)
        train_cfg = dataclasses.replace(train_cfg, **changes)
        training.train(case.background / 255.0, model_cfg, train_cfg, directory, device)
    return store.load_model(directory, device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("runs/case_models"))
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        metavar="PATTERN",
        help="case names (shell patterns) whose models are not trained, e.g. those measured already",
    )
    args = parser.parse_args()
    configure_threads()
    done: set[Path] = set()
    for case in all_cases():
        directory = model_dir(case, args.out, args.iters)
        if directory in done or any(fnmatch.fnmatch(case.name, p) for p in args.skip):
            continue
        done.add(directory)
        start = time.perf_counter()
        case_model(case, args.out, args.iters)
        print(f"{case.name}: {directory} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
