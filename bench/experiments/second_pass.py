"""Does running the generator a second time, on its own result, pull a paste further into the painting?

    python -m bench.experiments.second_pass --models runs/bench_harmonization

Uses the `fast` models that `python -m bench.bench_harmonization` trained and cached for the four hard
cases. For each colour match, harmonizes the composite once (the engine), then harmonizes that result
again with the same colour match and with none. Prints Delta E inside the mask against the original painting
and the texture score (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

from bench.experiments.cached_cases import CASES, cached_cases, parse_args
from bench.quality import masked_error, texture_score
from engine.families.consingan import apply
from engine.imageio import Picture


def score(rgb: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Delta E inside the mask, and the texture score."""
    image = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    return masked_error(image, truth, mask).delta_e, texture_score(image, truth, mask)


def main() -> None:
    args = parse_args(__doc__)
    scores: dict[str, list[tuple[float, float]]] = {}
    for case, model, picture, mask in cached_cases(args.models):
        for share in args.color_match:
            once = apply.apply_to_selection(model, picture, mask, color_match=share).rgb
            scores.setdefault(f"once, {share:g}", []).append(score(once, case.ground_truth, mask))
            for second in (share, 0.0):
                again = apply.apply_to_selection(model, Picture(once), mask, color_match=second).rgb
                label = f"once at {share:g}, again at {second:g}"
                scores.setdefault(label, []).append(score(again, case.ground_truth, mask))
    print("| passes, colour match | " + " | ".join(CASES) + " | mean |")
    print("|---|" + "---|" * (len(CASES) + 1))
    for name, values in scores.items():
        cells = " | ".join(f"{e:.1f} / {t:.2f}" for e, t in values)
        means = np.mean(values, axis=0)
        print(f"| {name} | {cells} | {means[0]:.1f} / {means[1]:.2f} |")


if __name__ == "__main__":
    main()
