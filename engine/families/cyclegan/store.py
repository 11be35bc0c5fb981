"""CycleGAN model directories as plain data: model.json (the config, written last) and one safetensors file
per network; the two generators are what inference needs, the critics are kept for further training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from engine.errors import BadInputError
from engine.families.cyclegan.config import FAMILY_FORMAT_VERSION, NAME, TASK, Config
from engine.families.cyclegan.networks import Critic, Generator
from engine.files import write_files
from engine.model_dir import FORMAT, FORMAT_VERSION, MODEL_JSON
from engine.weights import DAMAGE, check_finite, damaged, tensor_bytes

NETS = {"a2b": "generator_a2b.safetensors", "b2a": "generator_b2a.safetensors"}
CRITICS = {"a": "critic_a.safetensors", "b": "critic_b.safetensors"}


def save_model(
    directory: Path,
    config: Config,
    generators: dict[str, Generator],
    critics: dict[str, Critic],
    info: dict[str, Any],
) -> Path:
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": NAME,
        "family_format_version": FAMILY_FORMAT_VERSION,
        "model": {"task": TASK, **config.to_dict()},
        "info": info,
    }
    files = {NETS[k]: tensor_bytes(g.state_dict()) for k, g in generators.items()}
    files.update({CRITICS[k]: tensor_bytes(c.state_dict()) for k, c in critics.items()})
    files[MODEL_JSON] = json.dumps(meta, indent=2).encode()  # last: its presence means the rest is there
    write_files(directory, files)
    return directory


def load_generators(directory: Path, meta: dict, device: Any) -> tuple[Config, dict[str, Generator]]:
    try:
        config = Config.from_dict(meta["model"])
    except (*DAMAGE, BadInputError) as e:
        raise damaged(directory, "model.json", e) from e
    generators = {}
    for direction, file_name in NETS.items():
        generator = Generator(config.ngf, config.blocks, config.upsample)
        try:
            generator.load_state_dict(load_file(directory / file_name))
            check_finite(generator.state_dict(), file_name)
        except DAMAGE as e:
            raise damaged(directory, file_name, e) from e
        generators[direction] = generator.to(device).eval().requires_grad_(False)
    return config, generators
