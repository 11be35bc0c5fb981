"""The set generator's networks (SAGAN; layout as in heykeetae/Self-Attention-GAN's sagan_models.py).

Generator: a latent vector through transposed convolutions to a size x size image: 4 x 4 first, then
doubling (BatchNorm, or where the config asks PixelNorm, and ReLU after each), self-attention after the last
two hidden layers (16 and 32 px at 64 px out), tanh out. Critic: stride-2 convolutions (LeakyReLU 0.1) down
to 4 x 4, self-attention after the last two (8 and 4 px), then a 4 x 4 convolution to one score. 128 px adds
one layer to each.
Spectral normalisation, where the config asks for it, is torch's parametrization on every convolution.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

N = TypeVar("N", "Generator", "Critic")


def _sn(module: nn.Module, on: bool) -> nn.Module:
    return spectral_norm(module) if on else module


class SelfAttention(nn.Module):
    """SAGAN's self-attention: x + gamma * (softmax(Q K^T) V) over all positions, queries and keys with C/8
    channels, gamma starting at 0 (the layer begins as the identity)."""

    def __init__(self, channels: int, sn: bool) -> None:
        super().__init__()
        inner = max(1, channels // 8)
        self.query = _sn(nn.Conv2d(channels, inner, 1), sn)
        self.key = _sn(nn.Conv2d(channels, inner, 1), sn)
        self.value = _sn(nn.Conv2d(channels, channels, 1), sn)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # N x 1 head x HW x C/8 (queries, keys) and C (values); the ONNX exporter takes 4-D attention only
        q = self.query(x).flatten(2).transpose(1, 2)[:, None]
        k = self.key(x).flatten(2).transpose(1, 2)[:, None]
        v = self.value(x).flatten(2).transpose(1, 2)[:, None]
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # SAGAN's energies are not scaled
        return x + self.gamma * out[:, 0].transpose(1, 2).reshape(n, c, h, w)


class PixelNorm(nn.Module):
    """Each position's feature vector scaled to unit mean square (Karras et al., ProGAN, 2018): a
    normalisation of one image at a time, where BatchNorm ties the images of a mini-batch together."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


def _norm(kind: str, width: int) -> nn.Module:
    """The generator's normalisation after each hidden layer (config.NORMS)."""
    return nn.BatchNorm2d(width) if kind == "batch" else PixelNorm()


def _levels(size: int) -> int:
    """Hidden resolutions between 4 px and the output (4, 8, 16, 32 for 64 px)."""
    return int(math.log2(size)) - 2


def _up(previous: int, width: int, upsample: str, sn: bool) -> list[nn.Module]:
    """Twice the resolution: a stride-2 4 x 4 transposed convolution (the reference), or nearest-neighbour
    resizing then a 3 x 3 convolution, which cannot draw the transposed convolution's checkerboard (its
    kernel overlaps unevenly; Odena, Dumoulin and Olah, Distill 2016)."""
    if upsample == "resize":
        return [nn.Upsample(scale_factor=2.0, mode="nearest"), _sn(nn.Conv2d(previous, width, 3, 1, 1), sn)]
    return [_sn(nn.ConvTranspose2d(previous, width, 4, 2, 1), sn)]


class Generator(nn.Module):
    def __init__(
        self,
        z_dim: int,
        dim: int,
        size: int,
        channels: int,
        sn: bool = False,
        upsample: str = "transposed",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.z_dim, self.dim, self.size, self.channels = z_dim, dim, size, channels
        self.upsample, self.norm = upsample, norm
        levels = _levels(size)
        widths = [dim * min(8, size // (8 * 2**i)) for i in range(levels)]  # 8d, 4d, 2d, d at 64 px
        layers: list[nn.Module] = []
        previous = z_dim
        for i, width in enumerate(widths):
            # the first layer projects the latent to 4 x 4 (one position in: nothing overlaps)
            first = [_sn(nn.ConvTranspose2d(previous, width, 4), sn)]
            ups = first if i == 0 else _up(previous, width, upsample, sn)
            layers += [*ups, _norm(norm, width), nn.ReLU()]
            if i >= levels - 2:
                layers.append(SelfAttention(width, sn))
            previous = width
        layers += [*_up(previous, channels, upsample, sn), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def blank(self) -> Generator:
        """An untrained generator of the same shape, without spectral normalisation."""
        return Generator(
            self.z_dim, self.dim, self.size, self.channels, sn=False, upsample=self.upsample, norm=self.norm
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """N x z_dim -> N x channels x size x size in [-1, 1]."""
        return self.net(latent[:, :, None, None])


class Critic(nn.Module):
    def __init__(self, dim: int, size: int, channels: int, sn: bool = False) -> None:
        super().__init__()
        self.dim, self.size, self.channels = dim, size, channels
        levels = _levels(size)
        widths = [dim * min(8, 2**i) for i in range(levels)]  # d, 2d, 4d, 8d at 64 px
        layers: list[nn.Module] = []
        previous = channels
        for i, width in enumerate(widths):
            layers += [_sn(nn.Conv2d(previous, width, 4, 2, 1), sn), nn.LeakyReLU(0.1)]
            if i >= levels - 2:
                layers.append(SelfAttention(width, sn))
            previous = width
        layers.append(_sn(nn.Conv2d(previous, 1, 4), sn))
        self.net = nn.Sequential(*layers)
        # The 8 x 8 features (after the first self-attention) that `Decoder` draws the image back from.
        self.features_at = next(i for i, layer in enumerate(layers) if isinstance(layer, SelfAttention))
        self.features_width = widths[levels - 2]

    def blank(self) -> Critic:
        """An untrained critic of the same shape, without spectral normalisation."""
        return Critic(self.dim, self.size, self.channels, sn=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """N scores."""
        return self.net(image).flatten()

    def scores_and_features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """N scores, and the features at 8 x 8 (after that layer's self-attention: the first) that
        `Decoder` draws the image back from."""
        x = features = image
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i == self.features_at:
                features = x
        return x.flatten(), features


class Decoder(nn.Module):
    """Draws an image back from the critic's 8 x 8 features (FastGAN's self-supervised critic: Liu, Zhu,
    Song and Elgammal, ICLR 2021, made for sets of about 100 images): trained with the critic on the real
    images only, so that the critic must keep what the whole image looks like, not only what tells one
    mini-batch from another. Nearest-neighbour doubling, a 3 x 3 convolution, BatchNorm and GLU per level,
    as in FastGAN's decoder, to size // 2 px (32 at 64 px; FastGAN draws 128 px, half its 256 px images, as
    the target of this whole-image decoder; its second decoder, of a quarter of the 16 x 16 features, is not
    here). Training only: the stored critic has no decoder."""

    def __init__(self, in_width: int, dim: int, size: int, channels: int, sn: bool = False) -> None:
        """`in_width`: the critic's features_width; `dim`: its base width (the narrowest level here is
        dim // 2)."""
        super().__init__()
        layers: list[nn.Module] = []
        previous, resolution = in_width, 8
        while resolution < size // 2:
            width = max(dim // 2, previous // 2)
            layers += [
                nn.Upsample(scale_factor=2.0, mode="nearest"),
                _sn(nn.Conv2d(previous, 2 * width, 3, 1, 1, bias=False), sn),
                nn.BatchNorm2d(2 * width),
                nn.GLU(dim=1),
            ]
            previous, resolution = width, resolution * 2
        layers += [_sn(nn.Conv2d(previous, channels, 3, 1, 1), sn), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """N x C x 8 x 8 -> N x channels x size/2 x size/2 in [-1, 1]."""
        return self.net(features)


def baked(network: N, power_iterations: int = 20) -> N:
    """A plain generator or critic (no spectral-norm parametrization) that computes what `network` computes
    in eval mode, each normalised weight written out. The power iteration runs first from the stored
    vectors (a moving average of unit vectors is not one), so each weight is divided by its largest singular
    value. (A copy with its parametrizations removed would not do: a deep copy shares the parametrized
    class, and removing them from the copy breaks the original.)"""
    import copy

    source = copy.deepcopy(network)
    state = {k: v for k, v in source.state_dict().items() if ".parametrizations." not in k}
    with torch.no_grad():
        for name, module in source.named_modules():
            if parametrize.is_parametrized(module, "weight"):
                module.train()
                for _ in range(power_iterations):
                    module.weight  # noqa: B018 - each read in training mode runs one power iteration
                module.eval()
                state[f"{name}.weight"] = module.weight.detach().clone()
    plain = network.blank()
    plain.load_state_dict(state)
    return plain.to(next(network.parameters()).device).eval().requires_grad_(False)
