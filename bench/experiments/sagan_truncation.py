"""Does sampling nearer the middle of the latent distribution (the "truncation trick") give a set
generator fewer broken samples?

    python -m bench.experiments.sagan_truncation --model runs/s21/seed0/model --out runs/truncation

For a stored set-generator model trained on the face emoji (`python -m bench sagan`), draws the benchmark's
64 fixed latents four ways: as they are; scaled by psi toward the mean, 0 here (as StyleGAN does in its
intermediate latent space); and with every value beyond +-t drawn again until it is within (BigGAN's
truncated normal); and scaled by psi through a copy of the generator whose BatchNorm statistics are measured
again on latents scaled the same way (the stored ones belong to unscaled latents). Prints the benchmark's
quality figures for each (bench/bench_sagan.py) and writes each sheet to --out, for looking.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.bench_sagan import Measure, fixed_latents, model_experiment, split_set
from engine import families
from engine.families.sagan.sample import TorchRunner, generate, to_picture
from engine.families.sagan.training import standing
from engine.image_sets import write_sheet


def truncated(latents: np.ndarray, t: float, seed: int = 123) -> np.ndarray:
    """BigGAN's truncation: each value outside [-t, t] drawn again from the normal until it is inside."""
    z = latents.copy()
    rng = np.random.default_rng(seed)
    outside = np.abs(z) > t
    while outside.any():
        z[outside] = rng.standard_normal(int(outside.sum())).astype(np.float32)
        outside = np.abs(z) > t
    return z


def main() -> None:
    args = model_experiment(__doc__, "runs/truncation")
    _, trained, held = split_set(args.out / "set")
    quality = Measure(trained, held)
    loaded = families.load(args.model, "cpu", "onnxruntime")
    config = loaded.model["config"]
    base = fixed_latents(config.z_dim)
    ways = {"as drawn": (loaded.runner, base)}
    ways.update({f"scaled by {psi}": (loaded.runner, base * psi) for psi in (0.8, 0.6, 0.4)})
    ways.update({f"truncated at {t}": (loaded.runner, truncated(base, t)) for t in (1.0, 0.5)})
    for psi in (0.8, 0.6):
        runner = TorchRunner(
            standing(loaded.model["generator"], config, torch.device("cpu"), scale=psi), "cpu"
        )
        ways[f"scaled by {psi}, statistics measured again"] = (runner, base * psi)
    print(f"floor {quality.floor:.3f}, ceiling {quality.ceiling:.3f}\n")
    print("| latents | SWD to held-out | diversity | memorisation |")
    print("|---|---|---|---|")
    for name, (runner, latents) in ways.items():
        pictures = [to_picture(x) for x in generate(runner, latents.astype(np.float32))]
        write_sheet(args.out / f"samples-{'-'.join(name.replace(',', '').split())}.png", pictures, columns=8)
        ours, diversity, memo = quality.figures(pictures)
        print(f"| {name} | {ours:.3f} | {diversity:.2f} | {memo:.2f} |")


if __name__ == "__main__":
    main()
