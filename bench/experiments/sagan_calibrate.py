"""Does the critic rank the sampler's images better once it has been trained a little against the sampler
itself? (Discriminator Rejection Sampling's calibration step: Azadi et al., ICLR 2019, go on training the
critic against the final generator before using it to rank.)

    python -m bench.experiments.sagan_calibrate --run runs/cal-run --emoji round --out runs/calibrate

`--run` is a set-generator training directory holding a checkpoint (a run in progress or stopped, or a copy
of a run's checkpoint/ folder in a folder of its own, as a finished run removes its own; the critic training
goes on from its state, the run itself is not touched: the checkpoint is read, never written). The sampler
is what a model saved there would draw with (the moving average, its statistics measured again). After 0,
then each further count of `--steps` critic steps against that sampler (the run's own critic step: hinge
loss, DiffAugment policy, mini-batch, optimizer and precision, the generator fixed; `--lr-scale` scales the
critic's learning rate, the engine's calibration takes 0.1), prints the benchmark's figures of 64 images
each the best of 4 seeds (seeds 4i to 4i+3, as `engine sample --seed 0 --best-of 4` picks them) beside the
64 as drawn, and writes their sheet (--out/best-of-4-STEPS.png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.bench_sagan import fixed_latents, set_experiment
from bench.emoji import SETS
from engine import families
from engine.families.sagan.config import Config
from engine.families.sagan.sample import TorchRunner, critic_scores, generate, to_picture
from engine.image_sets import write_sheet

BEST_OF = 4
SAMPLES = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a training directory with a checkpoint")
    parser.add_argument("--emoji", default="faces", choices=sorted(SETS))
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 400, 1000])
    parser.add_argument("--lr-scale", type=float, default=1.0, help="the critic's learning rate times this")
    parser.add_argument("--out", type=Path, default=Path("runs/calibrate"))
    args, quality, _ = set_experiment(parser)
    from engine.families.sagan.networks import baked
    from engine.families.sagan.training import Trainer

    state = families.read_checkpoint_state(args.run, torch.device("cpu"))
    config = Config.from_dict(state["config"])
    trainer = Trainer(config, Path(state["folder"]), args.out / "unused", torch.device("cpu"), None, None)
    trainer.restore(state)
    sampler = baked(trainer.sampler())
    runner = TorchRunner(sampler, trainer.device)
    images = generate(runner, fixed_latents(config.z_dim, SAMPLES * BEST_OF))
    pictures = [to_picture(x) for x in images]
    print(f"checkpoint at iteration {trainer.iteration}; floor {quality.floor:.3f}")
    drawn = quality.figures(pictures[:SAMPLES])
    print(f"as drawn: SWD {drawn[0]:.3f}, diversity {drawn[1]:.2f}, memorisation {drawn[2]:.2f}")
    print("\n| critic steps against the sampler | SWD as drawn / best of 4 | diversity | memorisation |")
    print("|---|---|---|---|")
    policy, done = config.policy, 0
    for group in trainer.opt_d.param_groups:
        group["lr"] *= args.lr_scale
    for steps in [0, *sorted(args.steps)]:
        for _ in range(steps - done):
            trainer._critic_step(lambda: sampler(trainer._latents()))
        done = steps
        critic = baked(trainer.d)
        score = np.concatenate(
            [critic_scores(critic, images[i : i + BEST_OF], policy) for i in range(0, len(images), BEST_OF)]
        )
        kept = [i + int(np.argmax(score[i : i + BEST_OF])) for i in range(0, len(images), BEST_OF)]
        ours, diversity, memo = quality.figures([pictures[i] for i in kept])
        print(f"| {steps} | {drawn[0]:.3f} / {ours:.3f} | {diversity:.2f} | {memo:.2f} |")
        write_sheet(args.out / f"best-of-4-{steps:04d}.png", [pictures[i] for i in kept], columns=8)


if __name__ == "__main__":
    main()
