"""The benchmark suite: the benchmarks behind the docs' tables, one harness.

    python -m bench                        # what each measures, and where its table is
    python -m bench NAME [OPTIONS...]      # run one (its own options: python -m bench NAME --help)
    python -m bench NAME --preset tiny     # its smallest run, seconds: what the test suite runs so none rots

`--preset tiny` stands for the benchmark's own smallest arguments (below); options given after it win.
Each benchmark prints its table on stdout. One-off experiments are in bench/experiments/ (not run here).
"""

from __future__ import annotations

import runpy
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    measures: str
    table: str  # where its figures are
    tiny: tuple[str, ...]  # its arguments at --preset tiny
    expect: str  # a line of its output at --preset tiny begins with this, blanks aside (the smoke test)
    needs: str = ""  # an editor it runs in ("krita", "gimp"); the smoke test runs it where that is installed
    out: bool = False  # takes --out DIR for what it writes besides its table


SUITE = (
    Benchmark(
        "training", "bench.bench_training", "seconds per training iteration at each stage, run estimate",
        "docs/benchmarks.md: Training speed",
        ("--mode", "generation", "--preset", "tiny", "--iters", "1"),
        "| stage | size (h x w) | s / iteration",
    ),
    Benchmark(
        "generation", "bench.bench_generation", "generation quality per image: SWD to the image, diversity",
        "docs/benchmarks.md: Generation quality per image",
        ("--preset", "tiny", "--images", "zebra.png", "--n", "2"), "| zebra.png |", out=True,
    ),
    Benchmark(
        "harmonization", "bench.bench_harmonization",
        "harmonization error on cases with a known answer, against Poisson and Reinhard",
        "docs/benchmarks.md: Harmonization quality", ("--preset", "tiny", "--cases", "scream_easy"),
        "| scream_easy |", out=True,
    ),
    Benchmark(
        "colour", "bench.bench_colour",
        "the colour step of harmonization on issue 25's CIELAB cases, against ring Reinhard and Poisson",
        "docs/benchmarks.md: Colour step against the ring transfer", ("--paintings", "1", "--sets", "lab"),
        "| method (mean of 4)",
    ),
    Benchmark(
        "latency", "bench.bench_latency", "seconds per sample and per harmonization, per backend and size",
        "docs/benchmarks.md: Sampling and harmonization latency",
        # (torch only: the runtime benchmark's smoke run exports and runs the same kind of graph)
        ("--sizes", "64", "--repeats", "1", "--tasks", "sample", "--shape", "tiny", "--backends", "torch"),
        "| sample",
    ),
    Benchmark(
        "sample-memory", "bench.sample_memory", "peak memory of one sample against the engine's bound",
        "docs/benchmarks.md: Memory of one sample",
        ("--presets", "fast", "--sizes", "80x60", "--backends", "torch"), "| fast | torch | 80x60 |",
    ),
    Benchmark(
        "runtime", "bench.bench_runtime", "onnxruntime against PyTorch eager and the FLOP floor",
        "docs/onnx.md", ("--sizes", "64", "--repeats", "1", "--shape", "tiny"), "| 64x",
    ),
    Benchmark(
        "cyclegan", "bench.bench_cyclegan",
        "CycleGAN: s / training iteration, quality against Reinhard and ConSinGAN, s / MP per backend",
        "docs/benchmarks.md: CycleGAN re-styling",
        ("--preset", "tiny", "--photos", "stonehenge.jpg", "--paintings", "scream.jpg", "--held-out",
         "--time-iters", "1", "--sizes", "0.02", "--repeats", "1", "--methods", "reinhard", "cyclegan",
         "consingan"),
        "| stonehenge.jpg |", out=True,
    ),
    Benchmark(
        "sagan", "bench.bench_sagan",
        "set generator on 128 face emoji: s / iteration, SWD to held-out icons, diversity, memorisation",
        "docs/benchmarks.md: Set generator", ("--preset", "tiny", "--time-iters", "1"),
        "| tiny | precision=fp32 |", out=True,
    ),
    Benchmark(
        "singan", "bench.bench_singan",
        "SinGAN super-resolution x4 on the shared images against bicubic and Lanczos: PSNR, sharpness",
        "docs/benchmarks.md: SinGAN super-resolution",
        ("--preset", "tiny", "--images", "zebra.png", "--crop", "200"), "| zebra.png |", out=True,
    ),
    Benchmark(
        "preview", "bench.bench_preview",
        "training-free harmonization: error against Poisson on the synthetic cases, s against size",
        "docs/benchmarks.md: Preview", ("--only", "real"), "| scream | 196x250 |", out=True,
    ),
    Benchmark(
        "protocol", "bench.bench_protocol", "a layer's round trip against memory copies; ping latency",
        "docs/serve.md: Performance", ("--side", "128", "--repeats", "2", "--pings", "50"), "tcp ping",
    ),
    Benchmark(
        "cluster", "bench.bench_cluster",
        "engine batch on Ray (1 and 2 workers) against the local batch: images / s, Ray's cost per image",
        "docs/scale-out.md: Throughput",
        ("--images", "2", "--side", "96", "--preset", "tiny", "--workers", "1"), "| run | cores each |",
    ),
    Benchmark(
        "serve", "bench.bench_serve", "the daemon's protocol overhead, quick requests while training",
        "docs/serve.md: Performance", ("--side", "128", "--repeats", "1", "--pings", "5"),
        "  protocol + queueing overhead",
    ),
    Benchmark(
        "krita-read", "bench.krita_read", "how long the Krita plugin holds Krita's GUI thread, per depth",
        "docs/benchmarks.md: Reading the picture in the plugins",
        ("--size", "64x48", "--depths", "U8", "--repeat", "1"), "U8     8-bit", needs="krita",
    ),
    Benchmark(
        "gimp-read", "bench.gimp_read", "how long the GIMP plug-in takes to read and write, per precision",
        "docs/benchmarks.md: Reading the picture in the plugins",
        ("--size", "64x48", "--precisions", "U8_NON_LINEAR", "--repeat", "1"), "U8_NON_LINEAR     8-bit",
        needs="gimp",
    ),
)  # fmt: skip
BY_NAME = {b.name: b for b in SUITE}


def arguments(bench: Benchmark, given: list[str]) -> list[str]:
    """The benchmark's own arguments: `--preset tiny` replaced by its tiny ones, the rest as given."""
    out: list[str] = []
    i = 0
    while i < len(given):
        if given[i] == "--preset" and i + 1 < len(given) and given[i + 1] == "tiny":
            out = [*bench.tiny, *out]
            i += 2
            continue
        out.append(given[i])
        i += 1
    return out


def listing() -> str:
    width = max(len(b.name) for b in SUITE)
    lines = [f"{b.name:<{width}}  {b.measures}\n{'':<{width}}  table: {b.table}" for b in SUITE]
    return "benchmarks (python -m bench NAME --help):\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(__doc__.strip() + "\n\n" + listing())
        return 0
    bench = BY_NAME.get(argv[0])
    if bench is None:
        print(f"no benchmark {argv[0]!r}: use one of {', '.join(BY_NAME)}", file=sys.stderr)
        return 2
    sys.argv = [bench.module, *arguments(bench, argv[1:])]
    runpy.run_module(bench.module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
