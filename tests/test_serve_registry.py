"""The registry's training key: what makes two trainings the same, so a stored model is reused."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from engine.families import consingan
from engine.serve.registry import training_key

PIXELS = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
# The key of this input with the tiny harmonization preset, computed before recolour_probability existed.
KEY_BEFORE_RECOLOUR = "e63a16b0e6abb5e80ee9d74ee832e044b2299fb8a6ddf152a234ef1d2b5f9812"


CPU = torch.device("cpu")


def settings(**options) -> dict:
    """ConSinGAN's resolved settings for the tiny harmonization preset (fp32), as the daemon keys them."""
    given = consingan.Options(preset="tiny", precision="fp32", **options)
    return consingan.FAMILY.resolved("harmonization", given, CPU).settings


def test_models_stored_before_a_new_setting_keep_their_key():
    """Models stored by earlier releases (before recolour_probability, before model families) are found
    again: the key of the same image and settings is unchanged."""
    assert settings()["train"].get("recolour_probability", 0.0) == 0.0
    assert training_key(PIXELS, settings()) == KEY_BEFORE_RECOLOUR


def test_every_setting_that_shapes_the_weights_changes_the_key(monkeypatch):
    from engine.families.consingan import config

    key = training_key(PIXELS, settings())
    assert training_key(PIXELS, settings(seed=1)) != key
    assert training_key(PIXELS, settings(iters=7)) != key
    assert training_key(PIXELS.astype(np.uint16) * 257, settings()) != key  # another dtype
    # A task is part of the key (a generation model of the same image is another model).
    given = consingan.Options(preset="tiny", precision="fp32")
    assert training_key(PIXELS, consingan.FAMILY.resolved("generation", given, CPU).settings) != key
    real = config.training_configs

    def with_train(**changes):
        def configs(*args, **kwargs):
            name, model, train = real(*args, **kwargs)
            return name, model, dataclasses.replace(train, **changes)

        monkeypatch.setattr(config, "training_configs", configs)
        try:
            return training_key(PIXELS, settings())
        finally:
            monkeypatch.setattr(config, "training_configs", real)

    assert with_train(recolour_probability=0.5) != key
    assert with_train(checkpoint_every_s=1.0) == key  # does not change the weights
