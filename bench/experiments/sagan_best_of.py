"""What `engine sample --best-of M` gives: the benchmark's figures and sheets of 64 images, each the best
of M seeds by the model's critic, for M = 1 (every seed as drawn: the benchmark's own samples), 2, 4, 8.

    python -m bench.experiments.sagan_best_of --model runs/pick/model --emoji round --out runs/best_of

Runs the engine's own sample operation (onnxruntime) with seed 0 and --n 64, so image i is the best of
seeds i*M to i*M + M-1; measures against the benchmark's split of the set the model was trained on
(`--emoji`, as `python -m bench sagan`; a model does not record its set, so this is not checked) and
writes --out/best-of-M.png. The model needs a critic (trained since 2026-12-07).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.bench_sagan import set_experiment
from bench.emoji import SETS
from engine import families
from engine.image_sets import write_sheet
from engine.operations import OperationInput

SAMPLES = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a stored set-generator model")
    parser.add_argument("--emoji", default="faces", choices=sorted(SETS))
    parser.add_argument("--best-of", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", type=Path, default=Path("runs/best_of"))
    args, quality, _ = set_experiment(parser)
    loaded = families.load(args.model, "cpu", "onnxruntime")
    sample = next(op for op in loaded.family.operations if op.name == "sample")
    print(f"floor {quality.floor:.3f}, ceiling {quality.ceiling:.3f}")
    print("\n| best of | seconds for 64 | SWD to held-out | diversity | memorisation |")
    print("|---|---|---|---|---|")
    for m in args.best_of:
        params = {"n": SAMPLES, "seed": 0, "best_of": m, "width": None, "height": None}
        start = time.perf_counter()
        pictures = sample.run(loaded, OperationInput(params=params)).pictures
        seconds = time.perf_counter() - start
        write_sheet(args.out / f"best-of-{m}.png", pictures, columns=8)
        ours, diversity, memo = quality.figures(pictures)
        print(f"| {m} | {seconds:.1f} | {ours:.3f} | {diversity:.2f} | {memo:.2f} |")


if __name__ == "__main__":
    main()
