"""The four hard synthetic cases with the `fast` models `python -m bench.bench_harmonization` cached for
them: the shared set-up of the scripts that try a variant of applying a model (colour_prestep, second_pass).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from bench.synthetic_cases import HarmonizationCase, load_cases
from engine.device import configure_threads, select_device
from engine.families.consingan import apply, blend, store
from engine.families.consingan.store import TrainedModel
from engine.imageio import Picture

CASES = ("oil_tree_hard", "pen_building_hard", "scream_hard", "watercolor_tree_hard")


def parse_args(doc: str | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="runs/bench_harmonization", help="bench_harmonization's --out")
    parser.add_argument("--color-match", nargs="+", type=float, default=[0.5, 1.0])
    return parser.parse_args()


def linear(offset: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    """A colour-match step (`apply.color_match_offset`'s signature) that makes `share` times the whole
    change `offset` gives, lightness included: the engine's colour match before it split the change into
    hue and saturation first, lightness second (2026-11-25)."""

    def step(rgb: np.ndarray, inside: np.ndarray, share: float) -> np.ndarray:
        return share * offset(rgb, inside)

    return step


def without_contrast(rgb: np.ndarray, inside: np.ndarray, share: float) -> np.ndarray:
    """The colour match in two halves as it was before it matched the surroundings' contrast (earlier on
    2026-11-25): the engine's with the contrast gain held at 1, so the selection keeps its own light and
    shade as they are."""
    gain = blend.contrast_gain
    blend.contrast_gain = lambda lightness, inside, band=None: 1.0
    try:
        return blend.color_match_offset(rgb, inside, share)
    finally:
        blend.contrast_gain = gain


@contextmanager
def color_match_step(step: Callable[..., np.ndarray]) -> Iterator[None]:
    """Within the block, `apply.apply_to_selection` makes its colour match with `step` (the signature
    of `engine.families.consingan.blend.color_match_offset`) instead of the engine's own."""
    apply.color_match_offset = step
    try:
        yield
    finally:
        apply.color_match_offset = blend.color_match_offset


def cached_cases(models: str | Path) -> Iterator[tuple[HarmonizationCase, TrainedModel, Picture, np.ndarray]]:
    """Each case with its cached model, its composite as a Picture and its mask as 0/1 floats."""
    configure_threads()
    device = select_device(None)
    for case in (c for c in load_cases() if c.name in CASES):
        model = store.load_model(Path(models) / f"model_{case.name}_fast", device)
        picture = Picture(case.composite.astype(np.float32) / 255.0)
        yield case, model, picture, (case.mask > 127).astype(np.float32)
