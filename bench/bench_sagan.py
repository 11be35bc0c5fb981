"""Set generator: training speed and sample quality on a real icon set, without downloaded weights.

    python -m bench.bench_sagan --preset fast --out runs/bench_sagan            # trains, then measures
    python -m bench.bench_sagan --model runs/bench_sagan/model --out ...        # measures a stored model
    python -m bench.bench_sagan --preset fast --set ema=0 --set augment= --iters 3000 --out ...   # ablation

The set is the emoji font's 128 face emoji (bench/emoji.py; Debian's fonts-noto-color-emoji): every 4th
(sorted by code point) is held out, the other 96 are trained on; with `--emoji round`, those 128 without
the cats, monkeys, people, hands, robot, ninja and clothes (92: 69 trained on, 23 held out). Images are
compared as 64 x 64 RGB over mid grey (their alpha composited). Tables:

- training: seconds per iteration and the run's time;
- quality: the sliced Wasserstein distance of multi-scale 7x7 patches (bench.quality.swd) between 32
  samples and the held-out emoji (32; 23 with `--emoji round`), against the floor (32 training emoji to
  the held-out: real against real) and the ceiling (32 images of smoothed noise); diversity (per-pixel std
  across the samples over the same across the held-out emoji: 1 = as varied as the real set);
  memorisation (each image's RMSE to its nearest training emoji or mirror image, median over the samples
  over the median over the held-out emoji: well below 1 means the samples copy training images).

The sample sheet (--out/samples.png) is for looking: faces with two mouths fail whatever the numbers say.

`--measure-every N` measures the same during training, every N iterations, from the sampler a model saved
there would have (the moving average with its statistics measured again), and writes that point's sheet
(--out/samples-ITER.png): a curve of quality against training time (the time spent measuring left out),
from which the time to a given quality is read.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from bench.emoji import SETS, face_emoji
from bench.machine import measure, relative
from bench.quality import swd
from bench.settings import at_machine_precision, described, with_sets
from engine import families
from engine.device import configure_threads
from engine.families.sagan.config import PRESETS

COMPARED = 32  # images per side of each distance


def split_set(out: Path, emoji: str = "faces") -> tuple[Path, list[Path], list[Path]]:
    """The training folder, its files, and the held-out files."""
    every = face_emoji(out / "all", SETS[emoji])
    train_dir = out / "train"
    shutil.rmtree(train_dir, ignore_errors=True)
    train_dir.mkdir(parents=True)
    held = [p for i, p in enumerate(every) if i % 4 == 3]
    trained = [p for p in every if p not in held]
    for path in trained:
        shutil.copy(path, train_dir / path.name)
    return train_dir, trained, held


def over_grey(rgba: np.ndarray) -> np.ndarray:
    """H x W x 4 uint8 -> 64 x 64 x 3 float in [0, 1] over mid grey."""
    x = rgba.astype(np.float32) / 255
    rgb = x[..., :3] * x[..., 3:] + 0.5 * (1 - x[..., 3:])
    side = max(rgb.shape[:2])
    pad = np.full((side, side, 3), 0.5, np.float32)
    top, left = (side - rgb.shape[0]) // 2, (side - rgb.shape[1]) // 2
    pad[top : top + rgb.shape[0], left : left + rgb.shape[1]] = rgb
    return cv2.resize(pad, (64, 64), interpolation=cv2.INTER_AREA)


def read_rgba(path: Path) -> np.ndarray:
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(bgra, cv2.COLOR_BGRA2RGBA)


def distances(images: list[np.ndarray], references: list[np.ndarray]) -> np.ndarray:
    """N x 2R: each image's RMSE to each reference, then to each reference's mirror image."""
    refs = np.stack([*references, *(r[:, ::-1] for r in references)]).reshape(2 * len(references), -1)
    return np.stack([np.sqrt(((refs - image.reshape(1, -1)) ** 2).mean(axis=1)) for image in images])


def nearest(images: list[np.ndarray], references: list[np.ndarray]) -> np.ndarray:
    """Each image's distance to its nearest reference or mirror image."""
    return distances(images, references).min(axis=1)


def fixed_latents(z_dim: int, n: int = 64) -> np.ndarray:
    """The benchmark's samples: seeds 0 to n - 1 (engine.families.sagan.sample.latent)."""
    from engine.families.sagan.sample import latent

    return np.stack([latent(seed, z_dim) for seed in range(n)])


def spread(images: list[np.ndarray]) -> float:
    return float(np.stack(images).std(axis=0).mean())


class Measure:
    """The quality table's figures for 64 samples of fixed seeds against the held-out and training emoji."""

    def __init__(self, trained: list[Path], held: list[Path]) -> None:
        self.held = [over_grey(read_rgba(p)) for p in held]
        self.train = [over_grey(read_rgba(p)) for p in trained]
        rng = np.random.default_rng(0)
        noise = [
            cv2.GaussianBlur(rng.uniform(0, 1, (64, 64, 3)).astype(np.float32), (0, 0), 2).clip(0, 1)
            for _ in range(COMPARED)
        ]
        # The held-out emoji first: the distance is normalised by the first set's patch statistics.
        self.floor = swd(self.held, self.train[:COMPARED])
        self.ceiling = swd(self.held, noise)
        self.held_nearest = float(np.median(nearest(self.held, self.train)))

    def __call__(self, runner: Any, z_dim: int, sheet: Path) -> tuple[float, float, float]:
        """(SWD to held-out, diversity, memorisation) of the runner's samples; their sheet written."""
        from engine.families.sagan.sample import generate, to_picture
        from engine.image_sets import write_sheet

        pictures = [to_picture(x) for x in generate(runner, fixed_latents(z_dim))]
        write_sheet(sheet, pictures, columns=8)
        return self.figures(pictures)

    def figures(self, pictures: list[Any]) -> tuple[float, float, float]:
        """(SWD to held-out, diversity, memorisation) of sample pictures (at least COMPARED of them)."""
        from engine.imageio import to_array

        samples = [over_grey(to_array(p, "RGBA")) for p in pictures]  # 8-bit, opaque where no alpha
        ours = swd(self.held, samples[:COMPARED])
        diversity = spread(samples) / spread(self.held)
        memo = float(np.median(nearest(samples, self.train)) / self.held_nearest)
        return ours, diversity, memo


def model_experiment(doc: str, out: str) -> argparse.Namespace:
    """The arguments of an experiment on one stored model (bench/experiments/sagan_*.py): --model and
    --out, the output folder made and the threads configured."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a stored set-generator model")
    parser.add_argument("--out", type=Path, default=Path(out))
    args = parser.parse_args()
    configure_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def set_experiment(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, Measure, Path]:
    """An experiment's arguments (its parser given --emoji and --out), the threads configured, the output
    folder made, the benchmark's measure of that set's split and the folder of its training images."""
    args = parser.parse_args()
    configure_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    train_dir, trained, held = split_set(args.out / "set", args.emoji)
    return args, Measure(trained, held), train_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Config field")
    parser.add_argument("--iters", type=int, help="training iterations (default: the preset's)")
    parser.add_argument("--model", type=Path, help="measure this model instead of training one")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_sagan"))
    parser.add_argument(
        "--emoji",
        default="faces",
        choices=sorted(SETS),
        help="faces: the issue's 128 face code points (cats, monkeys, people, hands and clothes among them); "
        "round: those without the other subjects, 92 faces (bench/emoji.py)",
    )
    parser.add_argument("--time-iters", type=int, default=10, help="iterations timed before training")
    parser.add_argument("--time-only", action="store_true", help="only the training speed")
    parser.add_argument(
        "--measure-every", type=int, metavar="N", help="measure quality every N iterations while training"
    )
    args = parser.parse_args()
    trains = args.model is None and not args.time_only
    if args.measure_every is not None and (not trains or args.measure_every < 1):
        parser.error("--measure-every takes a positive count, in a run that trains (no --model, --time-only)")
    configure_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    train_dir, trained, held = split_set(args.out / "set", args.emoji)
    iters = {} if args.iters is None else {"iters": args.iters}
    config = with_sets(PRESETS[args.preset], args.set, **iters)
    config = at_machine_precision(config, args.set, config.g_dim)  # as a user's `engine train` gets
    print(f"set: {len(trained)} emoji ({args.emoji}) trained on, {len(held)} held out (bench/emoji.py)")
    machine = measure()
    print(machine.line())

    if args.model is None:
        from engine.families.sagan.training import Trainer

        trainer = Trainer(config, train_dir, args.out / "timing", torch.device("cpu"), None, None)
        for _ in range(2):  # warm-up
            trainer.step()
        start = time.perf_counter()
        for _ in range(args.time_iters):
            trainer.step()
        spi = (time.perf_counter() - start) / args.time_iters
        changed = described(config, args.set)
        print("\n| preset | settings | s / iteration | run |")
        print("|---|---|---|---|")
        run = f"{config.iters} it., {spi * config.iters / 60:.1f} min"
        print(f"| {args.preset} | {changed} | {spi:.3f} | {run} |")
        if args.time_only:
            return
        quality = Measure(trained, held)
        model = args.out / "model"
        shutil.rmtree(model, ignore_errors=True)
        trainer = Trainer(config, train_dir, model, torch.device("cpu"), None, None)
        curve = Curve(trainer, quality, args.measure_every, args.out) if args.measure_every else None
        start = time.perf_counter()
        trainer.run()
        seconds = time.perf_counter() - start - (curve.spent if curve else 0.0)
        print(
            f"\ntrained in {seconds / 60:.1f} min ({seconds / config.iters:.3f} s / iteration; "
            f"{relative(seconds, machine)})"
        )
    else:
        quality = Measure(trained, held)
        model = args.model

    loaded = families.load(model, "cpu", "onnxruntime")
    ours, diversity, memo = quality(loaded.runner, loaded.model["config"].z_dim, args.out / "samples.png")
    print("\n| model | SWD to held-out | floor (real) | ceiling (noise) | diversity | memorisation |")
    print("|---|---|---|---|---|---|")
    figures = f"{ours:.3f} | {quality.floor:.3f} | {quality.ceiling:.3f} | {diversity:.2f} | {memo:.2f}"
    print(f"| {model} | {figures} |")


class Curve:
    """The trainer's progress function while measuring: every `every` iterations it measures the sampler a
    model saved there would have and prints a row of the curve; `spent` is the seconds spent measuring
    (left out of the training time), and the progress previews are off (their time would count too)."""

    def __init__(self, trainer: Any, quality: Measure, every: int, out: Path) -> None:
        self.trainer, self.quality, self.every, self.out = trainer, quality, every, out
        self.spent = 0.0
        self.start = time.perf_counter()
        trainer.preview = lambda: None
        trainer.progress = self

    def __call__(self, progress: Any) -> None:
        from engine.families.sagan.networks import baked
        from engine.families.sagan.sample import TorchRunner

        if progress.iteration % self.every and progress.iteration != progress.iters:
            return
        began = time.perf_counter()
        trained_s = began - self.start - self.spent
        trainer = self.trainer
        runner = TorchRunner(baked(trainer.sampler()), trainer.device)  # a copy, as a saved model has
        sheet = self.out / f"samples-{progress.iteration:06d}.png"
        ours, diversity, memo = self.quality(runner, trainer.config.z_dim, sheet)
        if not self.spent:
            print("\n| iteration | training min | SWD to held-out | diversity | memorisation |")
            print("|---|---|---|---|---|")
        print(f"| {progress.iteration} | {trained_s / 60:.1f} | {ours:.3f} | {diversity:.2f} | {memo:.2f} |")
        self.spent += time.perf_counter() - began


if __name__ == "__main__":
    main()
