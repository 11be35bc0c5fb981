"""The model-family seam: models of today's format load unchanged, and a family registered from outside
the engine (tests/families/mean_colour.py) is offered by the CLI, `engine capabilities` and `engine batch`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import json_result, run_engine

from engine import families, operations
from engine.families.consingan import apply
from engine.imageio import read_image, read_mask
from engine.operations import OperationInput

DATA = Path(__file__).parent / "data"
ENV = {
    **os.environ,
    "PYTHONUNBUFFERED": "1",
    "ENGINE_FAMILIES": "mean_colour",
    "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parent / "families"), os.environ.get("PYTHONPATH", "")]
    ),
}


def test_a_model_directory_of_format_1_loads_and_harmonizes_as_before(tmp_path, shared_images):
    # Written by the release before model families (no `family` in model.json), kept in the repository.
    model_dir = tmp_path / "model"
    shutil.copytree(DATA / "model_format_1", model_dir)
    assert "family" not in json.loads((model_dir / "model.json").read_text())
    loaded = families.load(model_dir, "cpu", "torch")
    assert (loaded.family.name, loaded.task) == ("consingan", "harmonization")
    h = shared_images / "harmonization"
    picture = read_image(h / "scream_naive.jpg")
    mask = read_mask(h / "scream_naive_mask.jpg", picture.shape)
    op = operations.for_model(loaded, "harmonize")
    now = op.run(loaded, OperationInput(picture, mask, op.check_params({}))).pictures[0]
    assert now.shape == picture.shape
    # What that release made of it (8 bits), with its defaults: colour match 0.5 (the same step then as
    # now), no detail kept.
    result = apply.apply_to_selection(loaded.model, picture, mask, color_match=0.5, keep_detail=0.0)
    expected = read_image(DATA / "model_format_1_harmonized.png").rgb
    difference = np.abs(np.rint(result.rgb * 255) - np.rint(expected * 255))
    assert difference.mean() < 0.05 and difference.max() <= 1, (difference.mean(), difference.max())


def engine(*args) -> subprocess.CompletedProcess:
    return run_engine(*args, env=ENV, timeout=300)


result = json_result


@pytest.fixture(scope="module")
def mean_colour_model(tmp_path_factory, shared_images):
    out = tmp_path_factory.mktemp("family") / "m"
    image = shared_images / "harmonization" / "scream.jpg"
    proc = engine("train", image, "--family", "meancolour", "--mode", "fill", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = result(proc)
    assert summary["family"] == "meancolour" and summary["mode"] == "fill"
    mean = read_image(image).rgb.reshape(-1, 3).mean(axis=0)
    return out, mean


def test_a_family_from_outside_the_engine_is_in_its_capabilities():
    caps = result(engine("capabilities", "--json"))
    names = [f["name"] for f in caps["families"]]
    assert names == ["consingan", "cyclegan", "sagan", "singan", "meancolour"]
    fill = next(op for op in caps["operations"] if op["name"] == "fill")
    assert fill["family"] == "meancolour" and fill["takes_mask"] and fill["returns"] == "layer"
    assert [p["name"] for p in fill["params"]] == ["strength"]
    options = caps["families"][4]["options"]["properties"]
    assert list(options) == ["brightness"]


def test_its_training_and_its_operation_are_commands(mean_colour_model, tmp_path, shared_images):
    model, mean = mean_colour_model
    h = shared_images / "harmonization"
    out = tmp_path / "filled.png"
    proc = engine("fill", model, "--image", h / "scream_naive.jpg", "--mask", h / "scream_naive_mask.jpg",
                  "--out", out, "--strength", "1", "--json")  # fmt: skip
    assert proc.returncode == 0 and result(proc)["file"] == str(out), proc.stderr
    filled, before = read_image(out).rgb, read_image(h / "scream_naive.jpg").rgb
    inside = read_mask(h / "scream_naive_mask.jpg", filled.shape[:2]) > 0
    assert np.abs(filled[inside] - mean).max() < 1 / 255 + 1e-6
    np.testing.assert_array_equal(filled[~inside], before[~inside])
    # Its own options are checked; another family's are refused, and so is another family's operation.
    bad = engine("fill", model, "--image", h / "scream_naive.jpg", "--mask", h / "scream_naive_mask.jpg",
                 "--out", tmp_path / "x.png", "--strength", "3")  # fmt: skip
    assert bad.returncode == 2 and "--strength: must be between 0 and 1" in bad.stderr
    other = engine("harmonize", model, "--image", h / "scream_naive.jpg",
                   "--mask", h / "scream_naive_mask.jpg", "--out", tmp_path / "x.png")  # fmt: skip
    assert other.returncode == 2
    assert "is a Mean colour model for fill, which cannot harmonize; it can: fill" in other.stderr
    image = h / "scream.jpg"
    foreign = engine(
        "train", image, "--family", "meancolour", "--mode", "fill", "--iters", "3", "--out", tmp_path / "n"
    )
    assert foreign.returncode == 2 and "--iters is not a training option of Mean colour" in foreign.stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "n").exists()


def test_batch_applies_its_whole_image_operation(mean_colour_model, tmp_path, shared_images):
    model, mean = mean_colour_model
    inputs = tmp_path / "in"
    inputs.mkdir()
    photo = cv2.imread(str(shared_images / "generation" / "stonehenge.jpg"))
    cv2.imwrite(str(inputs / "a.png"), photo)
    proc = engine(
        "batch", model, "--input", inputs, "--output", tmp_path / "out", "--strength", "0.5", "--json"
    )
    assert proc.returncode == 0 and result(proc)["done"] == 1, proc.stderr
    restyled = read_image(tmp_path / "out" / "a.png").rgb
    expected = 0.5 * mean + 0.5 * read_image(inputs / "a.png").rgb
    assert np.abs(restyled - expected).max() < 1 / 255 + 1e-6
    # ConSinGAN's parameter of the same command is refused for this family's operation, in one line.
    proc = engine("batch", model, "--input", inputs, "--output", tmp_path / "out2", "--color-match", "0.5")
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "--color-match is not an option of meancolour's fill"
    )
    assert not (tmp_path / "out2").exists()


def test_tasks_that_learn_from_folders_take_them_as_flags(tmp_path, shared_images):
    h = shared_images / "harmonization"
    a, b, empty = tmp_path / "a", tmp_path / "b", tmp_path / "empty"
    for folder in (a, b, empty):
        folder.mkdir()
    shutil.copy(h / "scream.jpg", a / "one.jpg")
    for name in ("oil_tree.jpg", "pen_building.jpg"):
        shutil.copy(h / name, b / name)
    pixels = np.concatenate(
        [read_image(b / n).rgb.reshape(-1, 3) for n in ("oil_tree.jpg", "pen_building.jpg")]
    )
    for args in (
        ["--mode", "fill-set", "--images", b],
        ["--mode", "fill-pair", "--domain-a", a, "--domain-b", b],
    ):
        out = tmp_path / f"m-{args[1]}"
        proc = engine("train", "--family", "meancolour", *args, "--out", out, "--json")
        assert proc.returncode == 0, proc.stderr
        stored = json.loads((out / "model.json").read_text())["model"]["mean"]
        np.testing.assert_allclose(stored, pixels.mean(axis=0), atol=1e-5)
    refused = {
        ("--mode", "fill-set"): "learns from a folder of images: give --images DIR",
        ("--mode", "fill-pair", "--domain-a", a): "give --domain-b DIR",
        ("--mode", "fill-set", "--images", empty): f"--images {empty} has no images",
        ("--mode", "fill-set", "--images", a / "one.jpg"): "is not a folder of images",
        ("--mode", "fill-set", "--images", b, "--domain-a", a): "--domain-a is not for it",
    }
    for args, message in refused.items():
        proc = engine("train", "--family", "meancolour", *args, "--out", tmp_path / "no")
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1, (
            proc.stderr
        )
    proc = engine("train", "--images", b, "--out", tmp_path / "no")  # ConSinGAN learns from one image
    assert (
        proc.returncode == 2 and "ConSinGAN --mode generation learns from one image: --images" in proc.stderr
    )
    assert not (tmp_path / "no").exists()


def test_a_cancelled_run_of_another_family_resumes_with_its_own_code(tmp_path, shared_images, monkeypatch):
    import threading

    import torch

    from engine.errors import CancelledError
    from engine.family import TrainData, TrainRun

    monkeypatch.syspath_prepend(str(Path(__file__).parent / "families"))
    monkeypatch.setenv("ENGINE_FAMILIES", "mean_colour")
    monkeypatch.setattr(families, "_families", None)  # the registry reads $ENGINE_FAMILIES again
    family = families.get("meancolour")
    image = read_image(shared_images / "harmonization" / "scream.jpg").rgb
    cancel = threading.Event()
    cancel.set()
    out = tmp_path / "m"
    run = TrainRun("fill", TrainData(image=image), family.options(), out, torch.device("cpu"), cancel=cancel)
    with pytest.raises(CancelledError, match="--resume"):
        family.train(run)
    assert json.loads((out / "checkpoint" / "family.json").read_text()) == {"family": "meancolour"}
    proc = engine("train", "--resume", out, "--json")  # the checkpoint names its family
    assert proc.returncode == 0 and result(proc)["family"] == "meancolour", proc.stderr
    assert not (out / "checkpoint").exists()
    np.testing.assert_allclose(families.load(out).model, image.reshape(-1, 3).mean(axis=0), atol=1e-5)


def test_the_daemon_and_the_plugins_offer_it(tmp_path, shared_images):
    """Through `engine serve`: the ping's capabilities (and the home's capabilities file) give the plugins a
    "Fill selection" entry; the plugin runner's request trains the family on the picture and fills the
    selection; a train request takes a folder on the engine's machine."""
    from serve_helpers import Daemon

    from editor_bridge import frames
    from editor_bridge.plugin_core import Canvas, Editor, find, menu
    from editor_bridge.plugin_runner import Runner, Settings, load_menu
    from editor_bridge.protocol import ApplyRequest, TrainRequest

    w, h = 64, 48
    background = cv2.resize(cv2.imread(str(shared_images / "harmonization" / "scream.jpg")), (w, h))
    bg = np.dstack([cv2.cvtColor(background, cv2.COLOR_BGR2RGB), np.full((h, w), 255, np.uint8)])
    layer = np.zeros((h, w, 4), np.uint8)
    layer[15:25, 20:30] = (250, 10, 10, 255)  # the pasted object
    composite = bg.copy()
    composite[15:25, 20:30] = layer[15:25, 20:30]
    selection = np.zeros((h, w), np.uint8)
    selection[14:26, 19:31] = 255
    canvas = Canvas(
        Editor.GIMP, w, h, composite.tobytes(), layer.tobytes(), bg.tobytes(), selection.tobytes()
    )
    folder = tmp_path / "set"
    folder.mkdir()
    shutil.copy(shared_images / "harmonization" / "oil_tree.jpg", folder)

    daemon = Daemon(
        tmp_path / "home", env={k: ENV[k] for k in ("ENGINE_FAMILIES", "PYTHONPATH")}
    ).wait_ready()
    try:
        with daemon.client() as client:
            fill = find(menu(client.ping().capabilities), "python-fu-singan-fill")
            assert (fill.label, fill.family, fill.layer_name) == ("Fill selection", "meancolour", "Filled")
            entries = load_menu(Settings(home=str(daemon.home)), tmp_path / "no-plugin-here")
            assert "Fill selection" in [op.label for op in entries]  # from the file `engine serve` wrote

            runner = Runner(Settings(home=str(daemon.home), timeout_s=60))
            patch = runner.run(fill, canvas)
            assert (patch.x, patch.y, patch.width, patch.height, patch.name) == (19, 14, 12, 12, "Filled")
            got = np.frombuffer(patch.data, np.uint8).reshape(12, 12, 4)
            mean = bg[..., :3].reshape(-1, 3).astype(np.float64).mean(axis=0)  # of the layers beneath
            assert np.abs(got[..., :3] - mean).max() <= 1 and (got[..., 3] == 255).all()
            runner.run(fill, canvas)  # the same picture again: its model is found, not trained twice
            (model,) = client.list_models(family="meancolour")
            assert (model.task, model.width, model.n_stages) == ("fill", None, None)

            reply = client.run_job(TrainRequest(family="meancolour", task="fill-set", folders=[str(folder)]))
            trained = reply.content.model
            assert (trained.family, trained.task) == ("meancolour", "fill-set")
            buffers: list = []
            request = ApplyRequest(
                operation="fill",
                model_id=trained.model_id,
                image=frames.attach(buffers, composite, "RGBA"),
                mask=frames.attach(buffers, selection, "GRAY"),
                params={"strength": 1.0},
            )
            reply = client.run_job(request, buffers)
            out = reply.image(reply.content.images[0])
            oil = read_image(folder / "oil_tree.jpg").rgb.reshape(-1, 3).mean(axis=0) * 255
            assert np.abs(out[20, 25, :3] - oil).max() <= 1 and (out[0, 0] == composite[0, 0]).all()
            for bad, words in (
                (TrainRequest(family="meancolour", task="fill-set", stored_image=model.model_id),
                 "learns from one folder of images"),
                (TrainRequest(family="meancolour", task="fill", stored_image=model.model_id,
                              options={"iters": 3}), "iters is not a training option of Mean colour"),
                (TrainRequest(family="meancolour", task="fill-set", folders=[str(tmp_path / "nothing")]),
                 "is not a folder of images"),
                (ApplyRequest(operation="harmonize", model_id=trained.model_id), "cannot harmonize"),
                (ApplyRequest(operation="fill", model_id=trained.model_id, params={"strength": 3}),
                 "--strength must be between 0 and 1"),
            ):  # fmt: skip
                with pytest.raises(Exception, match=words):
                    client.call(bad)
            assert client.ping().pid == daemon.proc.pid
    finally:
        daemon.stop()
