"""The registry's training key: what makes two trainings the same, so a stored model is reused."""

from __future__ import annotations

import dataclasses

import numpy as np

from engine.families.consingan.config import preset
from engine.serve.registry import training_key

PIXELS = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
# The key of this input with the tiny harmonization preset, computed before recolour_probability existed.
KEY_BEFORE_RECOLOUR = "e63a16b0e6abb5e80ee9d74ee832e044b2299fb8a6ddf152a234ef1d2b5f9812"


def test_models_stored_before_a_new_setting_keep_their_key():
    model, train = preset("tiny", "harmonization")
    assert train.recolour_probability == 0.0
    assert training_key(PIXELS, model, train) == KEY_BEFORE_RECOLOUR


def test_every_setting_that_shapes_the_weights_changes_the_key():
    model, train = preset("tiny", "harmonization")
    key = training_key(PIXELS, model, train)
    for changed in (
        dataclasses.replace(train, recolour_probability=0.5),
        dataclasses.replace(train, seed=1),
        dataclasses.replace(train, iters=train.iters + 1),
    ):
        assert training_key(PIXELS, model, changed) != key
    assert training_key(PIXELS.astype(np.uint16) * 257, model, train) != key  # another dtype
    assert training_key(PIXELS, model, dataclasses.replace(train, checkpoint_every_s=1.0)) == key
