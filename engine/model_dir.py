"""What makes a directory a model, read without torch: its `model.json` (written last) and its checkpoint.

Listing stored models (`engine status` with no daemon, the daemon's registry) needs only this; loading
weights is engine.families.consingan.store's business.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import IncompatibleModelError, ModelNotFoundError

FORMAT = "singan-studio-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
CHECKPOINT_DIR = "checkpoint"
# The image a single-image model learned from (16-bit PNG), for any family that trains on one: what a
# new training "on a stored model's image" (the protocol's stored_image) reads.
TRAINING_IMAGE = "training_image.png"


def read_meta(directory: str | Path) -> dict:
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ModelNotFoundError(
            f"{directory} is a file, not a model directory: give the folder that `engine train --out` made"
        )
    if not directory.is_dir():
        raise ModelNotFoundError(
            f"no model at {directory}: train one with `engine train IMAGE --out {directory}`"
        )
    meta_path = directory / MODEL_JSON
    if not meta_path.is_file():
        if (directory / CHECKPOINT_DIR).is_dir():
            raise ModelNotFoundError(
                f"training of {directory} did not finish: "
                f"continue it with `engine train --resume {directory}`"
            )
        raise ModelNotFoundError(f"{directory} is not a model directory (it has no {MODEL_JSON})")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ModelNotFoundError(f"{meta_path} is unreadable ({e}); retrain the model") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IncompatibleModelError(f"{directory} is not a model of this engine")
    version = meta.get("format_version", 0)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise IncompatibleModelError(f"{directory} was written by a newer engine: upgrade to load it")
    if not isinstance(meta.get("model"), dict) or not isinstance(meta.get("info", {}), dict):
        raise ModelNotFoundError(
            f"{meta_path} is damaged (its model description is missing); retrain the model"
        )
    return meta


def training_image_file(image: np.ndarray) -> bytes:
    """A model's training image (H x W x 3 in [0, 1]) as the file every family that learns from one image
    keeps beside its weights: TRAINING_IMAGE, a 16-bit PNG."""
    from engine.imageio import Picture, encode_image

    return encode_image(Path(TRAINING_IMAGE), Picture(image, None, 16))


def load_training_image(directory: str | Path) -> np.ndarray:
    """The training image of a model directory, H x W x 3 float32 in [0, 1]."""
    from engine.imageio import read_image

    path = Path(directory) / TRAINING_IMAGE
    if not path.is_file():
        raise IncompatibleModelError(
            f"{directory} holds no training image (it did not learn from one image): train on an image"
        )
    return read_image(path).rgb


def require_fresh_output(directory: Path) -> None:
    """Refuse to write a model over an existing one (or over anything else)."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise IncompatibleModelError(
            f"{directory} already exists and is not empty: choose another --out or remove it first"
        )
