"""Harmonization quality on synthetic cases with a known answer, against simple baselines.

    python -m bench.bench_harmonization --preset fast --out runs/bench_harmonization
    python -m bench.bench_harmonization --preset tiny --cases scream_easy     # a smoke run
    python -m bench.bench_harmonization --color-match 0 0.5 0.75 1 --finetune 500   # more engine rows

For each case (bench/synthetic_cases.py: a real region of a shared painting inpainted away, pasted back
recoloured, and smoothed in the hard cases) a model is trained on the inpainted background, then the
composite is harmonized. Reported per method: mean Delta E and RMSE inside the mask against the original
painting, the detail score (1 = the painting's own fine detail, 0 = a blurred blob) and the texture score
(1 = fine texture as strong as the painting's there, whatever its strokes; 0 = a blurred blob).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import cv2
import numpy as np

from bench.baselines import poisson_blend, reinhard_transfer
from bench.machine import measure, relative
from bench.quality import detail_score, masked_error, texture_score
from bench.synthetic_cases import HarmonizationCase, load_cases
from engine.device import configure_threads, select_device
from engine.families.consingan import apply, store, training
from engine.families.consingan.config import TrainConfig, training_configs
from engine.imageio import Picture


def to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def check_cached(model_dir: Path, wanted: TrainConfig) -> None:
    """Refuse a cached model trained otherwise (a preset changed since, another seed or setting): the cache
    is keyed by case and preset name only, and a silent mix would measure the wrong models."""
    stored = TrainConfig.from_dict(store.read_meta(model_dir)["training"])
    same = {"checkpoint_every_s": 0.0, "precision": wanted.precision}
    if dataclasses.replace(stored, **same) != dataclasses.replace(wanted, **same):
        changed = [
            f"{k} {v} (now {getattr(wanted, k)})"
            for k, v in dataclasses.asdict(stored).items()
            if k not in same and v != getattr(wanted, k)
        ]
        raise SystemExit(f"{model_dir} was trained with {', '.join(changed)}: use another --out or delete it")


def engine_result(
    case: HarmonizationCase,
    model_dir: Path,
    preset_name: str,
    device,
    finetune: int,
    color_matches: list[float | None],
    smooth: float | None = None,
    seed: int = 0,
    recolour: float | None = None,
) -> dict:
    """Train on the background (cached in model_dir), harmonize the composite with each colour match (None:
    the default); optionally also with a model fine-tuned on the composite."""
    timings = {}
    _, model_cfg, train_cfg = training_configs("harmonization", device, preset_name)
    train_cfg = dataclasses.replace(train_cfg, seed=seed)
    if smooth is not None:
        train_cfg = dataclasses.replace(train_cfg, smooth_probability=smooth)
    if recolour is not None:
        train_cfg = dataclasses.replace(train_cfg, recolour_probability=recolour)
    if (model_dir / "model.json").is_file():
        check_cached(model_dir, train_cfg)
    else:
        start = time.perf_counter()
        if (model_dir / store.CHECKPOINT_DIR / "state.pt").is_file():  # an interrupted run: continue it
            training.resume(model_dir, device)
        else:
            training.train(case.background / 255.0, model_cfg, train_cfg, model_dir, device)
        timings["train_s"] = time.perf_counter() - start
    picture = Picture(case.composite.astype(np.float32) / 255.0)
    mask = (case.mask > 127).astype(np.float32)
    models = {"engine": store.load_model(model_dir, device)}
    if finetune:
        tuned = model_dir.with_name(model_dir.name + "_tuned")
        if not (tuned / "model.json").is_file():
            start = time.perf_counter()
            training.finetune(model_dir, picture.rgb, tuned, device, iters=finetune)
            timings["finetune_s"] = time.perf_counter() - start
        models["engine+finetune"] = store.load_model(tuned, device)
    results = {}
    for name, model in models.items():
        for color in color_matches:
            label = name if color is None else f"{name} color {color:g}"
            harmonized = apply.apply_to_selection(model, picture, mask, color_match=color)
            results[label] = to_u8(harmonized.rgb)
    return {"results": results, "timings": timings}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="fast", choices=["paper", "fast", "tiny"])
    parser.add_argument(
        "--finetune", type=int, default=0, help="also fine-tune on the composite (iterations)"
    )
    parser.add_argument("--cases", nargs="*", help="case names (default: all)")
    parser.add_argument(
        "--color-match",
        nargs="+",
        type=float,
        default=[None],
        help="engine rows for these colour matches (0-1; default: the engine's default only)",
    )
    parser.add_argument(
        "--smooth",
        type=float,
        help="train with this smooth_probability instead of the preset's (consingan.augment.smooth_region); "
        "use another --out, models are cached by case and preset",
    )
    parser.add_argument(
        "--recolour",
        type=float,
        help="train with this recolour_probability instead of the preset's (augment.recolour_region); "
        "use another --out, models are cached by case and preset",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="training seed (use another --out for another seed)"
    )
    parser.add_argument("--out", default="runs/bench_harmonization")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    configure_threads()
    device = select_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = measure(device)
    print(machine.line())
    cases = [c for c in load_cases() if not args.cases or c.name in args.cases]
    rows, sheet = [], []
    totals: dict[str, list[tuple[float, float, float, float]]] = {}
    for case in cases:
        mask = case.mask > 127
        methods = {
            "composite": case.composite,
            "reinhard": reinhard_transfer(case.composite, mask, case.background),
            "poisson": poisson_blend(case.composite, mask, case.background),
        }
        run = engine_result(
            case,
            out / f"model_{case.name}_{args.preset}",
            args.preset,
            device,
            args.finetune,
            args.color_match,
            args.smooth,
            args.seed,
            args.recolour,
        )
        methods.update(run["results"])
        for name, image in methods.items():
            err = masked_error(image, case.ground_truth, mask)
            detail = detail_score(image, case.ground_truth, mask)
            texture = texture_score(image, case.ground_truth, mask)
            rows.append((case.name, name, err.delta_e, err.rmse, detail, texture))
            totals.setdefault(name, []).append((err.delta_e, err.rmse, detail, texture))
        timing = ", ".join(f"{k} {v:.0f} s = {relative(v, machine)}" for k, v in run["timings"].items())
        done = "; ".join(
            f"{r[1]} dE {r[2]:.1f} detail {r[4]:.2f} texture {r[5]:.2f}" for r in rows if r[0] == case.name
        )
        print(f"{case.name} ({timing}): {done}", flush=True)
        sheet.append(np.concatenate([case.ground_truth, *methods.values()], axis=1))
    print(f"\npreset {args.preset}, fine-tune {args.finetune} iterations, {device.type}\n")
    print("| case | method | Delta E | RMSE | detail | texture |")
    print("|---|---|---|---|---|---|")
    for case_name, name, de, rmse, detail, texture in rows:
        print(f"| {case_name} | {name} | {de:.1f} | {rmse:.3f} | {detail:.2f} | {texture:.2f} |")
    print("\n| method (mean of all cases) | Delta E | RMSE | detail | texture |")
    print("|---|---|---|---|---|")
    for name, values in totals.items():
        de, rmse, detail, texture = np.mean(values, axis=0)
        print(f"| {name} | {de:.1f} | {rmse:.3f} | {detail:.2f} | {texture:.2f} |")
    rows_200 = [
        cv2.resize(s, (s.shape[1] * 200 // s.shape[0], 200), interpolation=cv2.INTER_AREA) for s in sheet
    ]
    width = max(r.shape[1] for r in rows_200)
    grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows_200], axis=0)
    cv2.imwrite(str(out / f"sheet_{args.preset}.png"), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(f"\ncontact sheet (truth, {', '.join(methods)}): {out / f'sheet_{args.preset}.png'}")


if __name__ == "__main__":
    main()
