"""Moving averages of one training run's generator, side by side: constant decays against half-lives that
grow with the iterations so far (StyleGAN2-ADA's ema_rampup; engine.families.sagan.training.moving_average).

    python -m bench.experiments.sagan_ema_ramp --emoji round --every 1000 --set ema=0.9995 \
        --set ema_rampup=0 --out runs/ema-ramp      # the first run in docs/benchmarks.md (fast as it was)
    python -m bench.experiments.sagan_ema_ramp --set r1=1 --averages 0.999:0 0.9998:0.3 --out ...

Trains as `python -m bench sagan --preset fast --measure-every N` does (the same run, step for step: the
first row at each point is the benchmark's, the run's own average), and keeps more averages of the same
generator beside it, each updated after every step as the run's own is (their updates count in the
"training min" column, a little more than a plain run's). At each point it prints the
benchmark's figures for each average's samples of the same seeds and writes their sheets
(--out/samples-ITER-NAME.png, NAME "rampR-D" or the decay D alone): the averages differ only in how they
weigh one trajectory of weights, so their figures compare without the spread between runs.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from torch.optim.swa_utils import AveragedModel

from bench.bench_sagan import Curve, set_experiment
from bench.emoji import SETS
from bench.settings import at_machine_precision, with_sets
from engine.families.sagan.config import PRESETS

AVERAGES = ("0.999:0", "0.9995:0.1", "0.9995:0.2", "0.9998:0.3")  # DECAY:RAMPUP beside the run's own


def average(text: str) -> tuple[float, float]:
    """An argparse type: DECAY:RAMPUP as (decay, rampup)."""
    try:
        decay, rampup = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not DECAY:RAMPUP, e.g. 0.9998:0.3") from None
    return decay, rampup


def named(averages: list[tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """{"0.999": (0.999, 0.0), "ramp0.3-0.9998": (0.9998, 0.3), ...}"""
    return {(f"ramp{r:g}-{d:g}" if r else f"{d:g}"): (d, r) for d, r in averages}


class Averages(Curve):
    def __init__(self, averages: dict[str, tuple[float, float]], trainer: Any, *args: Any) -> None:
        from engine.families.sagan.training import moving_average

        super().__init__(trainer, *args)
        self.averages = {
            name: AveragedModel(trainer.g, multi_avg_fn=moving_average(decay, rampup), use_buffers=True)
            for name, (decay, rampup) in averages.items()
        }

    def __call__(self, progress: Any) -> None:
        from engine.families.sagan.networks import baked
        from engine.families.sagan.sample import TorchRunner
        from engine.families.sagan.training import standing

        for average in self.averages.values():
            average.update_parameters(self.trainer.g)
        if progress.iteration % self.every and progress.iteration != progress.iters:
            return
        super().__call__(progress)
        began = time.perf_counter()
        trainer = self.trainer
        for name, average in self.averages.items():
            sampler = standing(average.module, trainer.config, trainer.device)
            runner = TorchRunner(baked(sampler), trainer.device)
            sheet = self.out / f"samples-{progress.iteration:06d}-{name}.png"
            ours, diversity, memo = self.quality(runner, trainer.config.z_dim, sheet)
            print(f"|   {name} | | {ours:.3f} | {diversity:.2f} | {memo:.2f} |", flush=True)
        self.spent += time.perf_counter() - began


def main() -> None:
    import torch

    from engine.families.sagan.training import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emoji", default="round", choices=sorted(SETS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Config field")
    parser.add_argument("--iters", type=int, default=7000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("runs/ema-ramp"))
    parser.add_argument(
        "--averages", nargs="+", type=average, default=[average(a) for a in AVERAGES], metavar="DECAY:RAMPUP"
    )
    args, quality, train_dir = set_experiment(parser)
    config = with_sets(PRESETS["fast"], args.set, iters=args.iters)
    config = at_machine_precision(config, args.set, config.g_dim)
    averages = named(args.averages)
    print(f"the run's own average: ema={config.ema} ema_rampup={config.ema_rampup}; beside it: {averages}")
    model = args.out / "model"
    shutil.rmtree(model, ignore_errors=True)
    trainer = Trainer(config, train_dir, model, torch.device("cpu"), None, None)
    Averages(averages, trainer, quality, args.every, args.out)
    trainer.run()


if __name__ == "__main__":
    main()
