"""Where the work runs: device choice and mixed precision, derived once and passed along."""

from __future__ import annotations

import contextlib
import os

import torch

from engine.config import ModelConfig, Precision, TrainConfig, preset, with_overrides
from engine.errors import BadInputError


def select_device(name: str | None = None) -> torch.device:
    """`None` or "auto" picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError("--device cuda was asked for but no CUDA GPU is available: use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise BadInputError(f"unknown device '{name}': use cpu or cuda")
    return torch.device(name)


def configure_threads() -> None:
    """Use every core for intra-op work (torch defaults to physical cores, which can be fewer)."""
    threads = int(os.environ.get("ENGINE_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(threads)


def default_precision(device: torch.device, nfc: int = 64) -> Precision:
    """bf16 autocast where the hardware runs it natively: CUDA, or CPUs with AVX-512 BF16 / AMX.

    It needs no loss scaling, and on this project's 2-core AMX CPU it trains 2-2.5x faster than fp32 at
    the `paper` and `fast` sizes (bench/bench_training.py; docs/benchmarks.md). Networks with fewer than 32
    feature channels (the `tiny` preset) gain nothing from it, so they stay in fp32.
    """
    if nfc < 32:
        return Precision.FP32
    if device.type == "cuda":
        return Precision.BF16 if torch.cuda.is_bf16_supported() else Precision.FP32
    return Precision.BF16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else Precision.FP32


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision is Precision.FP32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def training_configs(
    mode: str,
    device: torch.device,
    preset_name: str | None = None,
    precision: Precision | str | None = None,
    **overrides: int | None,
) -> tuple[str, ModelConfig, TrainConfig]:
    """The configs a training request gets on this device: `paper` on a GPU and `fast` on the CPU unless a
    preset is named, the hardware's default precision unless one is named, then the user's overrides."""
    name = preset_name or ("paper" if device.type == "cuda" else "fast")
    model, train = preset(name, mode)
    precision = precision or default_precision(device, model.nfc)
    return name, *with_overrides(model, train, precision=Precision(precision), **overrides)
