"""Set-generator model directories as plain data: model.json (the config, the image channels, written last),
generator.safetensors, the sampling generator (the moving average where the run kept one, spectral
normalisation written into the weights), and critic.safetensors, the run's critic after its calibration
against that sampler (the same), which ranks samples for `sample --best-of` (models trained before
2026-12-07 have none)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from engine.errors import BadInputError
from engine.families.sagan.config import FAMILY_FORMAT_VERSION, NAME, TASK, Config
from engine.families.sagan.networks import Critic, Generator
from engine.files import write_files
from engine.model_dir import FORMAT, FORMAT_VERSION, MODEL_JSON
from engine.weights import DAMAGE, check_finite, damaged, tensor_bytes

WEIGHTS = "generator.safetensors"
CRITIC = "critic.safetensors"


def save_model(
    directory: Path, config: Config, generator: Generator, critic: Critic, info: dict[str, Any]
) -> Path:
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": NAME,
        "family_format_version": FAMILY_FORMAT_VERSION,
        "model": {"task": TASK, "channels": generator.channels, **config.to_dict()},
        "info": info,
    }
    files = {
        WEIGHTS: tensor_bytes(generator.state_dict()),
        CRITIC: tensor_bytes(critic.state_dict()),
        MODEL_JSON: json.dumps(meta, indent=2).encode(),  # last: its presence means the rest is there
    }
    write_files(directory, files)
    return directory


def load_generator(directory: Path, meta: dict, device: Any) -> tuple[Config, Generator]:
    try:
        config = Config.from_dict(meta["model"])
        channels = int(meta["model"]["channels"])
        if channels not in (3, 4):
            raise ValueError(f"channels {channels}")
    except (*DAMAGE, BadInputError) as e:
        raise damaged(directory, "model.json", e) from e
    generator = Generator(
        config.z_dim, config.g_dim, config.size, channels, upsample=config.upsample, norm=config.g_norm
    )
    try:
        generator.load_state_dict(load_file(directory / WEIGHTS))
        check_finite(generator.state_dict(), WEIGHTS)
    except DAMAGE as e:
        raise damaged(directory, WEIGHTS, e) from e
    return config, generator.to(device).eval().requires_grad_(False)


def load_critic(directory: Path, config: Config, channels: int, device: Any) -> Critic | None:
    """The stored critic, None where the model has none (trained before critics were kept)."""
    if not (directory / CRITIC).exists():
        return None
    critic = Critic(config.d_dim, config.size, channels)
    try:
        critic.load_state_dict(load_file(directory / CRITIC))
        check_finite(critic.state_dict(), CRITIC)
    except DAMAGE as e:
        raise damaged(directory, CRITIC, e) from e
    return critic.to(device).eval().requires_grad_(False)
