"""Where the work runs: device choice and mixed precision, derived once and passed along."""

from __future__ import annotations

import contextlib
import logging
import os

import torch

from engine.errors import BadInputError
from engine.precision import Precision

log = logging.getLogger(__name__)


def select_device(name: str | None = None) -> torch.device:
    """`None` or "auto" picks CUDA when present and usable; asking for CUDA without one is an error, not a
    fallback. "cuda:N" picks GPU N."""
    if name in (None, "auto"):
        if torch.cuda.is_available():
            problem = cuda_problem(0)
            if problem is None:
                return torch.device("cuda")
            log.warning("not using the GPU: %s; running on the CPU", problem)
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise BadInputError(f"unknown device '{name}': use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise BadInputError(f"--device {name} was asked for but no CUDA GPU is available: use --device cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInputError(f"unknown device '{name}': use cpu, cuda or cuda:N") from None
    count = torch.cuda.device_count()
    if (device.index or 0) >= count:
        raise BadInputError(
            f"--device {name}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
        )
    problem = cuda_problem(device.index or 0)
    if problem is not None:
        raise BadInputError(f"--device {name}: {problem}; use --device cpu")
    return device


def cuda_problem(index: int) -> str | None:
    """Why this PyTorch cannot run on GPU `index` (one older than every architecture it was built for), or
    None. Newer GPUs are let through: they run older code (same major version) or its PTX."""
    major, minor = torch.cuda.get_device_capability(index)
    built = []
    for arch in torch.cuda.get_arch_list():  # "sm_86", "compute_90", "sm_90a"
        digits = "".join(c for c in arch.partition("_")[2] if c.isdigit())
        if digits:
            built.append((int(digits[:-1]), int(digits[-1])))
    if built and all(b > (major, minor) for b in built):
        name = torch.cuda.get_device_name(index)
        oldest = "{}.{}".format(*min(built))
        return f"{name} (compute capability {major}.{minor}) is older than this PyTorch supports ({oldest})"
    return None


def configure_threads() -> None:
    """Use every core for intra-op work (torch defaults to physical cores, which can be fewer)."""
    threads = int(os.environ.get("ENGINE_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(threads)


def available_memory() -> int | None:
    """Bytes of memory a job may use on the CPU: what the system has available (Linux's MemAvailable:
    free memory plus caches it can drop), or ENGINE_MEMORY_GB where that is set and lower (a shared
    machine's cap for the engine). None where neither is known."""
    limits = []
    if cap := os.environ.get("ENGINE_MEMORY_GB"):
        try:
            limits.append(int(float(cap) * 1e9))
        except ValueError:
            raise BadInputError(f"ENGINE_MEMORY_GB={cap!r} is not a number of gigabytes (8, 2.5)") from None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
                    break
    except OSError:  # not Linux
        pass
    return min(limits) if limits else None


def default_precision(device: torch.device, nfc: int = 64) -> Precision:
    """bf16 autocast where the hardware runs it natively: CUDA, or CPUs with AVX-512 BF16 / AMX.

    It needs no loss scaling, and on this project's 2-core AMX CPU it trains 2-2.5x faster than fp32 at
    the `paper` and `fast` sizes (bench/bench_training.py; docs/benchmarks.md). Networks with fewer than 32
    feature channels (the `tiny` preset) gain nothing from it, so they stay in fp32.
    """
    if nfc < 32:
        return Precision.FP32
    if device.type == "cuda":
        # Native bf16 from Ampere (compute capability 8) on. Older GPUs only emulate it (and
        # torch.cuda.is_bf16_supported() counts emulation), with no cuDNN convolutions: far slower than fp32.
        return Precision.BF16 if native_cuda_bf16(device) else Precision.FP32
    return Precision.BF16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else Precision.FP32


def native_cuda_bf16(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 8


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision is Precision.FP32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
