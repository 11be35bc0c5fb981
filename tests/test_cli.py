"""The `engine` command as a user runs it: real processes, real files, exit codes and one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.imageio import read_image

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def engine(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"engine {args[0]} failed ({proc.returncode}): {proc.stderr}")
    return proc


def result(proc: subprocess.CompletedProcess) -> dict:
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"--json must print exactly one line, got {proc.stdout!r}"
    return json.loads(lines[0])


def test_train_sample_harmonize_edit_finetune(tmp_path, shared_images):
    h = shared_images / "harmonization"
    out = result(
        engine(
            "train",
            h / "scream.jpg",
            "--mode",
            "harmonization",
            "--preset",
            "tiny",
            "--out",
            tmp_path / "m",
            "--json",
        )
    )
    assert out["ok"] and out["mode"] == "harmonization" and Path(out["preview"]).is_file()

    res = result(
        engine(
            "harmonize",
            tmp_path / "m",
            "--image",
            h / "scream_naive.jpg",
            "--mask",
            h / "scream_naive_mask.jpg",
            "--out",
            tmp_path / "h.png",
            "--json",
        )
    )
    picture = read_image(tmp_path / "h.png")
    assert picture.shape == read_image(h / "scream_naive.jpg").shape == (res["height"], res["width"])

    tuned = result(
        engine(
            "finetune",
            tmp_path / "m",
            "--naive",
            h / "scream_naive.jpg",
            "--iters",
            "3",
            "--out",
            tmp_path / "tuned",
            "--json",
        )
    )
    assert tuned["ok"] and (tmp_path / "tuned" / "model.json").is_file()

    e = shared_images / "editing"
    engine("train", e / "stone.png", "--mode", "editing", "--preset", "tiny", "--out", tmp_path / "e")
    engine(
        "edit",
        tmp_path / "e",
        "--image",
        e / "stone_edit_1.png",
        "--mask",
        e / "stone_edit_1_mask.png",
        "--out",
        tmp_path / "edited.png",
        "--backend",
        "torch",  # onnxruntime (exported on first use) is harmonize's above; an export costs 15-30 s
    )
    assert read_image(tmp_path / "edited.png").shape == read_image(e / "stone_edit_1.png").shape

    g = shared_images / "generation"
    engine("train", g / "colusseum.png", "--mode", "retarget", "--preset", "tiny", "--out", tmp_path / "r")
    res = result(
        engine(
            "sample",
            tmp_path / "r",
            "--out",
            tmp_path / "s",
            "--n",
            "3",
            "--width",
            "120",
            "--height",
            "50",
            "--backend",
            "torch",
            "--json",
        )
    )
    assert len(res["files"]) == 3
    assert all(read_image(f).shape == (50, 120) for f in res["files"])


def test_alpha_png_keeps_its_alpha(tmp_path, tiny_models):
    # Harmonize an RGBA image: the alpha channel must come back unchanged.
    import cv2

    rgba = np.zeros((60, 80, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[..., 3] = np.arange(80, dtype=np.uint8)[None, :] * 3
    cv2.imwrite(str(tmp_path / "in.png"), rgba)
    mask = np.zeros((60, 80), np.uint8)
    mask[20:40, 30:50] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    engine(
        "harmonize",
        tiny_models["harmonization"],
        "--image",
        tmp_path / "in.png",
        "--mask",
        tmp_path / "mask.png",
        "--out",
        tmp_path / "out.png",
    )
    out = cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (60, 80, 4)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])


HARMONIZE = ["harmonize", "{model}", "--mask", "{mask}", "--image"]  # then the image and --out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["harmonize", "{models}/nope", "--image", "{img}", "--mask", "{mask}", "--out", "{tmp}/o.png"],
            "no model at",
        ),
        (
            [
                "harmonize",
                "{model}",
                "--image",
                "{tmp}/missing.png",
                "--mask",
                "{mask}",
                "--out",
                "{tmp}/o.png",
            ],
            "no such file",
        ),
        (
            ["harmonize", "{model}", "--image", "{garbage}", "--mask", "{mask}", "--out", "{tmp}/o.png"],
            "not an image file",
        ),
        ([*HARMONIZE, "{truncated}", "--out", "{tmp}/o.png"], "the PNG file is cut short"),
        (
            ["harmonize", "{model}", "--image", "{tmp}", "--mask", "{mask}", "--out", "{tmp}/o.png"],
            "it is a folder; give an image file",
        ),
        (
            ["harmonize", "{img}", "--image", "{img}", "--mask", "{mask}", "--out", "{tmp}/o.png"],
            "is a file, not a model directory",
        ),
        (
            ["harmonize", "{model}", "--image", "{img}", "--mask", "{small_mask}", "--out", "{tmp}/o.png"],
            "export the mask at the image's size",
        ),
        (
            ["edit", "{model}", "--image", "{img}", "--mask", "{mask}", "--out", "{tmp}/o.png"],
            "needs a model trained with --mode editing",
        ),
        (["sample", "{model}", "--out", "{tmp}/s", "--width", "100000", "--height", "100000"], "MP limit"),
        (["train", "{img}", "--mode", "generation", "--stages", "0", "--out", "{tmp}/t"], "--stages"),
        (["train", "{img}", "--out", "{model}"], "already exists"),
        (["train", "--resume", "{tmp}/never"], "no checkpoint"),
        (["finetune", "--resume", "{tmp}/never"], "no checkpoint"),
        (["finetune", "{model}", "--out", "{tmp}/t"], "--naive"),
        (["train", "{img}", "--out", "{tmp}/t", "--device", "cuda"], "no CUDA GPU"),
        (
            ["harmonize", "{model}", "--image", "{img}", "--mask", "{mask}", "--out", "{tmp}/o.png"]
            + ["--color-match", "1.5"],
            "--color-match: must be between 0 and 1",
        ),
        (["train", "{img}", "--stages", "many", "--out", "{tmp}/t"], "see `engine train --help`"),
        ([*HARMONIZE, "{img}", "--out", "{tmp}/o.xyz"], "OpenCV cannot encode '.xyz' files"),
        ([*HARMONIZE, "{img}", "--out", "{tmp}"], "is a folder"),
        ([*HARMONIZE, "{img_copy}", "--out", "{img_copy}"], "never writes over its inputs"),
        (["sample", "{gen}", "--out", "{tmp}/s", "--seed", "99999999999999999999"], "--seed: must be"),
        (["sample", "{gen}", "--out", "{tmp}/s", "--width", "0", "--height", "50"], "--width: must be"),
        (["sample", "{gen}", "--out", "{img_copy}"], "is a file"),
        (["finetune", "{model}", "--naive", "{img}", "--out", "{tmp}/t", "--iters", "-3"], "--iters"),
        (["export", "{model}", "--out", "{tmp}/g.txt"], "must be an .onnx file"),
    ],
)
def test_bad_input_gives_a_one_line_error_and_writes_nothing(
    args, message, tmp_path, tiny_models, shared_images
):
    import cv2

    (tmp_path / "garbage.png").write_bytes(b"this is not a png")
    png = cv2.imencode(".png", cv2.imread(str(shared_images / "harmonization" / "scream_naive.jpg")))[1]
    (tmp_path / "truncated.png").write_bytes(png.tobytes()[: png.size // 2])
    (tmp_path / "copy.jpg").write_bytes((shared_images / "harmonization" / "scream_naive.jpg").read_bytes())
    cv2.imwrite(str(tmp_path / "small_mask.png"), np.zeros((10, 10), np.uint8))
    h = shared_images / "harmonization"
    values = {
        "models": tmp_path,
        "model": tiny_models["harmonization"],
        "tmp": tmp_path,
        "img": h / "scream_naive.jpg",
        "mask": h / "scream_naive_mask.jpg",
        "garbage": tmp_path / "garbage.png",
        "truncated": tmp_path / "truncated.png",
        "small_mask": tmp_path / "small_mask.png",
        "img_copy": tmp_path / "copy.jpg",
        "gen": tiny_models["generation"],
    }
    if "cuda" in args and __import__("torch").cuda.is_available():
        pytest.skip("this machine has a GPU")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    proc = engine(*[a.format(**values) for a in args], "--json", check=False)
    assert proc.returncode != 0
    err_lines = proc.stderr.strip().splitlines()
    assert len(err_lines) == 1 and message in err_lines[0], proc.stderr
    assert result(proc) == {"ok": False, "error": err_lines[0].split("error: ", 1)[1]}
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before, "a failed command left files behind or changed its inputs"
    assert not [p for p in tmp_path.iterdir() if p.is_dir()], "a failed command created a folder"


def start_training(image: Path, out: Path, iters: int) -> subprocess.Popen:
    """`engine train` in the background; returns once its first checkpoint (written at the start) exists."""
    cmd = [sys.executable, "-m", "engine.cli", "train", str(image), "--preset", "tiny", "--iters", str(iters)]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint" / "state.pt").is_file():
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--help"], 0, "usage: engine"),
        (["train", "--help"], 0, "--domain-a"),
        (["restyle", "tests/data/model_format_1", "--image", "missing.png", "--out", "{tmp}/o.png"], 2,
         "cannot read image missing.png"),
        (["train", "--family", "sagan", "--images", "missing.png", "--out", "{tmp}/never"], 2,
         "is not a folder of images"),
        (["train", "--resume", "{tmp}/never"], 2, "has no checkpoint to resume from"),
        (["train", "--resume", "tests/data/model_format_1"], 2, "has finished training"),
        (["finetune", "--resume", "{tmp}/never"], 2, "has no checkpoint to resume from"),
        (["finetune", "tests/data/model_format_1", "--naive", "missing.png", "--out", "{tmp}/t"], 2,
         "cannot read image missing.png"),
    ],
)  # fmt: skip
def test_help_and_argument_errors_do_not_load_torch(args, code, words, tmp_path):
    """Every family's options are read without importing torch (about 2 s on a 2-core CPU): `engine
    --help` and an error about the arguments come at once."""
    args = [a.format(tmp=tmp_path) for a in args]
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['engine', *{args!r}]\n"
        "try:\n    runpy.run_module('engine.cli', run_name='__main__')\n"
        "except SystemExit as e:\n    print('exit', e.code)\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch')\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, cwd=root)
    assert f"exit {code}\nno torch" in proc.stdout, (proc.stdout[-300:], proc.stderr[-300:])
    assert words in proc.stdout + proc.stderr, proc.stderr
    assert not list(tmp_path.iterdir())


def test_finetune_resume_sends_another_familys_run_to_train_resume(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "family.json").write_text('{"family": "sagan"}')
    proc = engine("finetune", "--resume", tmp_path / "run", check=False)
    said = f"{tmp_path / 'run'} is a sagan training run, not a fine-tuning: continue it with `engine train"
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = engine("finetune", "--resume", tmp_path / "never", check=False)
    assert "start a new run with `engine finetune`" in proc.stderr, proc.stderr


def test_kill_during_training_then_resume(tmp_path, shared_images):
    """kill -9 in the middle of a run, then `engine train --resume` finishes the same model."""
    out = tmp_path / "model"
    proc = start_training(shared_images / "generation" / "zebra.png", out, iters=60)
    # Wait for the checkpoint at the first stage boundary, then kill without warning.
    state = out / "checkpoint" / "state.pt"
    first, deadline = state.stat().st_mtime_ns, time.time() + 120
    while time.time() < deadline and state.stat().st_mtime_ns == first:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (out / "model.json").exists()
    failed = engine("sample", out, "--out", tmp_path / "s", check=False)
    assert failed.returncode != 0 and "--resume" in failed.stderr
    res = result(engine("train", "--resume", out, "--json"))
    assert res["ok"] and (out / "model.json").is_file() and not (out / "checkpoint").exists()
    engine("sample", out, "--out", tmp_path / "s", "--backend", "torch")  # (no 15-30 s export: not the point)
    assert read_image(tmp_path / "s" / "sample_000.png").shape == read_image(out / "training_image.png").shape


def test_kill_during_finetuning_then_resume(tmp_path, tiny_models, shared_images):
    """Fine-tuning checkpoints like training: kill -9, then `engine finetune --resume` finishes it."""
    out = tmp_path / "tuned"
    naive = shared_images / "harmonization" / "scream_naive.jpg"
    cmd = ["finetune", tiny_models["harmonization"], "--naive", naive, "--iters", "200", "--out", out]
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *map(str, cmd)], env=ENV, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint" / "state.pt").is_file():
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (out / "model.json").exists()
    res = result(engine("finetune", "--resume", out, "--json"))
    assert res["ok"] and (out / "model.json").is_file() and not (out / "checkpoint").exists()
    meta = json.loads((out / "model.json").read_text())
    assert meta["info"]["finetuned_iters"] == 200
    assert meta["info"]["parent"] == str(tiny_models["harmonization"].resolve())


def test_ctrl_c_stops_cleanly_with_a_checkpoint(tmp_path, shared_images):
    out = tmp_path / "model"
    proc = start_training(shared_images / "generation" / "zebra.png", out, iters=100000)
    time.sleep(0.5)  # let it get into the iterations
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"engine train --resume {out}" in stderr
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "model.json").exists()


def _damage_truncate_weights(model: Path, other: Path) -> None:
    weights = model / "generator.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])


def _damage_meta(change):
    def damage(model: Path, other: Path) -> None:
        meta = json.loads((model / "model.json").read_text())
        (model / "model.json").write_text(json.dumps(change(meta)))

    return damage


def _damage_non_finite_weights(model: Path, other: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(model / "generator.safetensors")
    name = next(k for k, v in weights.items() if v.numel() >= 20)
    flat = weights[name].flatten()
    flat[:10], flat[10:20] = float("nan"), float("inf")
    weights[name] = flat.reshape(weights[name].shape)
    save_file(weights, model / "generator.safetensors")
    assert not torch.isfinite(weights[name]).all()


def _damage_foreign_weights(model: Path, other: Path) -> None:
    (model / "generator.safetensors").write_bytes((other / "generator.safetensors").read_bytes())


@pytest.mark.parametrize(
    "damage, message",
    [
        (_damage_truncate_weights, "is damaged (weights"),
        (_damage_foreign_weights, "is damaged (weights"),
        (_damage_meta(lambda meta: [1, 2]), "is not a model of this engine"),
        (_damage_meta(lambda meta: {k: v for k, v in meta.items() if k != "stage_shapes"}), "(model.json"),
        (_damage_meta(lambda meta: {**meta, "model": {**meta["model"], "nfc": "abc"}}), "(model.json"),
        (_damage_meta(lambda meta: {**meta, "noise_amps": meta["noise_amps"][:1]}), "(model.json"),
        # Values that used to build networks until memory ran out, or past any sane size:
        (
            _damage_meta(lambda meta: {**meta, "model": {**meta["model"], "num_layers": 1000000}}),
            "(model.json: num_layers is 1000000, outside 1-16)",
        ),
        (_damage_meta(lambda meta: {**meta, "model": {**meta["model"], "nfc": 10**9}}), "nfc is"),
        (
            _damage_meta(lambda meta: {**meta, "model": {**meta["model"], "lrelu_alpha": float("inf")}}),
            "lrelu_alpha is inf",
        ),
        (
            _damage_meta(
                lambda meta: {**meta, "stage_shapes": [[100000, 100000]] * len(meta["stage_shapes"])}
            ),
            "a stage of 100000x100000 px",
        ),
        (
            _damage_meta(lambda meta: {**meta, "noise_amps": [float("nan")] * len(meta["noise_amps"])}),
            "noise amplitudes",
        ),
        (_damage_meta(lambda meta: {**meta, "training": {**meta["training"], "iters": -5}}), "iters is -5"),
        (_damage_non_finite_weights, "generator.safetensors has 20 non-finite values of"),
    ],
)
def test_a_damaged_model_gives_a_one_line_error(damage, message, tmp_path, tiny_models, shared_images):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_models["harmonization"], model)
    damage(model, tiny_models["generation"])
    h = shared_images / "harmonization"
    args = [
        "--image",
        h / "scream_naive.jpg",
        "--mask",
        h / "scream_naive_mask.jpg",
        "--out",
        tmp_path / "o.png",
    ]
    proc = engine("harmonize", model, *args, "--backend", "torch", "--json", check=False)
    err_lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err_lines) == 1 and message in err_lines[0], proc.stderr
    assert "retrain" in err_lines[0] or "not a model" in err_lines[0]
    assert result(proc)["ok"] is False
    assert not (tmp_path / "o.png").exists()


def _on_a_terminal(*args: str) -> tuple[int, str]:
    """Run `engine ARGS` with stderr on a pseudo-terminal, as in a shell; returns (code, what it drew)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=ENV,
    )
    os.close(slave)
    drawn = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    return proc.wait(120), drawn.decode(errors="replace")


def test_quick_commands_show_their_steps_on_a_terminal(tmp_path, tiny_models, shared_images):
    h = shared_images / "harmonization"
    code, drawn = _on_a_terminal(
        "harmonize", tiny_models["harmonization"], "--image", h / "scream_naive.jpg",
        "--mask", h / "scream_naive_mask.jpg", "--out", tmp_path / "o.png", "--backend", "torch",
    )  # fmt: skip
    assert code == 0, drawn
    # Steps done of all, then what runs now.
    for step in (
        "0/5 reading the image",
        "1/5 loading the model",
        "3/5 harmonizing",
        "4/5 writing",
        "5/5 done",
    ):
        assert step in drawn, (step, drawn)
    code, drawn = _on_a_terminal(
        "sample", tiny_models["generation"], "--out", tmp_path / "s", "--n", "2", "--backend", "torch"
    )
    assert code == 0 and "sample 2 of 2" in drawn and "5/5 done" in drawn, drawn
    # A failure leaves the bar where it stopped, then the one-line error.
    code, drawn = _on_a_terminal("sample", tmp_path / "missing", "--out", tmp_path / "s2")
    assert code == 2 and "done" not in drawn and "no model at" in drawn, drawn
    # Training that stops before it begins (at the device, after the bar exists) says its error alone,
    # with no empty line of a bar before it.
    g = shared_images / "generation" / "zebra.png"
    code, drawn = _on_a_terminal("train", g, "--preset", "tiny", "--out", tmp_path / "t", "--device", "tpu")
    assert code == 2 and drawn.startswith("engine train: error:") and "unknown device 'tpu'" in drawn, drawn


def test_demo_trains_and_harmonizes_the_bundled_painting(tmp_path):
    # The README's first command, at the tiny preset: a model, and a harmonized picture that differs from
    # the naive composite inside the selection only.
    from engine.assets import asset_dir
    from engine.families.consingan.apply import feathered_mask

    res = result(engine("demo", "--preset", "tiny", "--out", tmp_path / "demo", "--json"))
    assert res["ok"] and (tmp_path / "demo" / "model" / "model.json").is_file()
    examples = asset_dir("examples")
    naive = read_image(examples / "scream_naive.jpg").rgb
    harmonized = read_image(res["file"]).rgb
    mask = (read_image(examples / "scream_naive_mask.jpg").rgb.mean(axis=2) > 0.5).astype(np.float32)
    changed = np.abs(harmonized - naive).max(axis=2) > 2 / 255
    assert changed[mask > 0].mean() > 0.5  # the pasted object took on the painting's colours
    shapes = json.loads((tmp_path / "demo" / "model" / "model.json").read_text())["stage_shapes"]
    outside = feathered_mask(mask, tuple(shapes[-1]), dilation=7) == 0
    assert outside.mean() > 0.1 and not changed[outside].any()  # and nothing else changed
