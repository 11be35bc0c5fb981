"""Differentiable augmentation for the critic (Zhao, Liu, Lin, Zhu and Han, "Differentiable Augmentation
for Data-Efficient GAN Training", NeurIPS 2020; their DiffAugment_pytorch.py): the same random colour,
translation and cut-out applied to real and generated images before the critic sees them, each sample its
own, differentiable, so that a critic trained on 100 images cannot memorise them.

Colour changes the colour channels only (not alpha). The randomness comes from the run's generator, so a
run repeats exactly and resumes where it stopped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(shape: tuple[int, ...], rng: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=rng).to(like.device, like.dtype)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    rgb, rest = x[:, :3], x[:, 3:]
    rgb = rgb + (_rand((n, 1, 1, 1), rng, x) - 0.5)  # brightness
    mean = rgb.mean(dim=1, keepdim=True)
    rgb = (rgb - mean) * (_rand((n, 1, 1, 1), rng, x) * 2) + mean  # saturation
    mean = rgb.mean(dim=(1, 2, 3), keepdim=True)
    rgb = (rgb - mean) * (_rand((n, 1, 1, 1), rng, x) + 0.5) + mean  # contrast
    return torch.cat([rgb, rest], dim=1)


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), generator=rng).to(x.device)
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=rng).to(x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy[None] + ty + 1).clamp(0, h + 1)
    gx = (gx[None] + tx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # zeros outside, as the reference pads
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, gy, gx].permute(0, 3, 1, 2).contiguous()


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=rng).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=rng).to(x.device)
    gy, gx = torch.meshgrid(
        torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij"
    )
    gy = (gy[None] + oy - ch // 2).clamp(0, h - 1)
    gx = (gx[None] + ox - cw // 2).clamp(0, w - 1)
    mask = torch.ones(n, h, w, device=x.device, dtype=x.dtype)
    mask[torch.arange(n, device=x.device)[:, None, None], gy, gx] = 0
    return x * mask[:, None]


OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], rng: torch.Generator) -> torch.Tensor:
    for name in policy:
        x = OPS[name](x, rng)
    return x
