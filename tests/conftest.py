"""Shared fixtures: the shared test images and tiny models trained once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = Path(os.environ.get("SHARED_IMAGES", ROOT.parent / "shared" / "images"))

TRAIN_IMAGES = {
    "generation": SHARED_IMAGES / "generation" / "zebra.png",
    "retarget": SHARED_IMAGES / "generation" / "colusseum.png",
    "harmonization": SHARED_IMAGES / "harmonization" / "scream.jpg",
    "editing": SHARED_IMAGES / "editing" / "stone.png",
    "animation": SHARED_IMAGES / "animation" / "lightning1.png",
}


@pytest.fixture(scope="session")
def shared_images() -> Path:
    if not SHARED_IMAGES.is_dir():
        pytest.fail(f"test images not found at {SHARED_IMAGES}: put ../shared beside the checkout")
    return SHARED_IMAGES


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, shared_images) -> dict[str, Path]:
    """One tiny model per mode, trained with the engine's own training code."""
    import torch

    from engine.families.consingan import training
    from engine.families.consingan.config import preset
    from engine.imageio import read_image

    root = tmp_path_factory.mktemp("models")
    models = {}
    for mode, image in TRAIN_IMAGES.items():
        model_cfg, train_cfg = preset("tiny", mode)
        models[mode] = training.train(
            read_image(image).rgb, model_cfg, train_cfg, root / mode, torch.device("cpu")
        )
    return models
