"""CycleGAN's networks as the reference builds them (junyanz/pytorch-CycleGAN-and-pix2pix,
models/networks.py): a ResNet generator (reflection padding, instance norm, two stride-2 convolutions down
and two transposed convolutions up, `blocks` residual blocks between) and a 70x70 PatchGAN critic (3 layers
at `paper`).

One change for inference at any size: the generator's instance norms can take statistics given from
outside, measured once on the whole picture (`Restyler`), so that the tiles of a large picture are
normalised alike and meet without a seam (engine/families/cyclegan/restyle.py). The exported ONNX graph is
the same `Restyler` (onnx_export.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Norm(nn.Module):
    """Instance norm without affine parameters or running statistics (the reference's `instance` norm).

    In a `Restyler` pass, `given` holds (mean, var, use) for this norm: where `use` is 1 those statistics
    replace the input's own, and the input's own are appended to `measured` either way."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps
        self.given: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.measured: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        if self.measured is not None:
            self.measured.append(torch.cat([mean.flatten(1), var.flatten(1)], dim=1))
        if self.given is not None:
            given_mean, given_var, use = self.given
            mean = torch.where(use > 0.5, given_mean.to(mean.dtype), mean)
            var = torch.where(use > 0.5, given_var.to(var.dtype), var)
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


def _up(channels: int, upsample: str) -> nn.Module:
    """Twice the size, half the channels: the reference's transposed convolution, or ("resize") a bilinear
    resize then a 3x3 convolution. A transposed convolution of stride 2 paints a checkerboard until long
    training evens it out (Odena, Dumoulin and Olah, "Deconvolution and Checkerboard Artifacts", 2016); a
    short CPU run leaves it over the whole picture, where the resize cannot make one."""
    if upsample == "transpose":
        return nn.ConvTranspose2d(channels, channels // 2, 3, stride=2, padding=1, output_padding=1)
    if upsample == "resize":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(channels, channels // 2, 3, padding=1),
        )
    raise ValueError(f"upsample must be transpose or resize, not {upsample!r}")


class Generator(nn.Module):
    """3 x H x W in [-1, 1] -> the same size in [-1, 1]; H and W multiples of 4 (restyle pads to them)."""

    def __init__(self, ngf: int = 64, blocks: int = 9, upsample: str = "transpose") -> None:
        super().__init__()
        self.shape = (ngf, blocks, upsample)  # what builds the same network again
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), Norm(ngf), nn.ReLU(True)]
        for k in range(2):  # down
            c = ngf * 2**k
            layers += [nn.Conv2d(c, c * 2, 3, stride=2, padding=1), Norm(c * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4) for _ in range(blocks)]
        for k in range(2):  # up
            c = ngf * 4 // 2**k
            layers += [_up(c, upsample), Norm(c // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model(x)
        return out

    def norms(self) -> list[Norm]:
        return [m for m in self.modules() if isinstance(m, Norm)]

    @property
    def statistics_size(self) -> int:
        """Numbers in one picture's norm statistics (a mean and a variance per channel of every norm)."""
        return sum(2 * n.channels for n in self.norms())


class Restyler(nn.Module):
    """A generator as inference runs it (eager, and as the exported ONNX graph):

    image (N x 3 x H x W in [-1, 1], any H and W: padded to a multiple of 4 inside, cropped back),
    statistics (1 or N x generator.statistics_size), use_given (1 value: 1 uses `statistics` in every norm,
    0 each picture's own) -> (image out, the statistics the input itself had, N x statistics_size)."""

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        self.generator = generator

    def forward(
        self, image: torch.Tensor, statistics: torch.Tensor, use_given: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = image.shape[2], image.shape[3]
        x = F.pad(image, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4), mode="replicate")
        measured: list[torch.Tensor] = []
        offset = 0
        norms = self.generator.norms()
        for norm in norms:
            c = norm.channels
            mean = statistics[:, offset : offset + c].reshape(-1, c, 1, 1)
            var = statistics[:, offset + c : offset + 2 * c].reshape(-1, c, 1, 1)
            norm.given, norm.measured = (mean, var, use_given), measured
            offset += 2 * c
        try:
            out = self.generator(x)[:, :, :h, :w]
        finally:
            for norm in norms:
                norm.given = norm.measured = None
        return out, torch.cat(measured, dim=1)


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
