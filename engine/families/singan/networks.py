"""SinGAN's per-stage networks (reference: models.py): a generator that passes an image, not features, and
adds its residual to the image it was given, and a fully convolutional critic of the same shape."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine.families.singan.config import PAD, Config

LAYERS = 5  # convolutions per network (reference: num_layer); PAD = LAYERS x (3 - 1) / 2


def _block(c_in: int, c_out: int) -> nn.Sequential:
    # conv 3x3 unpadded, BatchNorm, LeakyReLU 0.2 (reference: ConvBlock)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True))


def _body(channels: int) -> nn.Sequential:
    # With min_nfc = nfc (the reference's defaults) every hidden layer has the stage's width.
    layers = [_block(3, channels), *(_block(channels, channels) for _ in range(LAYERS - 2))]
    return nn.Sequential(*layers)


def init_weights(module: nn.Module, rng: torch.Generator) -> None:
    """The reference's weights_init: convolution weights N(0, 0.02) and biases as PyTorch makes them
    (uniform within 1/sqrt(fan-in)), BatchNorm scales N(1, 0.02) and shifts 0; all drawn from `rng`."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=rng)
            assert m.bias is not None
            bound = 1 / math.sqrt(m.in_channels * m.kernel_size[0] * m.kernel_size[1])
            nn.init.uniform_(m.bias, -bound, bound, generator=rng)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02, generator=rng)
            nn.init.zeros_(m.bias)


class StageGenerator(nn.Module):
    """out = previous + G(noise + previous): `noise` is the stage's noise already scaled by its amplitude,
    PAD px larger on each side than `previous` (the reference draws it at the padded size and pads the image
    with zeros); the five unpadded convolutions bring the residual back to the image's size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.body = _body(channels)
        self.tail = nn.Sequential(nn.Conv2d(channels, 3, 3), nn.Tanh())

    def forward(self, noise: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        return previous + self.tail(self.body(noise + F.pad(previous, (PAD,) * 4)))


class StageCritic(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = _body(channels)
        self.tail = nn.Conv2d(channels, 1, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(image))


def networks(config: Config, stage: int, rng: torch.Generator) -> tuple[StageGenerator, StageCritic]:
    """A stage's generator and critic, their initial weights drawn from `rng`."""
    width = config.stage_nfc(stage)
    g, d = StageGenerator(width), StageCritic(width)
    init_weights(g, rng)
    init_weights(d, rng)
    return g, d
