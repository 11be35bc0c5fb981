"""SinGAN model directories as plain data: model.json (config, stage shapes, noise amplitudes; written last),
generators.safetensors (every stage's generator, BatchNorm folded nowhere: eval statistics kept, and
stage 0's fixed reconstruction noise) and training_image.png (the image at the finest stage's size, 16-bit,
as every family that learns from one image keeps it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from engine.errors import BadInputError
from engine.families.singan.apply import Pyramid
from engine.families.singan.config import FAMILY_FORMAT_VERSION, NAME, PAD, Config
from engine.families.singan.networks import StageGenerator
from engine.files import write_files
from engine.model_dir import FORMAT, FORMAT_VERSION, MODEL_JSON, TRAINING_IMAGE, training_image_file
from engine.weights import DAMAGE, check_finite, damaged, tensor_bytes

WEIGHTS = "generators.safetensors"
FIXED_NOISE = "fixed_noise"


def state_tensors(generators: list[StageGenerator], fixed_noise: torch.Tensor) -> dict[str, torch.Tensor]:
    tensors = {
        f"stage{i}.{k}": v.detach().float().cpu()
        for i, g in enumerate(generators)
        for k, v in g.state_dict().items()
    }
    tensors[FIXED_NOISE] = fixed_noise.detach().float().cpu().contiguous()
    return tensors


def save_model(directory: Path, model: Pyramid, training_image: np.ndarray, info: dict[str, Any]) -> Path:
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": NAME,
        "family_format_version": FAMILY_FORMAT_VERSION,
        "model": {"task": model.task.value, **model.config.to_dict()},
        "stage_shapes": [list(s) for s in model.shapes],
        "noise_amps": list(model.amps),
        "info": info,
    }
    files = {
        WEIGHTS: tensor_bytes(state_tensors(model.generators, model.fixed_noise)),
        TRAINING_IMAGE: training_image_file(training_image),
        MODEL_JSON: json.dumps(meta, indent=2).encode(),  # last: its presence means the rest is there
    }
    write_files(directory, files)
    return directory


def load_model(directory: Path, meta: dict, device: Any = "cpu") -> Pyramid:
    try:
        config = Config.from_dict(meta["model"])
        shapes = [(int(h), int(w)) for h, w in meta["stage_shapes"]]
        amps = [float(a) for a in meta["noise_amps"]]
        if not shapes or len(amps) != len(shapes):
            raise ValueError("stage_shapes and noise_amps disagree")
    except (*DAMAGE, BadInputError) as e:
        raise damaged(directory, "model.json", e) from e
    try:
        tensors = load_file(directory / WEIGHTS)
        check_finite(tensors, WEIGHTS)
        generators = []
        for i in range(len(shapes)):
            g = StageGenerator(config.stage_nfc(i))
            prefix = f"stage{i}."
            g.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            generators.append(g.to(device).eval().requires_grad_(False))
        fixed = tensors[FIXED_NOISE]
        if tuple(fixed.shape) != (1, 3, shapes[0][0] + 2 * PAD, shapes[0][1] + 2 * PAD):
            raise ValueError(f"{FIXED_NOISE} has shape {tuple(fixed.shape)}")
    except DAMAGE as e:
        raise damaged(directory, WEIGHTS, e) from e
    return Pyramid(config, shapes, amps, fixed, generators, Path(directory))
