"""The colour match as the engine makes it (hue, saturation and the surroundings' contrast over the first
half of the scale, lightness over the second) against its earlier versions: the same two halves without
the contrast match, and the linear one (a share of Poisson blending's whole change).

    python -m bench.experiments.colour_split --models runs/bench_harmonization --color-match 0.25 0.5 0.75 1

Uses the `fast` models that `python -m bench.bench_harmonization` trained and cached for the four hard
cases. Prints Delta E and the texture score inside the mask against the original painting, per case and
as a mean (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

from bench.experiments.cached_cases import (
    CASES,
    cached_cases,
    color_match_step,
    linear,
    parse_args,
    without_contrast,
)
from bench.quality import masked_error, texture_score
from engine.families.consingan import apply, blend

VARIANTS = {
    "linear (before 2026-11-25)": linear(blend.surroundings_offset),
    "hue and saturation, then lightness (earlier on 2026-11-25)": without_contrast,
    "hue, saturation and contrast, then lightness (the engine's)": blend.color_match_offset,
}


def main() -> None:
    args = parse_args(__doc__)
    scores: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for case, model, picture, mask in cached_cases(args.models):
        for name, step in VARIANTS.items():
            for share in args.color_match:
                with color_match_step(step):
                    result = apply.apply_to_selection(model, picture, mask, color_match=share).rgb
                image = np.clip(np.rint(result * 255), 0, 255).astype(np.uint8)
                error = masked_error(image, case.ground_truth, mask).delta_e
                texture = texture_score(image, case.ground_truth, mask)
                scores.setdefault((name, share), []).append((error, texture))
    print("Delta E / texture score inside the mask")
    print("| colour match | share | " + " | ".join(CASES) + " | mean |")
    print("|---|---|" + "---|" * (len(CASES) + 1))
    for (name, share), values in scores.items():
        cells = " | ".join(f"{e:.1f} / {t:.2f}" for e, t in values)
        error, texture = np.mean(values, axis=0)
        print(f"| {name} | {share:g} | {cells} | {error:.1f} / {texture:.2f} |")


if __name__ == "__main__":
    main()
