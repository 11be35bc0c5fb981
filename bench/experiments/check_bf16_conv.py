"""How often this machine's bf16 convolution backward writes non-finite weight gradients.

python -m bench.experiments.check_bf16_conv [--calls 400] [--sizes 41x61 60x89 ...] [--channels 32]

oneDNN 3.12 (PyTorch 2.14.1) on this project's AMX CPU sometimes fills a bf16 weight gradient with NaN
when the backward runs on more than one thread; fp32, a single thread, or ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16
(no AMX, 2.6x slower training) do not. Training therefore recomputes a step whose gradients are not finite
(consingan.training.Trainer._finite_backward). This script measures the fault rate per output size on random
inputs, for the record and for checking a newer PyTorch; it prints a markdown table.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from engine.device import configure_threads

SIZES = ["23x36", "29x45", "39x59", "41x61", "58x87", "113x169", "165x248"]  # stage maps of `fast` runs


def fault_rate(height: int, width: int, channels: int, calls: int, dtype: torch.dtype) -> int:
    """Count the backward calls whose weight gradient has a non-finite value."""
    conv = nn.Conv2d(channels, channels, 3).to(memory_format=torch.channels_last)
    faults = 0
    for _ in range(calls):
        x = torch.randn(1, channels, height + 2, width + 2).contiguous(memory_format=torch.channels_last)
        conv.weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is torch.bfloat16):
            y = conv(x.requires_grad_(True))
        y.backward(torch.randn(y.shape).to(y.dtype).contiguous(memory_format=torch.channels_last))
        faults += not bool(torch.isfinite(conv.weight.grad).all())
    return faults


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=400, help="backward calls per size and precision")
    parser.add_argument("--sizes", nargs="+", default=SIZES, help="output sizes HxW")
    parser.add_argument("--channels", type=int, default=32)
    args = parser.parse_args()
    configure_threads()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.channels} channels")
    print(f"{args.calls} backward calls per cell; cells count those with a non-finite weight gradient\n")
    print("| output | bf16 autocast | fp32 |\n|---|---|---|")
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        bf16 = fault_rate(h, w, args.channels, args.calls, torch.bfloat16)
        fp32 = fault_rate(h, w, args.channels, args.calls, torch.float32)
        print(f"| {h}x{w} | {bf16} | {fp32} |", flush=True)


if __name__ == "__main__":
    main()
