"""The set generator (SAGAN-style) end to end at the tiny preset, on real icons (the emoji font's faces):
training, the same seed giving the same image on either backend, sheets and interpolation files, ONNX
export, resume after a cancel, mixed inputs fitted and every bad input in one line."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from cli_helpers import json_result, run_engine, run_engines
from PIL import Image

from bench.emoji import INSTALL, available, face_emoji
from engine import families
from engine.errors import BadInputError, CancelledError
from engine.family import TrainData, TrainRun

engine, result = run_engine, json_result
SIZE = 64


@pytest.fixture(scope="module")
def icons(tmp_path_factory) -> Path:
    """Ten face emoji (RGBA cut-outs, 136 x 128)."""
    if not available():
        pytest.fail(f"the emoji font or fontTools is missing: {INSTALL}, and pip install fonttools")
    folder = tmp_path_factory.mktemp("icons")
    assert len(face_emoji(folder, tuple(range(0x1F600, 0x1F60A)))) == 10
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory, icons) -> Path:
    out = tmp_path_factory.mktemp("sagan") / "m"
    proc = engine("train", "--family", "sagan", "--images", icons, "--out", out, "--preset", "tiny", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = result(proc)
    assert (summary["family"], summary["mode"], summary["width"]) == ("sagan", "set", SIZE)
    assert not (out / "checkpoint").exists()
    return out


def _rgba(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_training_keeps_the_sets_alpha_and_stores_plain_weights(model):
    meta = json.loads((model / "model.json").read_text())
    assert meta["family"] == "sagan" and meta["model"]["channels"] == 4 and meta["info"]["image_count"] == 10
    from safetensors.torch import load_file

    keys = load_file(model / "generator.safetensors")
    assert not any("parametrizations" in k for k in keys)  # spectral norm written into the weights


def test_a_seed_is_one_image_on_either_backend_and_samples_are_seed_plus_i(model, tmp_path):
    proc = engine("sample", model, "--out", tmp_path / "three", "--n", "3", "--seed", "40", "--sheet",
                  tmp_path / "sheet.png", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = result(proc)
    assert out["seeds"] == [40, 41, 42] and out["backend"] == "onnxruntime"
    proc = engine("sample", model, "--out", tmp_path / "one", "--seed", "41", "--backend", "torch", "--json")
    assert proc.returncode == 0, proc.stderr
    alone, second = _rgba(tmp_path / "one" / "sample_000.png"), _rgba(tmp_path / "three" / "sample_001.png")
    assert alone.shape == (SIZE, SIZE, 4)
    assert np.abs(alone.astype(int) - second).max() <= 1  # onnxruntime against torch: float rounding
    loaded = families.load(model, "cpu", "torch")
    draws = {
        s: loaded.family.operations[0].run(loaded, _input(n=1, seed=s)).pictures[0].rgb for s in (40, 41)
    }
    assert np.abs(draws[40] - draws[41]).max() > 1e-3  # another seed, another image (tiny: barely)
    sheet = _rgba(tmp_path / "sheet.png")
    assert sheet.shape == (2 + 2 * (SIZE + 2), 2 + 2 * (SIZE + 2), 4)  # 3 images on a 2 x 2 grid
    np.testing.assert_array_equal(sheet[2 : 2 + SIZE, SIZE + 4 : 2 * SIZE + 4], second)


def test_best_of_keeps_each_groups_seed_the_stored_critic_scores_highest(model, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from engine.families import sagan
    from engine.families.sagan.sample import critic_scores, generate, latent

    assert not any("parametrizations" in k for k in load_file(model / "critic.safetensors"))
    # 18 seeds: the third group spans two of the runner's chunks of 16
    proc = engine(
        "sample", model, "--out", tmp_path / "best", "--n", "3", "--seed", "10", "--best-of", "6", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    kept = result(proc)["seeds"]
    loaded = families.load(model, "cpu", "onnxruntime")  # as the command drew them
    config, critic = loaded.model["config"], sagan.critic(loaded)
    for i, seed in enumerate(kept):
        group = [10 + 6 * i + j for j in range(6)]  # image i: the best of the i-th six seeds
        images = generate(loaded.runner, np.stack([latent(s, config.z_dim) for s in group]))
        scores = critic_scores(critic, images, config.policy)
        assert len(set(scores.round(6))) == 6 and seed == group[int(np.argmax(scores))], (scores, kept)
        np.testing.assert_array_equal(critic_scores(critic, images, config.policy), scores)  # repeats
        # the file is that seed's own image, as drawn alone
        proc = engine("sample", model, "--out", tmp_path / f"alone{i}", "--seed", str(seed), "--json")
        assert proc.returncode == 0, proc.stderr
        alone = _rgba(tmp_path / f"alone{i}" / "sample_000.png")
        assert np.abs(_rgba(tmp_path / "best" / f"sample_{i:03d}.png").astype(int) - alone).max() <= 1
    plain = critic_scores(critic, images, ())  # no augmentation: one plain pass, another ranking's input
    assert np.abs(plain - scores).max() > 1e-4
    # drawn one group at a time (blocks of whole groups bound the memory), the same seeds are kept
    sample = loaded.family.operations[0]
    assert sample.run(loaded, _input(n=3, seed=10, best_of=6)).info["seeds"] == kept
    monkeypatch.setattr(sagan, "DRAW_BLOCK", 6)
    assert sample.run(loaded, _input(n=3, seed=10, best_of=6)).info["seeds"] == kept
    # plain samples drawn two at a time are the ones drawn all at once, in order
    whole = sample.run(loaded, _input(n=5, seed=3)).pictures
    monkeypatch.setattr(sagan, "DRAW_BLOCK", 2)
    from engine.families.sagan import sample as sample_module

    drawn: list[int] = []
    monkeypatch.setattr(sample_module, "generate", lambda run, z: drawn.append(len(z)) or generate(run, z))
    blocked = sample.run(loaded, _input(n=5, seed=3)).pictures
    assert drawn == [2, 2, 1] and len(blocked) == 5 and np.abs(whole[0].rgb - whole[1].rgb).max() > 0.05
    for a, b in zip(whole, blocked, strict=True):
        np.testing.assert_allclose(a.rgb, b.rgb, atol=1e-6)


def test_interpolation_runs_from_one_seed_to_the_other_as_frames_or_a_gif(model, tmp_path):
    loaded = families.load(model, "cpu", "torch")
    ends = {}
    for seed in (5, 9):
        ends[seed] = loaded.family.operations[0].run(loaded, _input(n=1, seed=seed)).pictures[0]
    proc = engine("interpolate", model, "--from-seed", "5", "--to-seed", "9", "--frames", "4", "--out",
                  tmp_path / "walk.gif", "--fps", "20", "--width", "32", "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    gif = Image.open(tmp_path / "walk.gif")
    durations = []
    for i in range(gif.n_frames):  # Pillow merges equal neighbouring frames, adding their durations
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert gif.size == (32, 32) and sum(durations) == 4 * 50 and gif.info["loop"] == 0
    proc = engine("interpolate", model, "--from-seed", "5", "--to-seed", "9", "--frames", "4", "--out",
                  tmp_path / "frames", "--backend", "torch", "--json")  # fmt: skip
    frames = [_rgba(Path(f)) for f in result(proc)["files"]]
    assert len(frames) == 4
    for frame, seed in ((frames[0], 5), (frames[-1], 9)):
        own = np.dstack([np.rint(ends[seed].rgb[..., ::-1] * 255), ends[seed].alpha]).astype(int)
        assert np.abs(frame.astype(int) - own).max() <= 1
    steps = [np.abs(frames[i + 1].astype(int) - frames[i]).mean() for i in range(3)]
    assert all(s > 0 for s in steps)


def _input(**params):
    from engine.operations import OperationInput

    return OperationInput(params={"width": None, "height": None, "best_of": 1, **params})


def test_the_exported_graph_draws_what_torch_draws(model, tmp_path):
    proc = engine("export", model, "--out", tmp_path / "g.onnx", "--json")
    assert proc.returncode == 0, proc.stderr
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    loaded = families.load(model, "cpu", "torch")
    z_dim = loaded.model["config"].z_dim
    latents = np.random.default_rng(0).standard_normal((3, z_dim)).astype(np.float32)
    (ours,) = session.run(None, {"latent": latents})
    with torch.no_grad():
        ref = loaded.model["generator"](torch.from_numpy(latents)).numpy()
    assert ours.shape == (3, 4, SIZE, SIZE)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_a_cancelled_run_resumes_to_the_same_model(icons, tmp_path):
    from safetensors.torch import load_file

    from engine.families.sagan import Options

    family = families.get("sagan")
    options = Options(preset="tiny", seed=3, iters=4)
    device = torch.device("cpu")
    family.train(TrainRun("set", TrainData(folders=(icons,)), options, tmp_path / "whole", device))
    cancel = threading.Event()
    seen: list = []

    def progress(event) -> None:
        seen.append(event)
        if len(seen) == 2:
            cancel.set()  # after the second step

    run = TrainRun("set", TrainData(folders=(icons,)), options, tmp_path / "cut", device, progress, cancel)
    with pytest.raises(CancelledError, match=f"engine train --resume {tmp_path / 'cut'}"):
        family.train(run)
    assert json.loads((tmp_path / "cut" / "checkpoint" / "family.json").read_text()) == {"family": "sagan"}
    # stopped after the last iteration, while the critic is trained against the sampler (calibration)
    last = threading.Event()

    def at_the_end(event) -> None:
        if event.iteration == event.iters:
            last.set()

    run = TrainRun("set", TrainData(folders=(icons,)), options, tmp_path / "end", device, at_the_end, last)
    with pytest.raises(CancelledError, match="engine train --resume"):
        family.train(run)
    assert not (tmp_path / "end" / "model.json").exists()
    assert families.read_checkpoint_state(tmp_path / "end", device)["iteration"] == 4  # the loop's end
    for name in ("cut", "end"):
        proc = engine("train", "--resume", tmp_path / name, "--json")
        assert proc.returncode == 0 and result(proc)["family"] == "sagan", proc.stderr
        for weights in ("generator.safetensors", "critic.safetensors"):
            whole, resumed = load_file(tmp_path / "whole" / weights), load_file(tmp_path / name / weights)
            for key in whole:
                torch.testing.assert_close(resumed[key], whole[key], rtol=1e-4, atol=1e-5)


def test_the_ramped_moving_average_forgets_early_weights_sooner_and_resumes():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from engine.families.sagan.training import moving_average

    net = torch.nn.Linear(1, 1, bias=False)
    ramped = AveragedModel(net, multi_avg_fn=moving_average(0.99, 0.5), use_buffers=True)
    plain = AveragedModel(net, multi_avg_fn=moving_average(0.99), use_buffers=True)
    torchs = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.99), use_buffers=True)
    expected = 1.0
    for t in range(1, 41):
        net.weight.data.fill_(float(t))
        for average in (ramped, plain, torchs):
            average.update_parameters(net)
        if t > 1:  # the half-life is half the steps so far, until 0.99's (69 steps) is shorter
            rate = min(0.99, 0.5 ** (1 / (0.5 * t)))
            expected = rate * expected + (1 - rate) * t
        if t == 20:
            resumed = AveragedModel(net, multi_avg_fn=moving_average(0.99, 0.5), use_buffers=True)
            resumed.load_state_dict(ramped.state_dict())
        elif t > 20:
            resumed.update_parameters(net)
    weight, plain_weight = (float(a.module.weight.detach()) for a in (ramped, plain))
    assert weight == pytest.approx(expected, rel=1e-5)
    assert float(resumed.module.weight.detach()) == pytest.approx(expected, rel=1e-5)
    assert plain_weight == pytest.approx(float(torchs.module.weight.detach()), rel=1e-6)
    assert weight > plain_weight + 10, (weight, plain_weight)  # the first weights weigh less


def test_r1_is_the_squared_gradient_at_the_real_images_every_nth_critic_step(icons, tmp_path):
    from engine.families.sagan.config import PRESETS
    from engine.families.sagan.training import Trainer

    images = torch.rand(3, 4, 8, 8, requires_grad=True)
    weights = torch.randn(4, 8, 8)
    scores = (images * weights).sum(dim=(1, 2, 3)) ** 2 / 2  # gradient: (images . weights) times weights
    roots = (images * weights).sum(dim=(1, 2, 3)).detach()
    expected = float((roots**2).mean() * weights.square().sum())
    assert float(Trainer._gradient_penalty(scores, images).detach()) == pytest.approx(expected, rel=1e-5)
    # in training: the critic's step differs from one without R1 only at every r1_every-th iteration
    device = torch.device("cpu")
    plain = dataclasses.replace(PRESETS["tiny"], lecam=0.0)
    trainers = [
        Trainer(dataclasses.replace(plain, r1=r1, r1_every=2), icons, tmp_path / str(r1), device, None, None)
        for r1 in (0.0, 50.0)
    ]
    # (the calibration's steps, regularise=False, never take it)
    for iteration, differs, regularise in ((1, False, True), (2, False, False), (2, True, True)):
        critics = []
        for trainer in trainers:
            trainer.iteration = iteration
            trainer.rng.manual_seed(iteration)
            trainer._critic_step(lambda t=trainer: t.g(t._latents()), regularise)
            critics.append(trainer.d.state_dict())
        moved = max(float((critics[0][k] - critics[1][k]).abs().max()) for k in critics[0])
        assert (moved > 1e-6) == differs, (iteration, moved)  # until R1 applies, the two stay the same


def test_calibration_trains_only_the_stored_critic(icons, tmp_path):
    from safetensors.torch import load_file

    from engine.families.sagan.config import PRESETS
    from engine.families.sagan.training import train

    device = torch.device("cpu")
    for steps in (0, 3):
        config = dataclasses.replace(PRESETS["tiny"], calibrate=steps)
        train(config, icons, tmp_path / str(steps), device)
    before, after = (load_file(tmp_path / name / "critic.safetensors") for name in ("0", "3"))
    moved = max(float((before[k] - after[k]).abs().max()) for k in before)
    # three more critic steps at a tenth of its rate: 4.7e-4 when written; at its full rate, 4.7e-3
    assert 1e-7 < moved < 1.5e-3, moved
    g0, g3 = (load_file(tmp_path / name / "generator.safetensors") for name in ("0", "3"))
    for key in g0:
        torch.testing.assert_close(g3[key], g0[key], rtol=0, atol=0)


def test_lecam_holds_each_side_near_the_other_sides_moving_mean_and_resumes_with_it(icons, tmp_path):
    from safetensors.torch import load_file

    from engine.families.sagan.config import PRESETS
    from engine.families.sagan.training import LECAM_DECAY, Trainer, train

    device = torch.device("cpu")
    config = dataclasses.replace(PRESETS["tiny"], lecam=0.3, lecam_start=2)
    trainer = Trainer(config, icons, tmp_path / "unit", device, None, None)
    # for the first lecam_start iterations the moving means only follow the scores, and there is no term
    following = ((0, [2.0, 0.0], [-1.0, 1.0], (1.0, 0.0)), (1, [4.0, 0.0], [0.0, 0.0], (2.0, 0.0)))
    for iteration, real, fake, means in following:
        trainer.iteration = iteration
        assert float(trainer._lecam(torch.tensor(real), torch.tensor(fake))) == 0.0
        assert trainer.anchors == means
    trainer.iteration = 2
    reg = trainer._lecam(torch.tensor([3.0, 3.0]), torch.tensor([-3.0, -3.0]))
    real_mean, fake_mean = LECAM_DECAY * 2 + (1 - LECAM_DECAY) * 3, LECAM_DECAY * 0 + (1 - LECAM_DECAY) * -3
    assert trainer.anchors == pytest.approx((real_mean, fake_mean))  # (2.01, -0.03): updated first, then
    assert float(reg) == pytest.approx((3 - fake_mean) ** 2 + (real_mean + 3) ** 2)  # 3.03^2 + 5.01^2
    trainer.checkpoint()
    state = families.read_checkpoint_state(tmp_path / "unit", device)
    again = Trainer(config, icons, tmp_path / "unit", device, None, None)
    again.restore(state)
    assert again.anchors == trainer.anchors
    del state["lecam_anchors"]  # a checkpoint from before LeCam: the means start again
    again.restore(state)
    assert again.anchors is None
    # and it is in the critic's loss: a run with it trains another critic, where two runs without it match
    for name, weight in (("off", 0.0), ("off2", 0.0), ("on", 10.0)):
        train(dataclasses.replace(PRESETS["tiny"], lecam=weight), icons, tmp_path / name, device)
    off, off2, on = (load_file(tmp_path / name / "critic.safetensors") for name in ("off", "off2", "on"))
    assert max(float((off[k] - off2[k]).abs().max()) for k in off) < 1e-6
    assert max(float((off[k] - on[k]).abs().max()) for k in off) > 1e-4


def test_the_critics_decoder_learns_to_draw_the_real_images_back_and_resumes(icons, tmp_path):
    """d_recon (FastGAN's self-supervised critic): a decoder draws each real image back at half size from
    the critic's 8 x 8 features; it learns to (its error falls), it is checkpointed and restored, it changes
    the critic's training, and the stored critic is the plain one."""
    import torch.nn.functional as F
    from safetensors.torch import load_file

    from engine.families.sagan.config import PRESETS
    from engine.families.sagan.networks import Critic, Decoder
    from engine.families.sagan.training import Trainer, train

    device = torch.device("cpu")
    for size, width in ((64, 16), (128, 32)):  # the critic's width at 8 x 8: 4d at 64 px, 8d at 128
        critic = Critic(4, size, 4).eval()
        image = torch.randn(2, 4, size, size)
        scores, features = critic.scores_and_features(image)
        torch.testing.assert_close(scores, critic(image))
        assert features.shape == (2, width, 8, 8) and critic.features_width == width
        assert Decoder(width, 4, size, 4)(features).shape == (2, 4, size // 2, size // 2)

    config = dataclasses.replace(PRESETS["tiny"], d_recon=1.0, augment="", flip=False)
    trainer = Trainer(config, icons, tmp_path / "unit", device, None, None)
    assert trainer.decoder is not None

    def error() -> float:
        with torch.no_grad():
            trainer.decoder.eval()
            drawn = trainer.decoder(trainer.d.scores_and_features(trainer.images)[1])
            trainer.decoder.train()
            return float(F.mse_loss(drawn, F.adaptive_avg_pool2d(trainer.images, 32)))

    before = error()
    for _ in range(60):
        trainer._critic_step(lambda: trainer.g(trainer._latents()))
    assert error() < 0.5 * before, (before, error())
    trainer.checkpoint()
    again = Trainer(config, icons, tmp_path / "unit", device, None, None)
    again.restore(families.read_checkpoint_state(tmp_path / "unit", device))
    for key, value in trainer.decoder.state_dict().items():
        torch.testing.assert_close(again.decoder.state_dict()[key], value, rtol=0, atol=0)

    for name, weight in (("off", 0.0), ("on", 10.0)):
        train(dataclasses.replace(PRESETS["tiny"], d_recon=weight), icons, tmp_path / name, device)
    off, on = (load_file(tmp_path / name / "critic.safetensors") for name in ("off", "on"))
    assert off.keys() == on.keys()  # the decoder is not stored
    assert max(float((off[k] - on[k]).abs().max()) for k in off) > 1e-4


def test_pixel_norm_draws_each_image_alone_and_exports(icons, tmp_path):
    """g_norm="pixel": no BatchNorm in the generator (nothing ties a mini-batch's images together), each
    position's features scaled to unit mean square; the stored model and its ONNX graph draw the same."""
    from engine.families.sagan.config import PRESETS
    from engine.families.sagan.networks import Generator, PixelNorm
    from engine.families.sagan.training import train

    out = train(
        dataclasses.replace(PRESETS["tiny"], g_norm="pixel"), icons, tmp_path / "m", torch.device("cpu")
    )
    assert json.loads((out / "model.json").read_text())["model"]["g_norm"] == "pixel"
    loaded = families.load(out, "cpu", "torch")
    generator = loaded.model["generator"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in generator.modules())
    assert len([m for m in generator.modules() if isinstance(m, PixelNorm)]) == 4
    x = torch.randn(2, 8, 3, 3) * 5
    np.testing.assert_allclose(PixelNorm()(x).square().mean(dim=1).numpy(), 1.0, rtol=1e-4)
    latents = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32))
    for norm, apart in (("pixel", False), ("batch", True)):  # in training mode (no spectral norm: it moves)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            training = Generator(8, 4, 64, 4, upsample="resize", norm=norm).train()
            together, alone = training(latents).numpy(), training(latents[1:2]).numpy()
        assert (np.abs(alone[0] - together[1]).max() > 1e-3) == apart, norm
    onnx = families.load(out, "cpu", "onnxruntime")
    ours = [onnx.family.operations[0].run(onnx, _input(n=1, seed=s)).pictures[0].rgb for s in (3, 4)]
    ref = [loaded.family.operations[0].run(loaded, _input(n=1, seed=s)).pictures[0].rgb for s in (3, 4)]
    for a, b in zip(ours, ref, strict=True):
        assert np.abs(a - b).max() < 1e-3
    assert np.abs(ours[0] - ours[1]).max() > 0.05  # two seeds, two images


def test_models_stored_before_the_norm_option_load_with_batchnorm(model, tmp_path):
    copy = tmp_path / "old"
    shutil.copytree(model, copy)
    meta = json.loads((copy / "model.json").read_text())
    del meta["model"]["g_norm"]
    (copy / "model.json").write_text(json.dumps(meta))
    generator = families.load(copy, "cpu", "torch").model["generator"]
    assert len([m for m in generator.modules() if isinstance(m, torch.nn.BatchNorm2d)]) == 4


def test_the_export_is_kept_when_only_training_settings_differ(model, tmp_path):
    """A model stored before a training setting was added (d_recon) keeps its ONNX file: only the
    generator's shape and weights make the export stale (each such field once re-exported every model)."""
    copy = tmp_path / "old"
    shutil.copytree(model, copy)
    families.load(copy, "cpu", "onnxruntime")  # exports on first use
    onnx_file = copy / "generator.onnx"
    written = onnx_file.stat().st_mtime_ns
    meta = json.loads((copy / "model.json").read_text())
    del meta["model"]["d_recon"]  # as stored before it existed
    meta["model"]["iters"] += 1
    (copy / "model.json").write_text(json.dumps(meta))
    families.load(copy, "cpu", "onnxruntime")
    assert onnx_file.stat().st_mtime_ns == written


def test_mixed_sizes_and_modes_are_fitted(tmp_path, shared_images):
    """Grey, 16-bit, palette, opaque and cut-out images of any size: all fitted, none refused."""
    from engine.families.sagan.data import load_set

    photo = cv2.imread(str(shared_images / "generation" / "zebra.png"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(8):
        h, w = 40 + 30 * i, 200 - 15 * i
        image = cv2.resize(photo, (w, h))
        if i == 0:
            cv2.imwrite(str(folder / "grey.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
        elif i == 1:
            cv2.imwrite(str(folder / "deep.png"), image.astype(np.uint16) * 257)
        elif i == 2:
            Image.fromarray(image[..., ::-1]).convert("P").save(folder / "palette.png")
        elif i == 3:
            rgba = np.dstack([image, np.zeros((h, w), np.uint8)])
            rgba[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 3] = 255  # a cut-out in the middle
            cv2.imwrite(str(folder / "cutout.png"), rgba)
        else:
            cv2.imwrite(str(folder / f"photo{i}.jpg"), image)
    images, files = load_set(folder, SIZE)
    assert images.shape == (8, 4, SIZE, SIZE) and len(files) == 8  # one cut-out: the set keeps alpha
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    cut = images[[f.name for f in files].index("cutout.png")]
    assert float(cut[3, 0, 0]) == -1.0 and float(cut[3, SIZE // 2, SIZE // 2]) == 1.0
    assert float(cut[:3, 0, 0].max()) == -1.0  # transparent: premultiplied colour is 0
    grey = images[[f.name for f in files].index("grey.png")]
    assert torch.equal(grey[0], grey[1])
    (folder / "cutout.png").unlink()
    cv2.imwrite(str(folder / "photo9.jpg"), photo)
    images, _ = load_set(folder, SIZE)
    assert images.shape[1] == 3  # no transparency anywhere: RGB


def test_bad_inputs_get_one_line_each(model, icons, tmp_path, shared_images):
    empty, three = tmp_path / "empty", tmp_path / "three"
    empty.mkdir()
    three.mkdir()
    for path in sorted(icons.iterdir())[:3]:
        (three / path.name).write_bytes(path.read_bytes())
    (three / "notes.txt").write_text("not an image")
    image = shared_images / "generation" / "zebra.png"
    old = tmp_path / "old"  # a model from before critics were kept
    shutil.copytree(model, old)
    (old / "critic.safetensors").unlink()
    broken = tmp_path / "broken"  # a critic file cut short
    shutil.copytree(model, broken)
    (broken / "critic.safetensors").write_bytes((model / "critic.safetensors").read_bytes()[:100])
    consingan_model = Path(__file__).parent / "data" / "model_format_1"
    train = ("train", "--family", "sagan", "--out", tmp_path / "n", "--preset", "tiny")
    cases = {
        (*train, "--images", empty): f"--images {empty} has no images (PNG, JPEG",
        (*train, "--images", three): f"--images {three} has 3 images; a set generator needs at least 8",
        (*train, "--images", image): "is not a folder of images",
        (*train, "--images", icons, "--size", "96"): "--size: must be 64 or 128 (got 96)",
        (*train[:-2], image): "give --images DIR",
        ("sample", consingan_model, "--out", tmp_path / "s", "--from-seed", "1"): "unrecognized arguments",
        ("interpolate", consingan_model, "--out", tmp_path / "s", "--frames", "3"):
            "is a ConSinGAN model for harmonization, which cannot interpolate",
        ("interpolate", model, "--out", tmp_path / "s.gif", "--frames", "1"): "--frames: must be between 2",
        ("interpolate", model, "--out", tmp_path / "s.avi"): "writes an animated .gif, .webp or .mp4, or its",
        ("sample", model, "--out", tmp_path / "s", "--width", "0"): "--width: must be between 1",
        ("sample", model, "--out", tmp_path / "s", "--best-of", "0"): "--best-of: must be between 1",
        ("sample", old, "--out", tmp_path / "s", "--best-of", "2"):
            f"{old} keeps no critic (trained before 2026-12-07), so it cannot rank samples: set best of to 1",
        ("sample", broken, "--out", tmp_path / "s", "--best-of", "2"):
            f"model {broken} is damaged (critic.safetensors: ",
        ("restyle", model, "--image", image, "--out", tmp_path / "x.png"):
            "is a Set generator (SAGAN) model, which cannot restyle; it can: export, interpolate, sample",
    }  # fmt: skip
    for (args, words), proc in zip(cases.items(), run_engines(*cases), strict=True):
        assert proc.returncode == 2 and words in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not any((tmp_path / name).exists() for name in ("n", "s", "s.gif", "s.avi"))
    from engine.families import sagan

    assert sagan.critic(families.load(old, "cpu", "torch")) is None
    for unranked in (old, broken):  # both still draw seeds as they are: the critic is read for --best-of only
        proc = engine("sample", unranked, "--out", tmp_path / unranked.name / "drawn", "--n", "2", "--json")
        assert proc.returncode == 0 and result(proc)["seeds"] == [0, 1], proc.stderr
        assert len(list((tmp_path / unranked.name / "drawn").glob("sample_*.png"))) == 2


def test_too_few_images_is_refused_before_any_work(tmp_path):
    from engine.families.sagan.data import load_set

    with pytest.raises(BadInputError, match="is not a folder of images"):
        load_set(tmp_path / "missing", SIZE)


def test_the_daemon_trains_on_a_folder_and_draws_seeded_samples(icons, tmp_path):
    from serve_helpers import Daemon

    from editor_bridge.protocol import ApplyRequest, TrainRequest

    daemon = Daemon(tmp_path / "home").wait_ready()
    try:
        with daemon.client(timeout=120) as client:
            train = TrainRequest(family="sagan", task="set", folders=[str(icons)], options={"preset": "tiny"})
            trained = client.run_job(train, timeout=300).content.model
            assert (trained.family, trained.task) == ("sagan", "set")
            request = ApplyRequest(operation="sample", model_id=trained.model_id, params={"n": 2, "seed": 3})
            reply = client.run_job(request, [])
            images = [np.asarray(reply.image(d)) for d in reply.content.images]
            assert [i.shape for i in images] == [(SIZE, SIZE, 4)] * 2
            assert reply.content.job_id is None  # a stored model: answered at once
            assert reply.content.seeds == [3, 4]  # the seed that draws each image again
            params = {"n": 1, "seed": 3, "best_of": 3}
            best = client.run_job(ApplyRequest(operation="sample", model_id=trained.model_id, params=params))
    finally:
        daemon.stop()
    loaded = families.load(next((tmp_path / "home" / "models").iterdir()), "cpu", "torch")
    own = loaded.family.operations[0].run(loaded, _input(n=1, seed=4)).pictures[0]
    rgba = np.dstack([np.rint(own.rgb * 255), own.alpha]).astype(int)
    second = images[1].astype(int)
    if reply.content.images[1].channel_order.value.startswith("BGR"):
        second = second[..., [2, 1, 0, 3]]
    assert np.abs(second - rgba).max() <= 1  # sample 2 of seed 3 is seed 4
    kept = loaded.family.operations[0].run(loaded, _input(n=1, seed=3, best_of=3)).info["seeds"]
    assert best.content.seeds == kept and kept[0] in (3, 4, 5)  # the seed kept, for the layer's name


def test_128_px_is_one_more_layer_each_way(icons, tmp_path):
    from engine.families.sagan import Options
    from engine.families.sagan.networks import Critic, Generator

    g, d = Generator(8, 4, 128, 4), Critic(4, 128, 4)
    assert len([m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]) == 6  # 5 at 64 px
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (4, 4)]
    assert len(convs) == 6
    options = Options(preset="tiny", size=128, iters=1)
    run = TrainRun("set", TrainData(folders=(icons,)), options, tmp_path / "m", torch.device("cpu"))
    loaded = families.load(families.get("sagan").train(run), "cpu", "onnxruntime")
    picture = loaded.family.operations[0].run(loaded, _input(n=1, seed=0)).pictures[0]
    assert picture.rgb.shape == (128, 128, 3) and picture.alpha.shape == (128, 128)
