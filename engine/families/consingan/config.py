"""Frozen configs split by concern (model shape vs. training) and the named presets.

The model config is saved with the weights; the training config only shapes how a model is made.
Reference numbers are the defaults of the public ConSinGAN code (tohinz/ConSinGAN, config.py and README).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import BadInputError
from engine.families.consingan.modes import Mode, spec
from engine.family import config_from_dict, config_to_dict
from engine.precision import Precision

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class Preset(str, enum.Enum):
    PAPER = "paper"  # the reference defaults (meant for a GPU)
    FAST = "fast"  # what a laptop CPU should get: chosen by measurement, see docs/benchmarks.md
    TINY = "tiny"  # seconds; for tests


class ConfigValueError(ValueError):
    """A config field outside its sane range (a damaged or hand-edited model.json or checkpoint)."""


def _check(name: str, value: Any, low: float, high: float, kind: type = int) -> None:
    """Refuse a field of the wrong type or outside [low, high]: a model.json with `num_layers` 1000000
    would otherwise build networks until memory runs out."""
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:  # float fields take whole numbers too (JSON writes 1.0 as 1 in other tools)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok:
        raise ConfigValueError(f"{name} is {value!r}, not a {kind.__name__}")
    if not low <= value <= high:
        raise ConfigValueError(f"{name} is {value!r}, outside {low:g}-{high:g}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigValueError(f"{name} is {value!r}, not true or false")


MAX_STAGES = 16
MAX_SIDE = 4096  # a stage's long side; --max-size takes 16-4096


@dataclass(frozen=True)
class ModelConfig:
    """Everything that shapes the networks and the pyramid; saved in model.json."""

    mode: Mode
    n_stages: int = 6
    nfc: int = 64  # feature channels
    num_layers: int = 3  # conv blocks per stage
    kernel: int = 3
    lrelu_alpha: float = 0.05
    norm: bool = False  # the reference's --batch_norm (harmonization, editing)
    min_size: int = 25
    max_size: int = 250
    channels: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.mode, Mode):
            raise ConfigValueError(f"mode is {self.mode!r}, not a Mode")
        _check("n_stages", self.n_stages, 1, MAX_STAGES)
        _check("nfc", self.nfc, 1, 512)
        _check("num_layers", self.num_layers, 1, 16)
        _check("kernel", self.kernel, 1, 9)
        if self.kernel % 2 == 0:
            raise ConfigValueError(f"kernel is {self.kernel}, not an odd number")
        _check("lrelu_alpha", self.lrelu_alpha, 0.0, 1.0, float)
        _check_bool("norm", self.norm)
        _check("min_size", self.min_size, 1, MAX_SIDE)
        _check("max_size", self.max_size, 16, MAX_SIDE)
        _check("channels", self.channels, 3, 3)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        return cls(**config_from_dict(cls, d, {"mode": Mode}))


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained; recorded in model.json for reference but not needed to load it."""

    iters: int = 2000  # per stage
    # Iterations of the first (coarsest) stage when it differs: None = iters. That stage is where a
    # generation model learns the image's layout, and it is cheap, so `fast` does not cut it.
    coarse_iters: int | None = None
    lr_g: float = 5e-4
    lr_d: float = 5e-4
    beta1: float = 0.5
    lr_decay: float = 0.1  # the reference's gamma
    decay_at: float = 0.8  # fraction of a stage's iterations after which the LR decays
    lr_scale: float = 0.1  # LR factor per stage below the newest one
    train_depth: int = 3  # stages trained concurrently
    d_steps: int = 3
    g_steps: int = 3
    lambda_grad: float = 0.1  # WGAN-GP weight
    # Critic steps per gradient penalty: 1 = every step (the reference); k = every k-th step, weighted k
    # (the lazy regularisation of StyleGAN2, Karras et al. 2020), which saves the penalty's double backward.
    gp_every: int = 1
    alpha: float = 10.0  # reconstruction loss weight
    noise_amp: float = 0.1  # noise amplitude = noise_amp * reconstruction RMSE of the stage below
    # Harmonization: chance that a training input has a region's strokes blurred away first
    # (engine.families.consingan.augment.smooth_region; not in the reference, so 0 there).
    smooth_probability: float = 0.0
    # Harmonization: chance that a training input has a region's colours changed first
    # (augment.recolour_region; not in the reference, and measured no better, so 0 everywhere).
    recolour_probability: float = 0.0
    seed: int = 0
    precision: Precision = Precision.FP32
    channels_last: bool = True
    checkpoint_every_s: float = 120.0

    def __post_init__(self) -> None:
        _check("iters", self.iters, 1, MAX_ITERS)
        if self.coarse_iters is not None:
            _check("coarse_iters", self.coarse_iters, 1, MAX_ITERS)
        fractions = ("lr_g", "lr_d", "beta1", "lr_decay", "decay_at", "lr_scale")
        for name in (*fractions, "smooth_probability", "recolour_probability"):
            _check(name, getattr(self, name), 0.0, 1.0, float)
        _check("train_depth", self.train_depth, 1, MAX_STAGES)
        _check("d_steps", self.d_steps, 1, 100)
        _check("g_steps", self.g_steps, 1, 100)
        _check("gp_every", self.gp_every, 1, 100)
        for name in ("lambda_grad", "alpha"):
            _check(name, getattr(self, name), 0.0, 1e6, float)
        _check("noise_amp", self.noise_amp, 0.0, 10.0, float)
        _check("seed", self.seed, 0, 2**63 - 1)
        if not isinstance(self.precision, Precision):
            raise ConfigValueError(f"precision is {self.precision!r}, not a Precision")
        _check_bool("channels_last", self.channels_last)
        _check("checkpoint_every_s", self.checkpoint_every_s, 0.0, 1e12, float)

    def stage_iters(self, stage: int) -> int:
        return self.coarse_iters if stage == 0 and self.coarse_iters is not None else self.iters

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return cls(**config_from_dict(cls, d, {"precision": Precision}))


def _paper(mode: Mode) -> tuple[ModelConfig, TrainConfig]:
    if mode is Mode.HARMONIZATION:
        # Reference README: --train_stages 3 --min_size 120 --lrelu_alpha 0.3 --niter 1000 --batch_norm
        return (
            ModelConfig(mode, n_stages=3, min_size=120, lrelu_alpha=0.3, norm=True),
            TrainConfig(iters=1000),
        )
    if mode is Mode.EDITING:
        # Reference README: --train_mode editing --batch_norm --niter 1000
        return ModelConfig(mode, norm=True), TrainConfig(iters=1000)
    if mode is Mode.ANIMATION:
        # Reference main_train.py: generation's settings with --min_size 20 for animation
        return ModelConfig(mode, min_size=20), TrainConfig(iters=2000)
    return ModelConfig(mode), TrainConfig(iters=2000)


def _fast(mode: Mode) -> tuple[ModelConfig, TrainConfig]:
    # Half the feature channels (about a quarter of the FLOPs) and fewer iterations; measured in
    # bench/bench_training.py, figures in docs/benchmarks.md. Generation keeps the paper's 2000 iterations
    # at the coarsest stage (about a minute): with 500 there its samples lost the image's layout
    # (docs/benchmarks.md, generation quality).
    # Harmonization takes 2 critic steps an iteration, not 3: a whole run 20% shorter, the error on
    # twelve cases within what another seed moves it (bench/experiments/train_cost.py; docs/benchmarks.md).
    model, train = _paper(mode)
    iters = {Mode.HARMONIZATION: 300, Mode.EDITING: 300}.get(mode, 500)
    coarse = None if spec(mode).conditional else train.iters
    d_steps = 2 if mode is Mode.HARMONIZATION else train.d_steps
    train = dataclasses.replace(train, iters=iters, coarse_iters=coarse, d_steps=d_steps)
    return dataclasses.replace(model, nfc=32), train


def _tiny(mode: Mode) -> tuple[ModelConfig, TrainConfig]:
    model, train = _paper(mode)
    n_stages = 2 if mode is Mode.HARMONIZATION else 3
    min_size = 24 if mode is Mode.HARMONIZATION else 16
    model = dataclasses.replace(model, nfc=8, n_stages=n_stages, min_size=min_size, max_size=48)
    return model, dataclasses.replace(train, iters=12, checkpoint_every_s=1e9)


_PRESETS = {Preset.PAPER: _paper, Preset.FAST: _fast, Preset.TINY: _tiny}


def preset(name: Preset | str, mode: Mode | str) -> tuple[ModelConfig, TrainConfig]:
    return _PRESETS[Preset(name)](Mode(mode))


MAX_ITERS = 1_000_000


def check_iters(iters: int) -> None:
    """Iterations per stage, for training and fine-tuning alike."""
    if not 1 <= iters <= MAX_ITERS:
        raise BadInputError(f"--iters must be between 1 and {MAX_ITERS} (got {iters})")


def with_overrides(
    model: ModelConfig,
    train: TrainConfig,
    *,
    stages: int | None = None,
    iters: int | None = None,
    max_size: int | None = None,
    seed: int | None = None,
    precision: Precision | None = None,
) -> tuple[ModelConfig, TrainConfig]:
    """Apply command-line overrides, refusing values that cannot produce a model."""
    if stages is not None:
        if not 1 <= stages <= 16:
            raise BadInputError(f"--stages must be between 1 and 16 (got {stages})")
        model = dataclasses.replace(model, n_stages=stages)
    if max_size is not None:
        if not 16 <= max_size <= 4096:
            raise BadInputError(f"--max-size must be between 16 and 4096 px (got {max_size})")
        model = dataclasses.replace(model, max_size=max_size, min_size=min(model.min_size, max_size))
    if iters is not None:
        check_iters(iters)
        train = dataclasses.replace(train, iters=iters, coarse_iters=None)  # --iters: every stage
    if seed is not None:
        train = dataclasses.replace(train, seed=seed)
    if precision is not None:
        train = dataclasses.replace(train, precision=Precision(precision))
    return model, train


def training_configs(
    mode: str,
    device: torch.device,
    preset_name: str | None = None,
    precision: Precision | str | None = None,
    **overrides: int | None,
) -> tuple[str, ModelConfig, TrainConfig]:
    """The configs a training request gets on this device: `paper` on a GPU and `fast` on the CPU unless a
    preset is named, the hardware's default precision unless one is named, then the user's overrides."""
    from engine.device import default_precision, native_cuda_bf16

    name = preset_name or ("paper" if device.type == "cuda" else "fast")
    model, train = preset(name, mode)
    precision = precision or default_precision(device, model.nfc)
    if Precision(precision) is Precision.BF16 and device.type == "cuda" and not native_cuda_bf16(device):
        log.warning("bf16 on this GPU is emulated and slow (it needs compute capability 8.0): use fp32")
    return name, *with_overrides(model, train, precision=Precision(precision), **overrides)
