"""Re-style a picture of any size with one of a CycleGAN model's generators, at full resolution.

A picture larger than one tile is done tile by tile, so that the memory the generator needs does not grow
with the picture. Two things keep the tiles from showing:
- every instance norm uses the statistics of the whole picture, measured once on a copy whose long side is
  one tile (networks.Restyler's `statistics`); with each tile's own statistics, tiles of sky and of ground
  would be normalised differently and differ in colour;
- each tile is run with a margin of real picture around it (cut off afterwards), and neighbouring tiles
  overlap by `BLEND` px, where their results are cross-faded.

The generator runs through a `Runner` (runners.py): onnxruntime on the exported graph, or eager torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

MARGIN = 64  # px of context around each tile
BLEND = 32  # px over which neighbouring tiles are cross-faded


class Runner(Protocol):
    def __call__(self, image: np.ndarray, statistics: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """1 x 3 x H x W float32 in [-1, 1] (any H, W) and the norms' statistics to use (None: the
        picture's own) -> (the re-styled image, the statistics the input itself had)."""
        ...


def to_input(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32) * 2 - 1


def _starts(size: int, tile: int) -> list[int]:
    """Tile starts covering 0..size with tiles of `tile` px overlapping by BLEND."""
    if size <= tile:
        return [0]
    step = tile - BLEND
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


def _ramp(length: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    weights = np.ones(length, np.float32)
    fade = np.linspace(0, 1, BLEND + 2, dtype=np.float32)[1:-1]
    if fade_start:
        weights[:BLEND] = fade
    if fade_end:
        weights[-BLEND:] = fade[::-1]
    return weights


def statistics(run: Runner, rgb: np.ndarray, side: int) -> np.ndarray:
    """The norms' statistics of a copy of the picture whose long side is `side` px."""
    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return run(to_input(small), None)[1]


def restyle(
    run: Runner, rgb: np.ndarray, tile: int = 512, on_tile: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """H x W x 3 float in [0, 1] -> the same, re-styled. `on_tile(done, total)` hears of each tile."""
    h, w = rgb.shape[:2]
    if max(h, w) <= tile:
        out = run(to_input(rgb), None)[0]
        return ((out[0].transpose(1, 2, 0) + 1) / 2).clip(0, 1)
    stats = statistics(run, rgb, tile)
    out_sum = np.zeros((h, w, 3), np.float32)
    weight_sum = np.zeros((h, w), np.float32)
    rows, cols = _starts(h, tile), _starts(w, tile)
    total, done = len(rows) * len(cols), 0
    for top in rows:
        for left in cols:
            bottom, right = min(top + tile, h), min(left + tile, w)
            t0, l0 = max(0, top - MARGIN), max(0, left - MARGIN)
            t1, l1 = min(h, bottom + MARGIN), min(w, right + MARGIN)
            y = run(to_input(rgb[t0:t1, l0:l1]), stats)[0]
            core = y[0, :, top - t0 : bottom - t0, left - l0 : right - l0].transpose(1, 2, 0)
            wy = _ramp(bottom - top, top > 0, bottom < h)
            wx = _ramp(right - left, left > 0, right < w)
            weights = wy[:, None] * wx[None, :]
            out_sum[top:bottom, left:right] += core * weights[..., None]
            weight_sum[top:bottom, left:right] += weights
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    return ((out_sum / weight_sum[..., None] + 1) / 2).clip(0, 1)
