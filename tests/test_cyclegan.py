"""The CycleGAN family end to end at the tiny preset: training on two small folders, re-styling in both
directions at full resolution (tiled, without seams), batch, resume, and every bad input in one line."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from cli_helpers import ENV, json_result, run_engine, run_engines

from engine import families
from engine.errors import CancelledError
from engine.families.cyclegan import restyle as restyle_module
from engine.family import TrainData, TrainRun
from engine.imageio import read_image

engine, result = run_engine, json_result


@pytest.fixture(scope="module")
def domains(tmp_path_factory, shared_images) -> tuple[Path, Path]:
    """Photos (domain A) and paintings (domain B), a few small crops each, as a studio's folders."""
    root = tmp_path_factory.mktemp("domains")
    a, b = root / "photos", root / "paintings"
    a.mkdir()
    b.mkdir()
    for folder, names in ((a, ("generation/stonehenge.jpg", "generation/angkorwat.jpg")),
                          (b, ("harmonization/scream.jpg", "harmonization/oil_tree.jpg"))):  # fmt: skip
        for name in names:
            image = cv2.imread(str(shared_images / name))
            h, w = image.shape[:2]
            small = cv2.resize(image, (96, round(96 * h / w)), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(folder / (Path(name).stem + ".png")), small)
    return a, b


@pytest.fixture(scope="module")
def model(tmp_path_factory, domains) -> Path:
    out = tmp_path_factory.mktemp("cyclegan") / "m"
    a, b = domains
    proc = engine("train", "--family", "cyclegan", "--domain-a", a, "--domain-b", b, "--out", out,
                  "--preset", "tiny", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = result(proc)
    assert (summary["family"], summary["mode"]) == ("cyclegan", "restyle") and "preview" not in summary
    assert not (out / "checkpoint").exists()
    return out


def test_training_writes_a_model_of_two_generators(model):
    meta = json.loads((model / "model.json").read_text())
    assert meta["family"] == "cyclegan" and meta["model"]["task"] == "restyle"
    assert meta["model"]["crop"] == 32 and meta["info"]["images"] == [2, 2]
    loaded = families.load(model, "cpu", "torch")
    assert loaded.runner["b2a"] is not loaded.runner["a2b"] and loaded.runner_info["backend"] == "torch"


def test_restyle_both_ways_keeps_size_depth_and_alpha(model, tmp_path, shared_images):
    photo = cv2.imread(str(shared_images / "generation" / "zebra.png"))
    h, w = 101, 150  # not a multiple of 4: padded inside, cropped back
    rgba16 = np.dstack([cv2.resize(photo, (w, h)), np.full((h, w), 255, np.uint8)]).astype(np.uint16) * 257
    rgba16[:20, :20, 3] = 1000  # some transparency, kept as it is
    source = tmp_path / "in.png"
    cv2.imwrite(str(source), rgba16)
    outs = {}
    for direction, backend in (("a2b", "onnxruntime"), ("b2a", "torch")):  # (both run both: below)
        out = tmp_path / f"{direction}.png"
        proc = engine("restyle", model, "--image", source, "--out", out, "--direction", direction,
                      "--backend", backend, "--json")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert (result(proc)["width"], result(proc)["height"]) == (w, h)
        outs[direction] = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert outs[direction].dtype == np.uint16 and outs[direction].shape == (h, w, 4)
        np.testing.assert_array_equal(outs[direction][..., 3], rgba16[..., 3])
        assert np.abs(outs[direction][..., :3].astype(int) - rgba16[..., :3]).mean() > 257  # it changed
    assert not np.array_equal(outs["a2b"], outs["b2a"])


def test_tiles_meet_without_a_seam_and_match_one_pass_with_the_same_statistics(model, shared_images):
    run = families.load(model, "cpu", "torch").runner["a2b"]
    image = read_image(shared_images / "generation" / "angkorwat.jpg").rgb
    big = cv2.resize(image, (600, 452), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    tiled = restyle_module.restyle(run, big, tile=128)
    # One pass over the whole picture with the statistics the tiles used (those of a copy 128 px long).
    stats = restyle_module.statistics(run, big, 128)
    whole = ((run(restyle_module.to_input(big), stats)[0][0].transpose(1, 2, 0) + 1) / 2).clip(0, 1)
    assert np.abs(tiled - whole).max() < 2e-3
    # No column or row at a tile border stands out from its neighbours.
    for axis in (0, 1):
        profile = np.abs(np.diff(tiled, axis=1 - axis)).mean(axis=(1 - axis, 2))
        assert profile.max() < 2 * np.median(profile)


def test_onnxruntime_runs_both_directions_as_torch_does(model):
    """The default backend exports each generator into the model directory and agrees with eager torch,
    with each picture's own statistics and with given ones (a tile's)."""
    eager = families.load(model, "cpu", "torch").runner
    onnx = families.load(model, "cpu", "onnxruntime").runner
    assert onnx["a2b"].describe()["backend"] == "onnxruntime"
    assert (model / "restyle_a2b.onnx").is_file()
    rng = np.random.default_rng(1)
    picture = rng.random((1, 3, 45, 61), dtype=np.float32) * 2 - 1  # not a multiple of 4
    other = rng.random((1, 3, 30, 30), dtype=np.float32) * 2 - 1
    for direction in ("a2b", "b2a"):
        out, stats = eager[direction](picture, None)
        got, got_stats = onnx[direction](picture, None)
        assert got.shape == out.shape == (1, 3, 45, 61)
        np.testing.assert_allclose(got, out, atol=1e-4)
        np.testing.assert_allclose(got_stats, stats, rtol=1e-4, atol=1e-5)
        given = eager[direction](other, None)[1]
        np.testing.assert_allclose(
            onnx[direction](picture, given)[0], eager[direction](picture, given)[0], atol=1e-4
        )
        assert np.abs(eager[direction](picture, given)[0] - out).max() > 1e-3  # the statistics matter
    # A second load reuses the exports (same weights): the files are not written again.
    stamp = (model / "restyle_b2a.onnx").stat().st_mtime_ns
    families.load(model, "cpu", "onnxruntime").runner["b2a"]
    assert (model / "restyle_b2a.onnx").stat().st_mtime_ns == stamp


def test_the_export_is_kept_when_only_training_settings_differ(model, tmp_path):
    """A model whose training settings differ (a field added later, a longer run) keeps its ONNX file: only
    the generator's shape and weights, the direction and the exporter make the export stale."""
    import copy

    from engine.families.cyclegan.onnx_export import source_digest

    old = tmp_path / "old"
    shutil.copytree(model, old, ignore=shutil.ignore_patterns("*.onnx"))
    families.load(old, "cpu", "onnxruntime").runner["a2b"]  # exports on first use
    onnx_file = old / "restyle_a2b.onnx"
    written = onnx_file.stat().st_mtime_ns
    meta = json.loads((old / "model.json").read_text())
    del meta["model"]["pool"]  # as stored before a field existed
    meta["model"]["epochs"] += 1
    meta["model"]["cycle_weight"] = 5.0
    (old / "model.json").write_text(json.dumps(meta))
    families.load(old, "cpu", "onnxruntime").runner["a2b"]
    assert onnx_file.stat().st_mtime_ns == written
    # What the graph is made of still counts.
    loaded = families.load(old, "cpu", "torch")
    config, generator = loaded.model["config"], loaded.model["generators"]["a2b"]
    digest = source_digest(generator, "a2b", tiles=True)
    deeper = copy.deepcopy(generator)
    deeper.shape = (config.ngf, config.blocks + 1, config.upsample)  # the same weights, another shape
    assert source_digest(deeper, "a2b", True) != digest
    assert source_digest(generator, "b2a", True) != digest
    assert source_digest(generator, "a2b", False) != digest
    with torch.no_grad():
        next(generator.parameters()).add_(1e-3)
    assert source_digest(generator, "a2b", True) != digest


def test_export_writes_one_direction_that_runs_on_the_image_alone(model, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "b2a.onnx"
    proc = engine("export", model, "--out", out, "--direction", "b2a", "--json")
    assert proc.returncode == 0, proc.stderr
    assert result(proc)["direction"] == "b2a" and out.is_file()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    meta = session.get_modelmeta().custom_metadata_map
    assert (meta["family"], meta["direction"]) == ("cyclegan", "b2a")
    picture = np.random.default_rng(2).random((2, 3, 37, 50), dtype=np.float32) * 2 - 1  # a batch of 2
    got = session.run(["image_out"], {"image": picture})[0]
    eager = families.load(model, "cpu", "torch").runner["b2a"]
    for k in range(2):
        np.testing.assert_allclose(got[k : k + 1], eager(picture[k : k + 1], None)[0], atol=1e-4)


def test_a_4000x3000_restyle_stays_within_a_memory_bound(model, tmp_path):
    script = f"""
import resource, sys
import numpy as np
from engine import families
from engine.families.cyclegan.restyle import restyle
loaded = families.load({str(model)!r}, "cpu", "onnxruntime")
rng = np.random.default_rng(0)
picture = np.repeat(np.repeat(rng.random((300, 400, 3), dtype=np.float32), 10, axis=0), 10, axis=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = restyle(loaded.runner["a2b"], picture)
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(out.shape, grown // 1024)
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    shape, grown_mb = proc.stdout.strip().rsplit(" ", 1)
    assert shape == "(3000, 4000, 3)"
    # The picture, the result and their sums are 4 x 144 MB; the network's own memory is one tile's.
    assert int(grown_mb) < 1200, f"re-styling 4000x3000 grew the process by {grown_mb} MB"


def test_batch_restyles_a_folder_and_reports_the_file_it_cannot_read(model, tmp_path, shared_images):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("stonehenge.jpg", "zebra.png"):
        image = cv2.imread(str(shared_images / "generation" / name))
        cv2.imwrite(str(inputs / (Path(name).stem + ".png")), cv2.resize(image, (80, 60)))
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    proc = engine("batch", model, "--input", inputs, "--output", tmp_path / "out", "--direction", "b2a")
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "1 of 3 files failed (2 done" in proc.stderr and "broken.png" in proc.stderr
    for name in ("stonehenge.png", "zebra.png"):
        assert cv2.imread(str(tmp_path / "out" / name)).shape == (60, 80, 3)


def test_bad_inputs_get_one_line_each(model, domains, tmp_path, shared_images):
    a, b = domains
    empty, a_file = tmp_path / "empty", a / "stonehenge.png"
    empty.mkdir()
    image = shared_images / "generation" / "zebra.png"
    consingan_model = Path(__file__).parent / "data" / "model_format_1"
    cases = {
        ("train", "--family", "cyclegan", "--domain-a", empty, "--domain-b", b, "--out", tmp_path / "n",
         "--preset", "tiny"): f"--domain-a {empty} has no images",
        ("train", "--family", "cyclegan", "--domain-a", a_file, "--domain-b", b, "--out", tmp_path / "n",
         "--preset", "tiny"): "is not a folder of images",
        ("train", "--family", "cyclegan", "--domain-a", a, "--out", tmp_path / "n"): "give --domain-b DIR",
        ("train", "--family", "cyclegan", "--domain-a", a, "--domain-b", b, "--out", tmp_path / "n",
         "--crop", "30"): "--crop: Input should be a multiple of 4",
        ("restyle", consingan_model, "--image", image, "--out", tmp_path / "x.png"):
            "is a ConSinGAN model for harmonization, which cannot restyle",
        ("export", model, "--out", tmp_path / "x.onnx", "--fp16"):
            "--fp16 is not an option of cyclegan's export",
        ("export", consingan_model, "--out", tmp_path / "x.onnx", "--direction", "b2a"):
            "--direction is not an option of consingan's export",
        ("restyle", model, "--image", image, "--out", tmp_path / "x.png", "--direction", "sideways"):
            "--direction: invalid choice: 'sideways' (choose from 'a2b', 'b2a')",
        ("harmonize", model, "--image", image, "--mask", image, "--out", tmp_path / "x.png"):
            "is a CycleGAN model, which cannot harmonize; it can: export, restyle",
    }  # fmt: skip
    for (args, words), proc in zip(cases.items(), run_engines(*cases), strict=True):
        assert proc.returncode == 2 and words in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "n").exists() and not (tmp_path / "x.png").exists()
    assert not (tmp_path / "x.onnx").exists()


def test_a_cancelled_run_resumes_to_the_same_model(domains, tmp_path):
    from engine.families.cyclegan import Options

    family = families.get("cyclegan")
    options = Options(preset="tiny", seed=3)
    device = torch.device("cpu")
    family.train(TrainRun("restyle", TrainData(folders=domains), options, tmp_path / "whole", device))
    cancel = threading.Event()
    seen: list = []

    def progress(event) -> None:
        seen.append(event)
        if len(seen) == 2:
            cancel.set()  # mid-run: after the second training step

    run = TrainRun("restyle", TrainData(folders=domains), options, tmp_path / "cut", device, progress, cancel)
    with pytest.raises(CancelledError, match=f"engine train --resume {tmp_path / 'cut'}"):
        family.train(run)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "family.json").read_text()) == {"family": "cyclegan"}
    proc = engine("train", "--resume", tmp_path / "cut", "--json")
    assert proc.returncode == 0 and result(proc)["family"] == "cyclegan", proc.stderr
    assert not (tmp_path / "cut" / "checkpoint").exists()
    from safetensors.torch import load_file

    for name in ("generator_a2b.safetensors", "critic_b.safetensors"):
        whole, cut = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        for key in whole:
            torch.testing.assert_close(cut[key], whole[key], rtol=1e-4, atol=1e-5)


def test_a_killed_run_resumes_to_the_same_model(domains, tmp_path):
    """kill -9 between two epochs' checkpoints; resuming starts at the last checkpoint's epoch and finishes
    the model that an unbroken run with the same seed trains."""
    from safetensors.torch import load_file

    a, b = domains
    epochs = 6  # 12 epochs of 3 tiny steps: seconds, long enough to be killed in the middle

    def train(out: Path) -> list:
        return ["train", "--family", "cyclegan", "--domain-a", a, "--domain-b", b, "--out", out,
                "--preset", "tiny", "--seed", "3", "--epochs", epochs]  # fmt: skip

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert engine(*train(whole)).returncode == 0
    cmd = [sys.executable, "-m", "engine.cli", *map(str, train(cut))]
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True)
    state, seen, deadline = cut / "checkpoint" / "state.pt", set(), time.time() + 120
    while len(seen) < 3 and time.time() < deadline:  # the first checkpoint, then two epochs' ends
        assert proc.poll() is None, f"finished before it could be killed: {proc.communicate()[1]}"
        try:
            info = state.stat()  # each checkpoint is a new file moved into place
            seen.add((info.st_ino, info.st_mtime_ns))
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert len(seen) >= 3, "no third checkpoint within 120 s"
    assert proc.returncode == -signal.SIGKILL and not (cut / "model.json").exists()
    epoch = families.read_checkpoint_state(cut, "cpu")["epoch"]
    assert 2 <= epoch < 2 * epochs
    failed = engine("restyle", cut, "--image", a / "stonehenge.png", "--out", tmp_path / "r.png")
    assert failed.returncode != 0 and f"engine train --resume {cut}" in failed.stderr
    events: list = []
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as ENGINE_THREADS=2 gave the runs above
    try:
        families.resume(cut, torch.device("cpu"), events.append)  # what `engine train --resume` runs
    finally:
        torch.set_num_threads(threads)
    assert events[0].stage == epoch and events[-1].stage == 2 * epochs - 1
    assert (cut / "model.json").is_file() and not (cut / "checkpoint").exists()
    for name in ("generator_a2b.safetensors", "generator_b2a.safetensors", "critic_a.safetensors"):
        whole_w, cut_w = load_file(whole / name), load_file(cut / name)
        for key in whole_w:
            torch.testing.assert_close(cut_w[key], whole_w[key], rtol=1e-4, atol=1e-5)


def test_the_daemon_trains_on_folders_and_restyles(domains, tmp_path, shared_images):
    from serve_helpers import Daemon

    from editor_bridge import frames
    from editor_bridge.protocol import ApplyRequest, TrainRequest

    a, b = domains
    daemon = Daemon(tmp_path / "home").wait_ready()
    try:
        with daemon.client(timeout=120) as client:
            train = TrainRequest(
                family="cyclegan", task="restyle", folders=[str(a), str(b)], options={"preset": "tiny"}
            )
            trained = client.run_job(train, timeout=300).content.model
            assert (trained.family, trained.task) == ("cyclegan", "restyle")
            photo = cv2.resize(cv2.imread(str(shared_images / "generation" / "zebra.png")), (90, 70))
            buffers: list = []
            image = frames.attach(buffers, np.ascontiguousarray(photo), "BGR")
            request = ApplyRequest(
                operation="restyle", model_id=trained.model_id, image=image, params={"direction": "b2a"}
            )
            reply = client.run_job(request, buffers)
            out = np.asarray(reply.image(reply.content.images[0]))
            assert out.shape == (70, 90, 3) and np.abs(out.astype(int) - photo).mean() > 1
            assert reply.content.job_id is None  # a stored model: answered at once
    finally:
        daemon.stop()


def test_a_grey_image_is_restyled_in_colour_as_every_command_returns_grey(model, tmp_path, shared_images):
    """Grey in, RGB out (the model paints in colour), as harmonize and edit do; 16-bit grey stays 16-bit."""
    from engine.imageio import write_image
    from engine.operations import OperationInput, for_model

    photo = cv2.imread(str(shared_images / "generation" / "zebra.png"), cv2.IMREAD_GRAYSCALE)
    grey = cv2.resize(photo, (70, 50)).astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    picture = read_image(tmp_path / "grey.png")
    loaded = families.load(model, "cpu", "torch")
    op = for_model(loaded, "restyle")
    out = op.run(loaded, OperationInput(picture, params=op.check_params({"direction": "a2b"}))).pictures[0]
    assert out.rgb.shape == (50, 70, 3) and out.depth == 16 and out.alpha is None
    written = cv2.imread(str(write_image(tmp_path / "out.png", out)), cv2.IMREAD_UNCHANGED)
    assert written.shape == (50, 70, 3) and written.dtype == np.uint16
    assert np.abs(out.rgb - picture.rgb).mean() > 0.01  # re-styled, not passed through
