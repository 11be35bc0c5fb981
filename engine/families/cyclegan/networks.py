"""CycleGAN's networks as the reference builds them (junyanz/pytorch-CycleGAN-and-pix2pix,
models/networks.py): a ResNet generator (reflection padding, instance norm, two stride-2 convolutions down
and two transposed convolutions up, `blocks` residual blocks between) and a 70x70 PatchGAN critic (3 layers
at `paper`).

One change for inference at any size: the generator's instance norms can hold statistics measured once
on the whole picture (`Norm.fixed`), so that tiles of a large picture are normalised alike and meet without
a seam (engine/families/cyclegan/restyle.py).
"""

from __future__ import annotations

import torch
from torch import nn


class Norm(nn.Module):
    """Instance norm without affine parameters or running statistics (the reference's `instance` norm).

    mode "sample": each image's own statistics (training, and a picture small enough for one pass);
    "record": the same, and they are kept in `fixed`; "fixed": the kept statistics are used instead."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.mode = "sample"
        self.fixed: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "fixed" and self.fixed is not None:
            mean, var = self.fixed
        else:
            var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
            if self.mode == "record":
                self.fixed = (mean.detach(), var.detach())
        return (x - mean) * torch.rsqrt(var + self.eps)


class ResnetBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), Norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), Norm(channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """3 x H x W in [-1, 1] -> the same size in [-1, 1]; H and W multiples of 4 (restyle pads to them)."""

    def __init__(self, ngf: int = 64, blocks: int = 9) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), Norm(ngf), nn.ReLU(True)]
        for k in range(2):  # down
            c = ngf * 2**k
            layers += [nn.Conv2d(c, c * 2, 3, stride=2, padding=1), Norm(c * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(blocks)]
        for k in range(2):  # up
            c = ngf * 4 // 2**k
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                Norm(c // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out

    def norms(self) -> list[Norm]:
        return [m for m in self.modules() if isinstance(m, Norm)]

    def set_norm_mode(self, mode: str) -> None:
        for norm in self.norms():
            norm.mode = mode
            if mode == "sample":
                norm.fixed = None


class Critic(nn.Module):
    """PatchGAN: a grid of real/fake scores, each seeing a 70x70 patch at 3 layers."""

    def __init__(self, ndf: int = 64, layers: int = 3) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            seq += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1),
                Norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        seq += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out


def init_weights(net: nn.Module, generator: torch.Generator, gain: float = 0.02) -> None:
    """The reference's `normal` init: conv weights from N(0, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            with torch.no_grad():
                m.weight.normal_(0.0, gain, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
