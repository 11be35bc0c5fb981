"""The registry's training key: what makes two trainings the same, so a stored model is reused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

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


def test_an_image_with_transparent_pixels_is_keyed_apart_from_models_that_learned_their_colours():
    """Models stored before transparent pixels' colours were filled from the visible ones learned those
    colours (usually black): the same pixels get another key now, so they are trained again, once."""
    import hashlib
    import json

    def earlier_key(pixels, s):  # as training_key was before
        h = hashlib.sha256(json.dumps({**s, "shape": [2, 3, 4], "dtype": "|u1"}, sort_keys=True).encode())
        h.update(pixels.tobytes())
        return h.hexdigest()

    holed = PIXELS.copy()
    holed[0, 0, 3] = 0
    s = settings()
    assert training_key(PIXELS, s) == earlier_key(PIXELS, s)  # every pixel visible: the key it had
    assert training_key(holed, s) != earlier_key(holed, s)
    assert training_key(holed, s) == training_key(holed.copy(), s)  # and still one key for one image
    faint = PIXELS.copy()
    faint[0, 0, 3] = 1  # not fully transparent: nothing filled, the key it had
    assert training_key(faint, s) == earlier_key(faint, s)


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


def test_models_add_stores_a_copy_that_a_running_registry_lists(tmp_path):
    """`engine models add` (a model trained with `engine train --out`) puts a copy into the engine's home;
    a registry already open there (the daemon's) lists it at its next look, and the source is untouched."""
    import json
    import shutil

    from cli_helpers import json_result, run_engine

    from engine.serve.registry import Registry

    source = tmp_path / "studio" / "oil paintings"
    shutil.copytree(Path(__file__).parent / "data" / "model_format_1", source)
    (source / "checkpoint").mkdir()  # an old run's leftovers are not copied
    home = tmp_path / "home"
    running = Registry(home / "models")
    assert running.list() == []
    proc = run_engine("models", "add", source, "--home", home, "--json")
    assert proc.returncode == 0, proc.stderr
    added = json_result(proc)
    assert (added["name"], added["family"], added["task"]) == ("oil paintings", "consingan", "harmonization")
    [info] = running.list()
    assert (info.model_id, info.name) == (added["model_id"], "oil paintings")
    stored = home / "models" / info.model_id
    assert (stored / "model.json").read_bytes() == (source / "model.json").read_bytes()
    assert not (stored / "checkpoint").exists() and (source / "checkpoint").is_dir()
    assert json.loads((stored / "registry.json").read_text())["training_key"] is None  # never reused by key
    assert not [p for p in (home / "models").iterdir() if p.name.startswith(".")]
    # A named copy; and what is not a model is refused in one line, leaving nothing behind
    proc = run_engine("models", "add", source, "--home", home, "--name", "Oil, v2", "--json")
    assert json_result(proc)["name"] == "Oil, v2" and len(running.list()) == 2
    proc = run_engine("models", "add", tmp_path / "studio", "--home", home)
    assert proc.returncode == 2 and "is not a model directory (it has no model.json)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and len(running.list()) == 2
