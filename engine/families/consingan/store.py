"""Model directories as plain data: config JSON, safetensors weights, fixed noise, images; atomic writes.

A directory is a model once `model.json` exists. It is written last, after every other file is on disk, so
a crash at any moment leaves either a complete model or none (an interrupted training run keeps only its
`checkpoint/`, which `engine train --resume` continues from).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from engine.errors import IncompatibleModelError
from engine.families.consingan import FORMAT_VERSION as FAMILY_FORMAT_VERSION
from engine.families.consingan import NAME as FAMILY_NAME
from engine.families.consingan.config import MAX_SIDE, ModelConfig, TrainConfig
from engine.families.consingan.networks import Discriminator, Generator
from engine.families.consingan.pyramid import Shape
from engine.files import write_files
from engine.imageio import Picture, encode_image
from engine.model_dir import (  # noqa: F401 (load_training_image: for callers of the store)
    CHECKPOINT_DIR,
    FORMAT,
    FORMAT_VERSION,
    MODEL_JSON,
    TRAINING_IMAGE,
    load_training_image,
    read_meta,
    require_fresh_output,
    training_image_file,
)
from engine.weights import DAMAGE, check_finite, damaged, tensor_bytes


@dataclass
class TrainedModel:
    """A loaded model: enough to sample, harmonize, edit, export or fine-tune it."""

    path: Path | None
    model: ModelConfig
    train: TrainConfig
    generator: Generator
    fixed_noise: list[torch.Tensor]  # one per stage, batch of 1
    noise_amps: list[float]
    shapes: list[Shape]  # training pyramid, coarsest first
    info: dict = field(default_factory=dict)  # provenance: parent model, timings, ...

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device


def save_model(
    directory: Path,
    model: TrainedModel,
    discriminator: Discriminator | None,
    training_image: np.ndarray,
    preview: np.ndarray,
) -> Path:
    """Write a complete model, all its files or none; model.json goes last and marks it as a model."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "generator.safetensors": tensor_bytes(model.generator.state_dict()),
        "noise.safetensors": tensor_bytes({f"stage{k}": z for k, z in enumerate(model.fixed_noise)}),
    }
    if discriminator is not None:
        files["discriminator.safetensors"] = tensor_bytes(discriminator.state_dict())
    files[TRAINING_IMAGE] = training_image_file(training_image)
    files["preview.png"] = encode_image(Path("preview.png"), Picture(preview, None, 8))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": FAMILY_NAME,
        "family_format_version": FAMILY_FORMAT_VERSION,
        "model": model.model.to_dict(),
        "training": model.train.to_dict(),
        "stage_shapes": [list(s) for s in model.shapes],
        "noise_amps": [float(a) for a in model.noise_amps],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "info": model.info,
    }
    files[MODEL_JSON] = json.dumps(meta, indent=2).encode()
    write_files(directory, files)
    shutil.rmtree(directory / CHECKPOINT_DIR, ignore_errors=True)
    return directory


def build_generator(model: ModelConfig, n_stages: int) -> Generator:
    generator = Generator(model)
    for _ in range(n_stages - 1):
        generator.grow()
    return generator


def _check_pyramid(model: ModelConfig, shapes: list[Shape], noise_amps: list[float]) -> None:
    """The stored pyramid fits the model config: one shape and one noise amplitude per stage, sides a
    stage can have, amplitudes finite."""
    if len(shapes) != model.n_stages or len(noise_amps) != model.n_stages:
        raise ValueError(
            f"{len(shapes)} stage shapes and {len(noise_amps)} noise amplitudes for {model.n_stages} stages"
        )
    for h, w in shapes:
        if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
            raise ValueError(f"a stage of {w}x{h} px (sides must be 1-{MAX_SIDE})")
    if not all(math.isfinite(a) and 0 <= a <= 1e3 for a in noise_amps):
        raise ValueError(f"noise amplitudes {noise_amps} (must be finite, 0-1000)")


def load_model(directory: str | Path, device: torch.device | str = "cpu") -> TrainedModel:
    directory = Path(directory)
    meta = read_meta(directory)
    try:
        model_cfg = ModelConfig.from_dict(meta["model"])
        shapes = [(int(s[0]), int(s[1])) for s in meta["stage_shapes"]]
        noise_amps = [float(a) for a in meta["noise_amps"]]
        train_cfg = TrainConfig.from_dict(meta.get("training", {}))
        _check_pyramid(model_cfg, shapes, noise_amps)
        generator = build_generator(model_cfg, len(shapes))
    except DAMAGE as e:
        raise damaged(directory, "model.json", e) from e
    try:
        generator.load_state_dict(load_file(directory / "generator.safetensors"))
        noise = load_file(directory / "noise.safetensors")
        stored_noise = [noise[f"stage{k}"] for k in range(len(shapes))]
        check_finite(generator.state_dict(), "generator.safetensors")
        check_finite({f"stage{k}": z for k, z in enumerate(stored_noise)}, "noise.safetensors")
    except DAMAGE as e:
        raise damaged(directory, "weights", e) from e
    # Outside the damage check: a GPU out of memory is a RuntimeError too, and no fault of the model.
    fixed_noise = [n.to(device) for n in stored_noise]
    generator.to(device).eval().requires_grad_(False)
    return TrainedModel(
        path=directory,
        model=model_cfg,
        train=train_cfg,
        generator=generator,
        fixed_noise=fixed_noise,
        noise_amps=noise_amps,
        shapes=shapes,
        info=meta.get("info", {}),
    )


def load_discriminator(directory: Path, model: ModelConfig, device: torch.device | str) -> Discriminator:
    path = Path(directory) / "discriminator.safetensors"
    if not path.is_file():
        raise IncompatibleModelError(f"{directory} has no discriminator weights, so it cannot be fine-tuned")
    discriminator = Discriminator(model)
    try:
        discriminator.load_state_dict(load_file(path))
        check_finite(discriminator.state_dict(), "discriminator.safetensors")
    except DAMAGE as e:
        raise damaged(Path(directory), "discriminator weights", e) from e
    return discriminator.to(device)
