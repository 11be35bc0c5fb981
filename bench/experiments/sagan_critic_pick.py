"""Can the set generator's own critic pick its good samples? (Ranking samples by the critic, after Azadi,
Olsson, Darrell, Goodfellow and Odena, "Discriminator Rejection Sampling", ICLR 2019, shown on SAGAN.)

    python -m bench.experiments.sagan_critic_pick --emoji round --iters 13000 --every 2000 --out runs/pick

Trains as `python -m bench sagan --preset fast --measure-every N` does (the same run, step for step: its
figures at each point are the benchmark's), and at each point also draws the samples of seeds 0 to 255,
scores each with the critic (the mean over 8 DiffAugment draws of the run's policy, which is what the critic
was trained on; a copy in eval mode, so training is untouched), and prints the benchmark's figures for the
first 64 as drawn, the best 64 of the first 128 (one kept in two), the best 64 of 256 (one in four) and the
worst 64 of 256, and the best 64 of 256 by the critic's score of the images as they are (it never saw one
without augmentation), in that order. Writes the best and worst 64 of 256 as sheets (--out/best-ITER.png,
--out/worst-ITER.png, in the order of their scores) beside the benchmark's samples-ITER.png.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.bench_sagan import Curve, fixed_latents, set_experiment
from bench.emoji import SETS
from bench.settings import at_machine_precision, with_sets
from engine.families.sagan.config import PRESETS
from engine.families.sagan.sample import critic_scores

DRAWN = 256
KEPT = 64


def scores(critic: Any, images: np.ndarray, policy: tuple[str, ...]) -> np.ndarray:
    """The critic's scores (engine.families.sagan.sample.critic_scores) on a copy in eval mode, where
    spectral norm's power iteration does not move: training is untouched."""
    return critic_scores(copy.deepcopy(critic).float().eval(), images, policy)


class Picking(Curve):
    def __call__(self, progress: Any) -> None:
        from engine.families.sagan.networks import baked
        from engine.families.sagan.sample import TorchRunner, generate, to_picture
        from engine.image_sets import write_sheet

        if progress.iteration % self.every and progress.iteration != progress.iters:
            return
        super().__call__(progress)
        began = time.perf_counter()
        trainer = self.trainer
        runner = TorchRunner(baked(trainer.sampler()), trainer.device)
        images = generate(runner, fixed_latents(trainer.config.z_dim, DRAWN))
        score = scores(trainer.d, images, trainer.config.policy)
        pictures = [to_picture(x) for x in images]
        order = np.argsort(-score)
        plain = np.argsort(-scores(trainer.d, images, ()))
        half = np.argsort(-score[: DRAWN // 2])[:KEPT]
        rows = {
            "first 64": list(range(KEPT)),
            "best 64 of 128": list(half),
            "best 64 of 256": list(order[:KEPT]),
            "worst 64 of 256": list(order[-KEPT:][::-1]),
            "best 64 of 256, scored without augmentation": list(plain[:KEPT]),
        }
        for name, index in rows.items():
            ours, diversity, memo = self.quality.figures([pictures[i] for i in index])
            mean = float(score[index].mean())
            print(f"|   {name} | score {mean:.2f} | {ours:.3f} | {diversity:.2f} | {memo:.2f} |")
        at = f"{progress.iteration:06d}"
        write_sheet(self.out / f"best-{at}.png", [pictures[i] for i in order[:KEPT]], columns=8)
        write_sheet(self.out / f"worst-{at}.png", [pictures[i] for i in order[-KEPT:][::-1]], columns=8)
        np.save(self.out / f"scores-{at}.npy", score)
        self.spent += time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Config field")
    parser.add_argument("--iters", type=int, default=13000)
    parser.add_argument("--every", type=int, default=2000)
    parser.add_argument("--emoji", default="round", choices=sorted(SETS))
    parser.add_argument("--out", type=Path, default=Path("runs/pick"))
    args, quality, train_dir = set_experiment(parser)
    config = with_sets(PRESETS["fast"], args.set, iters=args.iters)
    config = at_machine_precision(config, args.set, config.g_dim)
    from engine.families.sagan.training import Trainer

    model = args.out / "model"
    shutil.rmtree(model, ignore_errors=True)
    trainer = Trainer(config, train_dir, model, torch.device("cpu"), None, None)
    Picking(trainer, quality, args.every, args.out)
    trainer.run()


if __name__ == "__main__":
    main()
