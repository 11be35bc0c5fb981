"""Re-style a picture of any size with one of a CycleGAN model's generators, at full resolution.

A picture larger than one tile is done tile by tile, so that the memory the generator needs does not grow
with the picture. Two things keep the tiles from showing:
- every instance norm uses the statistics of the whole picture, measured once on a copy whose long side is
  one tile (networks.Norm "record", then "fixed"); with each tile's own statistics, tiles of sky and of
  ground would be normalised differently and differ in colour;
- each tile is run with a margin of real picture around it (cut off afterwards), and neighbouring tiles
  overlap by `BLEND` px, where their results are cross-faded.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from engine.families.cyclegan.networks import Generator

MARGIN = 64  # px of context around each tile
BLEND = 32  # px over which neighbouring tiles are cross-faded


def _to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    return (
        torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().unsqueeze(0).to(device) * 2 - 1
    )


def _run(generator: Generator, x: torch.Tensor) -> torch.Tensor:
    """The generator on a 1 x 3 x H x W tensor of any size (padded by reflection to a multiple of 4)."""
    h, w = x.shape[2:]
    ph, pw = -h % 4, -w % 4
    if ph or pw:
        mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    with torch.no_grad():
        return generator(x)[:, :, :h, :w]


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


def record_statistics(generator: Generator, rgb: np.ndarray, side: int, device: torch.device) -> None:
    """Measure the instance norms' statistics on a copy of the picture whose long side is `side` px, and
    hold them (the generator's norms are then in "fixed" mode)."""
    h, w = rgb.shape[:2]
    small = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).unsqueeze(0).float()
    small = F.interpolate(small, scale_factor=side / max(h, w), mode="area") * 2 - 1
    generator.set_norm_mode("record")
    _run(generator, small.to(device))
    generator.set_norm_mode("fixed")


def restyle(
    generator: Generator,
    rgb: np.ndarray,
    device: torch.device | str = "cpu",
    tile: int = 512,
    on_tile: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """H x W x 3 float in [0, 1] -> the same, re-styled. `on_tile(done, total)` hears of each tile."""
    device = torch.device(device)
    h, w = rgb.shape[:2]
    generator.set_norm_mode("record")
    try:
        long_side = max(h, w)
        if long_side <= tile:
            out = _run(generator, _to_tensor(rgb, device))
            return ((out[0].permute(1, 2, 0).cpu().numpy() + 1) / 2).clip(0, 1)
        record_statistics(generator, rgb, tile, device)
        x = _to_tensor(rgb, device)
        out_sum = np.zeros((h, w, 3), np.float32)
        weight_sum = np.zeros((h, w), np.float32)
        rows, cols = _starts(h, tile), _starts(w, tile)
        total, done = len(rows) * len(cols), 0
        for top in rows:
            for left in cols:
                bottom, right = min(top + tile, h), min(left + tile, w)
                t0, l0 = max(0, top - MARGIN), max(0, left - MARGIN)
                t1, l1 = min(h, bottom + MARGIN), min(w, right + MARGIN)
                y = _run(generator, x[:, :, t0:t1, l0:l1])
                core = y[0, :, top - t0 : bottom - t0, left - l0 : right - l0].permute(1, 2, 0).cpu().numpy()
                wy = _ramp(bottom - top, top > 0, bottom < h)
                wx = _ramp(right - left, left > 0, right < w)
                weights = wy[:, None] * wx[None, :]
                out_sum[top:bottom, left:right] += core * weights[..., None]
                weight_sum[top:bottom, left:right] += weights
                done += 1
                if on_tile is not None:
                    on_tile(done, total)
        return ((out_sum / weight_sum[..., None] + 1) / 2).clip(0, 1)
    finally:
        generator.set_norm_mode("sample")
