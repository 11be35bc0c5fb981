"""`engine batch`: whole-folder re-styling in-process and through the daemon, resumable, inputs untouched."""

from __future__ import annotations

import hashlib
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from serve_helpers import SIZE, Daemon, layer

from engine.cli import main
from engine.families.consingan import training
from engine.families.consingan.config import preset, with_overrides
from engine.imageio import read_image
from engine.serve.registry import Registry


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, shared_images):
    model_cfg, train_cfg = with_overrides(*preset("tiny", "harmonization"), iters=4)
    image = read_image(shared_images / "harmonization" / "scream.jpg").rgb
    return training.train(
        image, model_cfg, train_cfg, tmp_path_factory.mktemp("batch") / "m", torch.device("cpu")
    )


@pytest.fixture()
def folders(tmp_path, shared_images):
    """Three composites (one of them unreadable) and masks for two of them."""
    h = shared_images / "harmonization"
    inputs, masks = tmp_path / "in", tmp_path / "masks"
    inputs.mkdir()
    masks.mkdir()
    for name in ("scream", "oil_tree"):
        cv2.imwrite(str(inputs / f"{name}.png"), layer(h / f"{name}_naive.jpg"))
    (inputs / "broken.png").write_bytes(b"not an image")
    cv2.imwrite(str(masks / "scream_mask.png"), layer(h / "scream_naive_mask.jpg", cv2.IMREAD_GRAYSCALE))
    return inputs, masks, tmp_path / "out"


def _digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _batch(capsys, *args) -> tuple[int, dict]:
    code = main(["batch", *map(str, args), "--backend", "torch", "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_restyles_a_whole_folder_reports_failures_and_resumes(model_dir, folders, capsys):
    inputs, _, out = folders
    before = _digest(inputs)
    code, result = _batch(capsys, model_dir, "--input", inputs, "--output", out)
    assert code == 1 and not result["ok"]  # broken.png failed ...
    assert "1 of 3 files failed (2 done" in result["error"] and "broken.png" in result["error"]
    assert (result["done"], result["skipped"], result["failed"]) == (2, 0, 1)  # counts a script can read
    assert list(result["failures"]) == ["broken.png"] and "not an image" in result["failures"]["broken.png"]
    assert sorted(p.name for p in out.iterdir()) == ["oil_tree.png", "scream.png"]  # ... the rest went on
    for name in ("oil_tree.png", "scream.png"):
        restyled, original = cv2.imread(str(out / name)), cv2.imread(str(inputs / name))
        assert restyled.shape == original.shape and not np.array_equal(restyled, original)
    assert _digest(inputs) == before  # never writes over its inputs

    done = _digest(out)
    (inputs / "broken.png").unlink()
    code, result = _batch(capsys, model_dir, "--input", inputs, "--output", out)
    assert code == 0 and result == {"ok": True, "output": str(out), "done": 0, "skipped": 2, "failed": 0}
    assert _digest(out) == done  # done outputs were skipped, not redone


def test_with_masks_only_the_masked_files_change_inside_their_masks(model_dir, folders, capsys):
    inputs, masks, out = folders
    code, result = _batch(capsys, model_dir, "--input", inputs, "--output", out, "--masks", masks)
    assert code == 1 and "oil_tree.png: no mask" in result["error"] and "broken.png" in result["error"]
    assert [p.name for p in out.iterdir()] == ["scream.png"]
    restyled, original = cv2.imread(str(out / "scream.png")), cv2.imread(str(inputs / "scream.png"))
    mask = cv2.imread(str(masks / "scream_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    changed = np.abs(restyled.astype(int) - original).sum(axis=2) > 0
    assert changed[mask].mean() > 0.5 and changed.mean() < 1.0


def test_refuses_to_write_into_its_input_folder(model_dir, folders, capsys):
    inputs, _, _ = folders
    before = _digest(inputs)
    code, result = _batch(capsys, model_dir, "--input", inputs, "--output", inputs)
    assert code == 2 and "never writes over its inputs" in result["error"]
    assert _digest(inputs) == before


def test_via_the_daemon_gives_the_same_images(model_dir, folders, tmp_path, capsys):
    inputs, masks, out = folders
    (inputs / "broken.png").unlink()
    home = tmp_path / "home"
    staged = tmp_path / "staged"
    shutil.copytree(model_dir, staged)
    Registry(home / "models").add(staged, model_id="mbatch", name="batch", preset="tiny", training_key=None)
    local = tmp_path / "local"
    assert _batch(capsys, model_dir, "--input", inputs, "--output", local)[0] == 0
    daemon = Daemon(home).wait_ready()
    try:
        code, result = _batch(
            capsys, "mbatch", "--via-daemon", "--home", home, "--input", inputs, "--output", out
        )
    finally:
        daemon.stop()
    assert code == 0 and result["done"] == 2, result
    for name in ("oil_tree.png", "scream.png"):
        assert np.array_equal(cv2.imread(str(out / name)), cv2.imread(str(local / name)))
    assert SIZE == cv2.imread(str(out / "scream.png")).shape[1::-1]


def test_takes_every_image_opencv_reads_and_skips_hidden_files(model_dir, folders, capsys):
    inputs, _, out = folders
    (inputs / "broken.png").unlink()
    scream = cv2.imread(str(inputs / "scream.png"))
    cv2.imwrite(str(inputs / "portable.ppm"), scream)  # not a usual extension, but an image
    cv2.imwrite(str(inputs / "._scream.png"), scream)  # macOS metadata files and other hidden files
    (inputs / "notes.txt").write_text("not an image")
    (inputs / "sub").mkdir()
    code, result = _batch(capsys, model_dir, "--input", inputs, "--output", out)
    assert code == 0 and result["done"] == 3, result
    assert sorted(p.name for p in out.iterdir()) == ["oil_tree.png", "portable.ppm", "scream.png"]
    assert cv2.imread(str(out / "portable.ppm")).shape == scream.shape


def test_via_the_daemon_without_a_running_engine_says_so(model_dir, folders, tmp_path, capsys):
    inputs, _, out = folders
    code, result = _batch(
        capsys, model_dir, "--via-daemon", "--home", tmp_path / "home", "--input", inputs, "--output", out
    )
    assert code != 0 and "engine serve" in result["error"], result
    assert not out.exists()


def _standout(profile: np.ndarray) -> float:
    """How far the most extreme entry of a row or column profile lies from the median of its 4 neighbours."""
    padded = np.pad(profile, 2, mode="edge")
    neighbours = np.stack([padded[k : k + len(profile)] for k in (0, 1, 3, 4)])
    return float(np.abs(profile - np.median(neighbours, axis=0)).max())


@pytest.mark.parametrize("size", [(600, 243), (389, 517), (523, 199), (777, 301)])
def test_whole_images_of_odd_sizes_have_no_stripes(model_dir, tmp_path, shared_images, size, capsys):
    # The bug this guards against: a whole-image mask, resized by a non-integer factor, came back from the
    # feathering as stripes of 0 and 1 (float noise rescaled), so every ~25th row or column stayed as it was.
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    photo = cv2.imread(str(shared_images / "generation" / "stonehenge.jpg"))
    cv2.imwrite(str(inputs / "photo.png"), cv2.resize(photo, size, interpolation=cv2.INTER_AREA))
    assert _batch(capsys, model_dir, "--input", inputs, "--output", out)[0] == 0
    original = cv2.imread(str(inputs / "photo.png")).astype(np.float32)
    change = np.abs(cv2.imread(str(out / "photo.png")).astype(np.float32) - original).mean(axis=2)
    assert change.mean() > 2, "the image was not re-styled"
    for axis in (0, 1):  # column profile, then row profile
        assert _standout(change.mean(axis=axis)) < 0.5 * change.mean(), f"stripes along axis {axis}"
