"""A full disk, on a real (small) file system: one line that says where and how much to free, nothing
half-written left behind, and a daemon whose journal stays true."""

from __future__ import annotations

import json
import re
import shutil
import threading

import pytest
import torch
from full_disk import small_disk
from serve_helpers import QUICK_TRAIN, Daemon, harmonize_request, krita_layers
from test_cli import engine, result

from editor_bridge.errors import RemoteError
from editor_bridge.protocol import JobState, TrainRequest
from engine.errors import DiskFullError
from engine.families.consingan import store, training
from engine.families.consingan.config import preset, with_overrides
from engine.files import atomic_write_bytes, write_files
from engine.imageio import read_image
from engine.serve.journal import RESERVE_BYTES

CPU = torch.device("cpu")
ONE_LINE = re.compile(r"no space left on (\S+) \(writing (\S+)\): free at least (\d+) MB, then (.+)")


@pytest.fixture()
def disk(tmp_path):
    with small_disk(tmp_path / "disk") as d:
        yield d


def _check_one_line(stderr: str, disk, command: str) -> re.Match:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"engine {command}: error: no space left on {disk.path} "), lines[0]
    found = ONE_LINE.search(lines[0])
    assert found is not None, lines[0]
    return found


def test_atomic_writes_leave_the_old_file_or_none_and_say_how_much_to_free(disk):
    target = disk.path / "a.bin"
    atomic_write_bytes(target, b"old")
    disk.fill(leave=100_000)
    with pytest.raises(DiskFullError) as full:
        atomic_write_bytes(target, bytes(3_000_000))
    assert target.read_bytes() == b"old" and disk.files() == ["a.bin"]  # no temporary file left
    found = ONE_LINE.search(str(full.value))
    assert found and found.group(2) == str(target) and int(found.group(3)) in (3, 4)  # 3 MB - 0.1 free

    with pytest.raises(DiskFullError, match=r"free at least \d+ MB"):
        write_files(disk.path / "set", {"one": bytes(50_000), "two": bytes(200_000)})
    assert not list((disk.path / "set").iterdir())  # the first file went again: all or none


def test_a_model_is_written_whole_or_not_at_all(disk, tiny_models):
    model = store.load_model(tiny_models["generation"])
    image = store.load_training_image(tiny_models["generation"])
    weights = (tiny_models["generation"] / "generator.safetensors").stat().st_size
    disk.fill(leave=weights + 20_000)  # room for the generator's weights, not for the rest
    with pytest.raises(DiskFullError):
        store.save_model(disk.path / "m", model, None, image, image)
    assert disk.files() == ["m"]
    disk.empty()
    store.save_model(disk.path / "m", model, None, image, image)
    assert store.load_model(disk.path / "m").shapes == model.shapes


def test_train_on_a_full_disk_is_one_line_and_leaves_nothing(disk, shared_images):
    disk.fill()
    image = shared_images / "generation" / "zebra.png"
    proc = engine("train", image, "--preset", "tiny", "--out", disk.path / "m", check=False)
    assert proc.returncode == 2
    found = _check_one_line(proc.stderr, disk, "train")
    assert found.group(4) == "train again"
    assert disk.files() == []


def test_a_checkpoint_that_does_not_fit_keeps_the_last_one_for_resume(disk, shared_images):
    image = read_image(shared_images / "generation" / "zebra.png").rgb
    model_cfg, train_cfg = with_overrides(*preset("tiny", "generation"), iters=6)

    def fill_in_stage_two(p: training.Progress) -> None:
        if p.stage == 1 and p.iteration == 3:
            disk.fill()

    out = disk.path / "m"
    with pytest.raises(DiskFullError, match=f"then continue with `engine train --resume {out}`"):
        training.train(image, model_cfg, train_cfg, out, CPU, fill_in_stage_two)
    assert disk.files() == ["m", "m/checkpoint", "m/checkpoint/image.png", "m/checkpoint/state.pt"]
    disk.empty()
    resumed = training.resume(out, CPU)
    assert store.load_model(resumed).shapes == stage_shapes_of(out)


def stage_shapes_of(model_dir):
    return [tuple(s) for s in json.loads((model_dir / "model.json").read_text())["stage_shapes"]]


@pytest.mark.parametrize("command", ["harmonize", "sample"])
def test_outputs_into_a_full_disk_are_one_line_and_leave_nothing(disk, command, tiny_models, shared_images):
    h = shared_images / "harmonization"
    disk.fill()
    if command == "harmonize":
        args = [tiny_models["harmonization"], "--image", h / "scream_naive.jpg", "--mask"]
        args += [h / "scream_naive_mask.jpg", "--out", disk.path / "out" / "o.png"]
    else:
        args = [tiny_models["generation"], "--out", disk.path / "samples", "--n", "3"]
    proc = engine(command, *args, "--backend", "torch", "--json", check=False)
    assert proc.returncode == 2 and result(proc)["ok"] is False
    _check_one_line(proc.stderr, disk, command)
    assert disk.files() == []  # no image, no temporary file, not even the folders made for them


def test_batch_stops_at_a_full_disk_and_says_how_to_go_on(disk, tiny_models, shared_images, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("scream", "oil_tree"):
        shutil.copy(shared_images / "harmonization" / f"{name}_naive.jpg", inputs / f"{name}.png")
    disk.fill()
    args = [tiny_models["harmonization"], "--input", inputs, "--output", disk.path / "out"]
    proc = engine("batch", *args, "--backend", "torch", "--json", check=False)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.startswith("engine batch: error: stopped after 0 of 2 files: no space left on"), line
    assert "skipped when the same command runs again" in line and "\n" not in line
    assert result(proc)["done"] == 0


def test_daemon_on_a_full_disk_fails_the_job_in_the_journal_and_says_why(tmp_path, shared_images):
    with small_disk(tmp_path / "disk", size="24m") as disk:
        home = disk.path / "home"
        daemon = Daemon(home).wait_ready()
        try:
            assert (home / "jobs.sqlite3.reserve").stat().st_size == RESERVE_BYTES
            layers = krita_layers(shared_images)
            request, buffers = harmonize_request(layers)
            train = TrainRequest(
                task="harmonization",
                image=request.background.model_copy(update={"buffer_index": 0}),
                options={
                    "preset": "tiny",
                    "iters": 400,
                },  # long enough to fill the disk while stage one trains
            )
            with daemon.client() as client:
                job_id = client.submit(train, [buffers[2]])
                started = threading.Event()
                with pytest.raises(RemoteError) as failed:
                    client.wait_job(job_id, on_progress=lambda e, p: started.is_set() or (
                        disk.fill(), started.set()), timeout=120)  # fmt: skip
                message = str(failed.value)
                assert f"no space left on {disk.path}" in message and "MB" in message, message
                assert "internal engine error" not in message
                assert client.job_status(job_id).state is JobState.FAILED
                # New work is refused on the full disk, in one line, and the engine goes on (the failed
                # job's files and the journal's reserve gave some space back: it is taken again).
                disk.fill()
                with pytest.raises(RemoteError, match="no space left on"):
                    client.run_job(*harmonize_request(layers, train=QUICK_TRAIN))
                assert client.status().jobs == []
            assert not (home / "jobs" / job_id).exists()  # its inputs and work went with it
        finally:
            daemon.stop()
        first_log = daemon.output()
        assert "giving up its reserve to journal a job" in first_log  # the journal write needed it
        stored = result(engine("status", "--home", home, "--json", check=False))
        assert stored["running"] is False and stored["jobs"] == []  # nothing "interrupted" to resume
        disk.empty()
        daemon = Daemon(home).wait_ready()  # the next start keeps the job's true end
        try:
            with daemon.client() as client:
                info = client.job_status(job_id)
                assert info.state is JobState.FAILED and "no space left" in info.error.message
        finally:
            daemon.stop()
        assert "Traceback" not in first_log + daemon.output()
