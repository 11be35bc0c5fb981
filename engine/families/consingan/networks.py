"""ConSinGAN's staged generator (features pass between stages) and its patch discriminator."""

from __future__ import annotations

import copy
import functools

import torch
import torch.nn.functional as F
from torch import nn

from engine.families.consingan.config import ModelConfig
from engine.families.consingan.modes import spec


class InstanceNorm(nn.InstanceNorm2d):
    """`nn.InstanceNorm2d(affine=True)` that stays in channels-last bf16 during training.

    PyTorch's op reshapes to (1, N*C, H, W), which costs two layout copies per call on channels-last maps,
    and autocast runs it in fp32, which costs two dtype copies more: a third of a harmonization training
    iteration on the CPU. Here channels-last maps are normalised in their own layout and dtype, with only
    the per-channel scale in fp32. Other inputs (inference, ONNX export) use the fused op; both give the
    same numbers (tests/test_networks.py).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        # Statistics as products with a vector of ones over the N x HW x C storage (several times faster
        # than a strided reduction); two passes keep the variance accurate in bf16.
        n, c, h, w = x.shape
        pixels = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
        ones = torch.full((n, 1, h * w), 1.0 / (h * w), dtype=x.dtype, device=x.device)
        mean = torch.bmm(ones, pixels)
        centred = pixels - mean
        var = torch.bmm(ones, centred * centred)
        scale = torch.rsqrt(var.float() + self.eps) * self.weight
        # Back to N x C x H x W before the last ops, so that the output is a new channels-last tensor and
        # not a view: the in-place activation that follows would otherwise make autograd hand back a
        # contiguous gradient (CopySlices), and every backward op after it runs on mixed layouts, ~10x slower.
        centred = centred.reshape(n, h, w, c).permute(0, 3, 1, 2)
        scale = scale.to(x.dtype).reshape(n, 1, 1, c).permute(0, 3, 1, 2)
        return centred * scale + self.bias.to(x.dtype).reshape(1, c, 1, 1)


class ConvBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig, norm: bool) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(c_in, c_out, cfg.kernel, stride=1, padding=0))
        if norm:
            # The reference uses BatchNorm2d and never switches the generator to eval mode, so with its
            # batch of one image every forward pass normalises with that image's own statistics. That is
            # exactly instance normalisation, which also keeps batched sampling per-sample and exports to
            # ONNX as one op.
            self.add_module("norm", InstanceNorm(c_out, affine=True))
        self.add_module("act", nn.LeakyReLU(cfg.lrelu_alpha, inplace=True))


def init_weights(module: nn.Module) -> None:
    """The reference's DCGAN-style initialisation."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.InstanceNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


@functools.lru_cache(maxsize=64)  # a training run uses a dozen; a long-running engine sees many sizes
def _interpolation_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """The n_out x n_in matrix of 1-D bicubic (align_corners) interpolation, taken from F.interpolate."""
    eye = torch.eye(n_in, device=device).reshape(n_in, 1, n_in, 1)
    cols = F.interpolate(eye, size=(n_out, 1), mode="bicubic", align_corners=True)
    return cols[:, 0, :, 0].T.contiguous()


def upsample(x: torch.Tensor, size: tuple[int, int] | torch.Size, matmul: bool = True) -> torch.Tensor:
    """Bicubic resize with align_corners, as the reference does.

    Bicubic interpolation is separable and linear, so it is two small matrix products; on the CPU these
    (and their backward) run several times faster than the interpolation kernel, and in bf16 under autocast.
    `matmul=False` keeps the plain operator, which exports to ONNX as a Resize with dynamic sizes.
    """
    size = (int(size[0]), int(size[1]))
    if not matmul:
        return F.interpolate(x, size=size, mode="bicubic", align_corners=True)
    n, c, h, w = x.shape
    rows = _interpolation_matrix(h, size[0], x.device)
    cols = _interpolation_matrix(w, size[1], x.device)
    if not x.is_contiguous(memory_format=torch.channels_last):
        return torch.matmul(torch.matmul(rows, x), cols.T)
    # Channels-last: work on the N x H x W x C storage directly so the result is channels-last too and
    # the next convolution needs no layout copy.
    y = torch.matmul(rows, x.permute(0, 2, 3, 1).reshape(n, h, w * c))
    y = torch.matmul(cols, y.reshape(n * size[0], w, c))
    return y.reshape(n, size[0], size[1], c).permute(0, 3, 1, 2)


class Generator(nn.Module):
    """Stage 0 maps an image-sized input to features; every later stage refines upsampled features.

    inputs[0] is the coarsest stage's input (noise, an image or an augmented image, 3 channels) and
    inputs[k] for k > 0 is the feature-sized noise of stage k. The spatial size of each stage is taken from
    its input, so one network serves any output size.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.border_upsampling = spec(cfg.mode).border_upsampling
        self.matmul_upsampling = True  # switched off for ONNX export (see upsample)
        n = cfg.nfc
        self.head = ConvBlock(cfg.channels, n, cfg, cfg.norm)
        self.body = nn.ModuleList([self._stage(cfg)])
        self.tail = nn.Sequential(nn.Conv2d(n, cfg.channels, cfg.kernel, padding=0), nn.Tanh())
        self.apply(init_weights)

    @staticmethod
    def _stage(cfg: ModelConfig) -> nn.Sequential:
        return nn.Sequential(*[ConvBlock(cfg.nfc, cfg.nfc, cfg, cfg.norm) for _ in range(cfg.num_layers)])

    @property
    def n_stages(self) -> int:
        return len(self.body)

    def grow(self) -> None:
        """Add a stage initialised from the current last one (ConSinGAN's stage initialisation)."""
        self.body.append(copy.deepcopy(self.body[-1]))

    @property
    def block_pad(self) -> int:
        # Each stage's convolutions (padding 0) shrink the map by num_layers px per side.
        return self.cfg.num_layers - 1 if self.border_upsampling else self.cfg.num_layers

    def noise_shape(self, stage: int, height: int, width: int) -> tuple[int, int, int]:
        """Shape (C, H, W) of the input of a stage whose output is height x width."""
        if stage == 0:
            return self.cfg.channels, height, width
        extra = 2 * self.cfg.num_layers if self.border_upsampling else 0
        return self.cfg.nfc, height + extra, width + extra

    def stage_size(self, stage: int, noise: torch.Tensor) -> tuple[int, int]:
        h, w = noise.shape[-2:]
        if stage > 0 and self.border_upsampling:
            return h - 2 * self.cfg.num_layers, w - 2 * self.cfg.num_layers
        return h, w

    def resize(self, x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """Bicubic resize between stages (the ONNX export swaps in a form that suits onnxruntime)."""
        return upsample(x, size, self.matmul_upsampling)

    def run_stages(
        self,
        features: torch.Tensor | None,
        inputs: list[torch.Tensor],
        amps: list[float],
        first: int,
        last: int,
    ) -> torch.Tensor:
        """Features after stage `last`, starting at stage `first` from the features of stage first-1."""
        pad = self.block_pad
        x = features
        for k in range(first, last + 1):
            if k == 0:
                x = self.head(F.pad(inputs[0], (1, 1, 1, 1)))
                if self.border_upsampling:
                    # The reference enlarges the first map by 2 px for more diverse image borders.
                    x = self.resize(x, (x.shape[2] + 2, x.shape[3] + 2))
                x = self.body[0](F.pad(x, (pad, pad, pad, pad)))
                continue
            noise = inputs[k]
            assert x is not None, "a stage above the first needs the features of the stage below"
            up = self.resize(x, self.stage_size(k, noise))
            if self.border_upsampling:
                stage_in = self.resize(x, noise.shape[-2:]) + noise * amps[k]
            else:
                stage_in = F.pad(up + noise * amps[k], (pad, pad, pad, pad))
            x = self.body[k](stage_in) + up
        assert x is not None
        return x

    def to_image(self, features: torch.Tensor) -> torch.Tensor:
        return self.tail(F.pad(features, (1, 1, 1, 1)))

    def forward(self, inputs: list[torch.Tensor], amps: list[float]) -> torch.Tensor:
        return self.to_image(self.run_stages(None, inputs, amps, 0, len(inputs) - 1))


class Discriminator(nn.Module):
    """Markovian patch critic: 5 unpadded 3x3 convolutions, one score per 11x11 patch."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        n = cfg.nfc
        self.head = ConvBlock(cfg.channels, n, cfg, norm=False)
        self.body = nn.Sequential(*[ConvBlock(n, n, cfg, norm=False) for _ in range(cfg.num_layers)])
        self.tail = nn.Conv2d(n, 1, cfg.kernel, padding=0)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(self.head(x)))
