"""The machine a benchmark ran on, measured: its convolution rate, printed beside every training time.

The same kind of cloud machine ran one 3x3 convolution at 404 GFLOP/s one day and 217 another (issue 24):
training times alone do not compare across days. Each training benchmark therefore prints the rate of a
fixed convolution (3x3, 64 to 64 channels, 1 x 64 x 256 x 256, forward: the shape of a ConSinGAN stage's
layers at its finest scale) measured just before, and the load average, so a reader can tell a slow
machine or a busy one from slow code; `relative(seconds, rate)` states a time as that convolution's work.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.device import default_precision
from engine.precision import Precision

SHAPE = (1, 64, 256, 256)
FLOPS = 2 * 64 * 64 * 9 * 256 * 256  # multiply-adds x 2 of one forward pass


@dataclass(frozen=True)
class Machine:
    cpu: str
    threads: int
    load: float  # 1-minute load average when measured (0 on systems without one)
    fp32: float  # GFLOP/s
    bf16: float | None  # GFLOP/s; None where bf16 is not measured (no native support on this device)

    def line(self) -> str:
        bf16 = f", {self.bf16:.0f} bf16" if self.bf16 is not None else ""
        return (
            f"machine: {self.cpu}, {self.threads} threads, load {self.load:.1f}; 3x3 64-channel "
            f"convolution at 256x256: {self.fp32:.0f} GFLOP/s fp32{bf16}"
        )


def _rate(device: torch.device, dtype: torch.dtype, seconds: float) -> float:
    x = torch.randn(SHAPE, device=device, dtype=dtype)
    w = torch.randn(64, 64, 3, 3, device=device, dtype=dtype)
    with torch.no_grad():
        F.conv2d(x, w, padding=1)  # warm-up: kernels chosen, memory allocated
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            F.conv2d(x, w, padding=1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            runs += 1
    return FLOPS * runs / (time.perf_counter() - start) / 1e9


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(device: torch.device | None = None, seconds: float = 0.5) -> Machine:
    device = device or torch.device("cpu")
    bf16_native = default_precision(device) is Precision.BF16  # where training would use it
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    fp32 = _rate(device, torch.float32, seconds)
    bf16 = _rate(device, torch.bfloat16, seconds) if bf16_native else None
    return Machine(name, torch.get_num_threads(), load, fp32, bf16)


def relative(seconds: float, machine: Machine) -> str:
    """A time as the work of the yardstick convolution: seconds x its fp32 rate, in TFLOP."""
    return f"{seconds * machine.fp32 / 1000:.1f} TFLOP of the yardstick convolution"
