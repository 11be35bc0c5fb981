"""Seconds per training iteration at each stage, and whole-run estimates, for a preset on this machine.

    python -m bench.bench_training --mode generation --preset paper --iters 3
    python -m bench.bench_training --mode harmonization --preset fast --precision bf16

Each stage is timed after a warm-up iteration with the stage built exactly as training builds it (grown
generator, fixed noise, noise amplitudes), so the figures are those of a real run.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from bench.machine import measure, relative
from engine.device import configure_threads, select_device
from engine.families.consingan.config import Precision, preset
from engine.families.consingan.modes import Mode
from engine.families.consingan.training import Trainer
from engine.imageio import read_image

IMAGES = {
    Mode.GENERATION: "generation/angkorwat.jpg",
    Mode.RETARGET: "generation/colusseum.png",
    Mode.HARMONIZATION: "harmonization/scream.jpg",
    Mode.EDITING: "editing/stone.png",
}
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "images"


def time_stages(
    mode: Mode,
    preset_name: str,
    iters: int,
    precision: Precision,
    device: torch.device,
    stages: list[int] | None = None,
) -> list[tuple[int, tuple[int, int], float]]:
    model, train = preset(preset_name, mode)
    train = dataclasses.replace(
        train, iters=iters + 1, coarse_iters=None, precision=precision, checkpoint_every_s=1e9
    )
    image = read_image(SHARED / IMAGES[mode]).rgb
    trainer = Trainer(model, train, image, Path("/nonexistent"), device)
    rows = []
    n = len(trainer.shapes)
    for depth in range(n):
        trainer._prepare_stage(depth)
        if stages is not None and depth not in stages:
            continue
        trainer.iteration = iters  # one warm-up iteration first
        trainer._train_stage(depth)
        trainer.iteration = 0
        _sync(device)
        start = time.perf_counter()
        trainer.train = dataclasses.replace(train, iters=iters)
        trainer._train_stage(depth)
        _sync(device)  # a GPU may still be running the queued work
        spi = (time.perf_counter() - start) / iters
        trainer.train = train
        rows.append((depth, trainer.shapes[depth], spi))
    return rows


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", default="generation", choices=[m.value for m in Mode])
    parser.add_argument("--preset", default="paper", choices=["paper", "fast", "tiny"])
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per stage")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--device", default=None)
    parser.add_argument("--stages", type=int, nargs="*", help="only time these stages (0-based)")
    args = parser.parse_args()
    configure_threads()
    mode, device = Mode(args.mode), select_device(args.device)
    machine = measure(device)
    print(machine.line())
    train_cfg = preset(args.preset, mode)[1]
    rows = time_stages(mode, args.preset, args.iters, Precision(args.precision), device, args.stages)
    print(
        f"{args.mode}, preset {args.preset}, {args.precision}, {device.type}, "
        f"{torch.get_num_threads()} threads"
    )
    print("| stage | size (h x w) | s / iteration | stage time at preset iters |")
    print("|---|---|---|---|")
    for depth, (h, w), spi in rows:
        print(f"| {depth} | {h} x {w} | {spi:.3f} | {spi * train_cfg.stage_iters(depth) / 60:.1f} min |")
    if args.stages is None:
        total = sum(spi * train_cfg.stage_iters(depth) for depth, _, spi in rows)
        coarse = f", {train_cfg.stage_iters(0)} at the first" if train_cfg.coarse_iters else ""
        print(
            f"\nwhole run estimate: {total / 60:.1f} min ({train_cfg.iters} iterations per stage{coarse}; "
            f"{relative(total, machine)})"
        )


if __name__ == "__main__":
    main()
