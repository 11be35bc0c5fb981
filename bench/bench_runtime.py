"""onnxruntime vs PyTorch eager on the CPU for a paper-size generation model, against the FLOP floor.

python -m bench.bench_runtime [--sizes 250 1024 2048] [--repeats 3]
Prints a markdown table: best-of-N seconds per sample for each backend, their ratio, and the floor
(generator FLOPs / measured throughput of a 64-channel 3x3 convolution). Random weights: timing only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.device import configure_threads
from engine.families.consingan.config import preset
from engine.families.consingan.modes import Mode
from engine.families.consingan.onnx_export import export
from engine.families.consingan.pyramid import retarget_shapes, stage_shapes
from engine.families.consingan.store import TrainedModel, build_generator
from engine.runtime import OnnxBackend, SessionCache


def paper_model(name: str = "paper") -> TrainedModel:
    """A preset's generation configuration (paper: nfc 64, 6 stages) on a 188x250 image, random weights."""
    cfg, _ = preset(name, Mode.GENERATION)
    torch.manual_seed(0)
    generator = build_generator(cfg, cfg.n_stages).eval().requires_grad_(False)
    shapes = stage_shapes(188, 250, cfg)
    amps = [1.0] + [0.05] * (cfg.n_stages - 1)
    return TrainedModel(None, cfg, None, generator, [], amps, shapes)  # type: ignore[arg-type]


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up: allocations, onnxruntime's per-shape planning, oneDNN primitive creation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def conv_gflops(repeats: int, size: int = 256) -> float:
    """Best throughput of one 64->64 3x3 convolution (padding 0, as the generator's) in PyTorch."""
    conv = nn.Conv2d(64, 64, 3).eval().requires_grad_(False)
    x = torch.randn(1, 64, size, size)
    seconds = best_of(lambda: conv(x), repeats * 3)
    return 2 * 64 * 64 * 9 * (size - 2) ** 2 / seconds / 1e9


def generator_flops(model: TrainedModel, inputs: list[torch.Tensor]) -> float:
    """Multiply-adds x 2 of every convolution for these inputs (upsampling and pointwise ops excluded)."""
    total = 0.0

    def hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += 2.0 * module.in_channels * module.out_channels * k * output[0, 0].numel() * output.shape[0]

    handles = [m.register_forward_hook(hook) for m in model.generator.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.generator(inputs, model.noise_amps)
    for h in handles:
        h.remove()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[250, 1024, 2048], help="long side in px")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--shape", default="paper", choices=["paper", "fast", "tiny"], help="the model's preset"
    )
    args = parser.parse_args()
    configure_threads()
    model = paper_model(args.shape)
    g = model.generator
    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, Path(tmp) / "paper.onnx")
        backend = OnnxBackend(path, cache=SessionCache())
        gflops = conv_gflops(args.repeats)
        opts = backend.session.get_session_options()
        print(f"threads: torch {torch.get_num_threads()}, onnxruntime {opts.intra_op_num_threads}")
        print(f"64-channel 3x3 convolution: {gflops:.0f} GFLOP/s (PyTorch, best of {args.repeats * 3})\n")
        columns = ["output", "GFLOP", "floor s", "PyTorch eager s", "onnxruntime s", "eager / ort"]
        print("| " + " | ".join([*columns, "ort / floor", "max diff"]) + " |")
        print("|---|---|---|---|---|---|---|---|")
        for side in args.sizes:
            th, tw = model.shapes[-1]
            h, w = round(th * side / tw), side
            shapes = retarget_shapes(model.shapes, h, w)
            rng = torch.Generator().manual_seed(0)
            inputs = [torch.randn(1, *g.noise_shape(k, *s), generator=rng) for k, s in enumerate(shapes)]
            arrays = [x.numpy() for x in inputs]
            flops = generator_flops(model, inputs)
            floor = flops / (gflops * 1e9)

            def eager(inputs: list[torch.Tensor] = inputs) -> torch.Tensor:
                with torch.no_grad():
                    return g(inputs, model.noise_amps)

            t_torch = best_of(eager, args.repeats)
            t_ort = best_of(lambda arrays=arrays: backend.run(arrays), args.repeats)
            diff = float(np.abs(backend.run(arrays) - eager().numpy()).max())
            print(
                f"| {w}x{h} | {flops / 1e9:.0f} | {floor:.2f} | {t_torch:.2f} | {t_ort:.2f} | "
                f"{t_torch / t_ort:.2f}x | {t_ort / floor:.2f}x | {diff:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
