"""Which colour change to make before the generator runs: Poisson blending's (the engine's colour match) or
a Reinhard colour transfer, alone or followed by Poisson's.

    python -m bench.experiments.colour_prestep --models runs/bench_harmonization

Uses the `fast` models that `python -m bench.bench_harmonization` trained and cached for the four hard
cases, and swaps the engine's colour-match step (`apply.color_match_offset`) for each variant, scaled
as a whole by the colour match (`bench.experiments.cached_cases.linear`).
Prints Delta E inside the mask against the original painting, per case and as a mean (docs/benchmarks.md).
"""

from __future__ import annotations

import cv2
import numpy as np

from bench.experiments.cached_cases import CASES, cached_cases, color_match_step, linear, parse_args
from bench.quality import masked_error
from engine.families.consingan import apply, blend


def reinhard_offset(rgb: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The change that gives the selection the Lab mean and std of the rest of the image (Reinhard 2001)."""
    if not inside.any() or inside.all():
        return np.zeros_like(rgb, dtype=np.float32)
    lab = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2Lab)
    obj, target = lab[inside], lab[~inside]
    moved = (lab - obj.mean(0)) * (target.std(0) / np.maximum(obj.std(0), 1e-3)) + target.mean(0)
    rgb_moved = np.clip(cv2.cvtColor(moved.astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1)
    return np.where(inside[..., None], rgb_moved - rgb, 0.0).astype(np.float32)


def reinhard_then_poisson(share: float):
    def offset(rgb: np.ndarray, inside: np.ndarray) -> np.ndarray:
        first = share * reinhard_offset(rgb, inside)
        return first + blend.surroundings_offset(np.clip(rgb + first, 0, 1), inside)

    return offset


VARIANTS = {
    "poisson (the engine's until 2026-11-25)": blend.surroundings_offset,
    "reinhard": reinhard_offset,
    "reinhard, then poisson": reinhard_then_poisson(1.0),
    "half reinhard, then poisson": reinhard_then_poisson(0.5),
}


def main() -> None:
    args = parse_args(__doc__)
    errors: dict[tuple[str, float], list[float]] = {}
    for case, model, picture, mask in cached_cases(args.models):
        for name, offset in VARIANTS.items():
            for share in args.color_match:
                with color_match_step(linear(offset)):
                    result = apply.apply_to_selection(model, picture, mask, color_match=share).rgb
                image = np.clip(np.rint(result * 255), 0, 255).astype(np.uint8)
                errors.setdefault((name, share), []).append(
                    masked_error(image, case.ground_truth, mask).delta_e
                )
    print("| pre-step | colour match | " + " | ".join(CASES) + " | mean |")
    print("|---|---|" + "---|" * (len(CASES) + 1))
    for (name, share), values in errors.items():
        cells = " | ".join(f"{v:.1f}" for v in values)
        print(f"| {name} | {share:g} | {cells} | {np.mean(values):.1f} |")


if __name__ == "__main__":
    main()
