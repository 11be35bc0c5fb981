"""SinGAN as a family (issue 23): stage-by-stage training, samples on both backends, paint-to-image,
super-resolution (`engine upscale`), animation, resume, and the one-line refusals."""

from __future__ import annotations

import json
import threading

import cv2
import numpy as np
import pytest
import torch

from engine import families
from engine.cli import main
from engine.errors import BadInputError, CancelledError
from engine.families.singan import Options
from engine.family import TrainData, TrainRun
from engine.imageio import read_image


def shrunk(image: torch.Tensor, shape) -> torch.Tensor:
    """A stage's image as the reference's imresize makes it: antialiased bicubic (a = -0.5)."""
    return torch.nn.functional.interpolate(
        image, size=shape, mode="bicubic", align_corners=False, antialias=True
    ).clamp(-1, 1)


@pytest.fixture(scope="module")
def image(shared_images) -> np.ndarray:
    """A 64 x 48 crop of the zebras: stripes, so a texture the stages must learn."""
    rgb = read_image(shared_images / "generation" / "zebra.png").rgb
    return np.ascontiguousarray(cv2.resize(rgb[60:300, 100:420], (64, 48), interpolation=cv2.INTER_AREA))


def _train(image, task, out, **options):
    family = families.get("singan")
    run = TrainRun(task, TrainData(image=image), Options(preset="tiny", **options), out, torch.device("cpu"))
    return family.train(run)


@pytest.fixture(scope="module")
def generation(image, tmp_path_factory):
    return _train(image, "generation", tmp_path_factory.mktemp("singan") / "generation")


def test_the_pyramid_is_the_references_and_each_stage_passes_an_image(generation, image):
    loaded = families.load(generation, backend="torch")
    model = loaded.model["pyramid"]
    shapes = model.shapes
    assert shapes[-1] == (30, 40)  # tiny: fitted to 40 px
    assert min(shapes[0]) == 16 and len(shapes) == 4  # 0.75 between stages, fitted
    assert model.amps[0] == 1.0 and all(0 < a < 1 for a in model.amps[1:])
    # each stage's noise amplitude is 0.1 x the RMSE of the image at that stage against its reconstruction
    # from the stages below (their fixed noise at the coarsest, none above)
    from engine.families.singan.apply import to_tensor, upsample, walk

    full = to_tensor(image)
    zeros = [torch.zeros(1, 3, h + 10, w + 10) for h, w in shapes]
    for s in range(1, len(shapes)):
        with torch.no_grad():
            below = walk(loaded.runner, shapes[:s], model.amps, torch.zeros(1, 3, *shapes[0]),
                         [model.fixed_noise, *zeros[1:s]])  # fmt: skip
        real = shrunk(full, shapes[s])
        rmse = float(torch.sqrt(torch.mean((real - upsample(below, shapes[s])) ** 2)))
        assert model.amps[s] == pytest.approx(0.1 * rmse, rel=1e-4), s
    # a stage's generator returns an image of its input's size: the image in, plus a residual
    g = model.generators[1]
    previous = torch.zeros(1, 3, *shapes[1])
    out = g(torch.zeros(1, 3, shapes[1][0] + 10, shapes[1][1] + 10), previous)
    assert out.shape == previous.shape
    # the model keeps its training image at the finest stage's size, 16-bit, as ConSinGAN's do (retraining
    # from a stored model and the benchmarks read it)
    from engine.model_dir import load_training_image

    stored = load_training_image(generation)
    finest = shrunk(full, shapes[-1])
    assert stored.shape == (30, 40, 3)
    np.testing.assert_allclose(stored, (finest[0].permute(1, 2, 0).numpy() + 1) / 2, atol=1 / 65535 + 1e-6)


def test_a_seed_is_one_sample_on_either_backend_at_any_size(generation, tmp_path):
    for backend in ("torch", "onnxruntime"):
        args = ["sample", str(generation), "--n", "2", "--seed", "5", "--backend", backend]
        assert main([*args, "--out", str(tmp_path / backend)]) == 0
    torch_0, onnx_0, onnx_1 = (
        cv2.imread(str(tmp_path / b / f"sample_00{i}.png")).astype(int)
        for b, i in (("torch", 0), ("onnxruntime", 0), ("onnxruntime", 1))
    )
    assert torch_0.shape == (30, 40, 3)
    assert np.abs(torch_0 - onnx_0).max() <= 1  # the exported stages draw what torch draws
    assert np.abs(onnx_0 - onnx_1).mean() > 2  # seed 5 and seed 6 differ
    assert (generation / "stages" / "stage_03.onnx").is_file()
    assert (
        main(["sample", str(generation), "--width", "80", "--backend", "torch", "--out", str(tmp_path / "w")])
        == 0
    )
    assert cv2.imread(str(tmp_path / "w" / "sample_000.png")).shape == (60, 80, 3)


def test_paint_to_image_keeps_the_sketchs_layout(generation, tmp_path):
    sketch = np.zeros((120, 160, 3), np.uint8)
    sketch[:, :80] = (40, 40, 220)  # red left half (BGR), blue right half
    sketch[:, 80:] = (220, 60, 40)
    cv2.imwrite(str(tmp_path / "sketch.png"), sketch)
    out = tmp_path / "painted.png"
    args = ["paint2image", str(generation), "--image", str(tmp_path / "sketch.png"), "--backend", "torch"]
    assert main([*args, "--out", str(out), "--start-stage", "1"]) == 0
    painted = cv2.imread(str(out)).astype(float)
    assert painted.shape == sketch.shape  # written at the sketch's size
    left, right = painted[:, :70].mean((0, 1)), painted[:, 90:].mean((0, 1))
    assert left[2] > left[0] + 40 and right[0] > right[2] + 40, (left, right)  # red stays left, blue right
    assert painted.std() > 0  # and it is not the sketch resized: the stages drew on it
    assert np.abs(painted - sketch).mean() > 1


def test_paint_to_image_refuses_another_aspect_ratio_and_stages_it_lacks(generation, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "wide.png"), np.zeros((40, 160, 3), np.uint8))
    args = ["paint2image", str(generation), "--backend", "torch", "--out", str(tmp_path / "o.png")]
    assert main([*args, "--image", str(tmp_path / "wide.png")]) != 0
    err = capsys.readouterr().err.strip()
    assert "the sketch is 160x40 px but the model's image is 40x30" in err and len(err.splitlines()) == 1
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((30, 40, 3), np.uint8))
    assert main([*args, "--image", str(tmp_path / "ok.png"), "--start-stage", "4"]) != 0
    assert "--start-stage must be between 1 and 3" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_upscale_trains_once_per_image_and_is_exactly_factor_times_larger(
    image, tmp_path, capsys, monkeypatch
):
    small = (image[:37, :51] * 255).round().astype(np.uint8)[..., ::-1]
    cv2.imwrite(str(tmp_path / "small.png"), small)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def upscale(factor: str, out: str) -> dict:
        args = ["upscale", str(tmp_path / "small.png"), "--factor", factor, "--preset", "tiny"]
        assert main([*args, "--out", str(tmp_path / out), "--json", "--backend", "torch"]) == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    first = upscale("3", "x3.png")
    assert first["ok"] and first["training_seconds"] is not None, first
    assert (first["width"], first["height"]) == (153, 111) and first["passes"] == 5
    assert first["model"].startswith(str(tmp_path / "cache" / "singan-studio" / "upscale"))
    assert cv2.imread(str(tmp_path / "x3.png")).shape == (111, 153, 3)
    again = upscale("2.5", "x25.png")
    assert again["model"] == first["model"] and again["training_seconds"] is None  # kept and reused
    assert (again["width"], again["height"]) == (128, 92)


def test_each_upscale_pass_is_a_bicubic_step_plus_the_finest_stage(image, tmp_path):
    """With the finest stage's residual silenced, upscaling is k bicubic steps of r, the last landing on
    round(factor x size): the passes, their sizes and the noise's amplitude are the walk's, nothing else."""
    import torch.nn.functional as F

    from engine.families.singan.apply import to_image, to_tensor, upscale, upscale_steps

    loaded = families.load(_train(image, "super_resolution", tmp_path / "sr"), backend="torch")
    model = loaded.model["pyramid"]
    tail = model.generators[-1].tail[0]
    torch.nn.init.zeros_(tail.weight)
    torch.nn.init.zeros_(tail.bias)
    assert upscale_steps(4.0) == (6, pytest.approx(2 ** (1 / 3)))  # SinGAN's r = 2^(1/3) for x4
    steps, r = upscale_steps(2.5)
    x = to_tensor(image)
    for k in range(1, steps + 1):
        size = (120, 160) if k == steps else (round(48 * r**k), round(64 * r**k))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    ours = upscale(model, loaded.runner, image, 2.5, seed=0)
    assert ours.shape == (120, 160, 3)
    np.testing.assert_allclose(ours, to_image(x), atol=1e-5)


def test_the_upscaling_stage_also_learns_the_steps_below_in_random_symmetries(image, tmp_path):
    """Super-resolution's finest stage reconstructs its own image and the real image of each of 3 stages
    below it from the one further down, enlarged (without them it redrew its one image and came out
    below bicubic: docs/benchmarks.md), each pair turned by one of the square's 8 symmetries as a whole.
    Generation trains as the reference does."""
    from engine.families.singan.apply import upsample
    from engine.families.singan.config import PRESETS, Task
    from engine.families.singan.training import Trainer

    for preset in PRESETS.values():
        assert (preset(Task.SUPER_RESOLUTION).sr_pairs, preset(Task.SUPER_RESOLUTION).sr_symmetries) == (
            3,
            True,
        )
        assert (preset(Task.GENERATION).sr_pairs, preset(Task.GENERATION).sr_symmetries) == (0, False)
    # at the reference's values they stay out of model.json and so of a kept model's key
    assert "sr_pairs" not in PRESETS["fast"](Task.GENERATION).to_dict()
    assert PRESETS["fast"](Task.SUPER_RESOLUTION).to_dict()["sr_pairs"] == 3
    config = PRESETS["tiny"](Task.SUPER_RESOLUTION)
    trainer = Trainer(config, image, tmp_path / "sr", torch.device("cpu"), None, None)
    last = len(trainer.shapes) - 1
    assert last >= 4
    noise, below = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    pairs = trainer._reconstruction_pairs(last, noise, below, trainer.reals[last])
    assert len(pairs) == 4 and pairs[0] == (noise, below, trainer.reals[last])
    for (z, x, y), j in zip(pairs[1:], range(last - 3, last), strict=True):
        h, w = trainer.shapes[j]
        assert z.shape == (1, 3, h + 10, w + 10) and not z.any()
        torch.testing.assert_close(x, upsample(trainer.reals[j - 1], (h, w)).clamp(-1, 1))
        assert y is trainer.reals[j]
    assert len(trainer._reconstruction_pairs(last - 1, noise, below, trainer.reals[last - 1])) == 1
    generation = Trainer(
        PRESETS["tiny"](Task.GENERATION), image, tmp_path / "g", torch.device("cpu"), None, None
    )
    last_g = len(generation.shapes) - 1
    assert len(generation._reconstruction_pairs(last_g, noise, below, generation.reals[last_g])) == 1

    square = torch.arange(16.0).reshape(1, 1, 4, 4)
    seen = set()
    for _ in range(200):
        a, b, c = trainer._symmetry((square, square + 100, square + 200))
        torch.testing.assert_close(b, a + 100)  # one symmetry for the whole pair
        torch.testing.assert_close(c, a + 200)
        seen.add(tuple(a.flatten().tolist()))
    assert len(seen) == 8


def test_an_image_larger_than_the_preset_learns_its_piece_with_the_most_detail(image, tmp_path):
    """Super-resolution learns an image at its own scale: one over max_size px (tiny: 64) trains on the
    window of that size with the most detail, and the model upscales the whole image."""
    from engine.families.singan.apply import upscale
    from engine.model_dir import load_training_image

    big = np.full((60, 150, 3), 0.5, np.float32)  # flat grey, the zebra's stripes on the right
    big[6:54, 80:144] = image
    model_dir = _train(big, "super_resolution", tmp_path / "big")
    stored = load_training_image(model_dir)
    assert stored.shape == (60, 64, 3)
    # the window on the grid of 5 x 5 with the most of the stripes in it
    np.testing.assert_allclose(stored, big[:, 86:150], atol=1 / 65535 + 1e-6)
    loaded = families.load(model_dir, backend="torch")
    assert upscale(loaded.model["pyramid"], loaded.runner, big, 2.0, 0).shape == (120, 300, 3)


def test_upscale_strength_keeps_that_share_of_each_passs_change(image, tmp_path, capsys):
    """strength 0: bicubic steps alone; 1: the stage's whole change (the reference); in between, that share
    of it (one pass: exactly between the two). Out of [0, 1]: a one-line error."""
    import torch.nn.functional as F

    from engine.families.singan.apply import to_image, to_tensor, upscale

    loaded = families.load(_train(image, "super_resolution", tmp_path / "sr"), backend="torch")
    model, run = loaded.model["pyramid"], loaded.runner
    r = 2 ** (1 / 3)  # one pass
    full, none, half = (upscale(model, run, image, r, 7, strength=s) for s in (1.0, 0.0, 0.5))
    shape = full.shape[:2]
    bicubic = to_image(F.interpolate(to_tensor(image), size=shape, mode="bicubic", align_corners=False))
    np.testing.assert_allclose(none, bicubic, atol=1e-6)
    assert np.abs(full - none).mean() > 1e-3
    inside = (full > 0) & (full < 1) & (none > 0) & (none < 1)  # (the image is clipped to [0, 1] after)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(half[inside], ((full + none) / 2)[inside], atol=1e-5)
    with pytest.raises(BadInputError, match="--strength must be between 0 and 1"):
        upscale(model, run, image, 2.0, 0, strength=1.5)
    src = tmp_path / "small.png"
    cv2.imwrite(str(src), (image[..., ::-1] * 255).astype(np.uint8))
    # `engine upscale --strength 0` trains nothing: the bicubic steps, as a model's at strength 0
    capsys.readouterr()
    assert main(["upscale", str(src), "--factor", "2", "--strength", "0", "--out", str(tmp_path / "b.png"),
                 "--json"]) == 0  # fmt: skip
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert done["model"] is None and done["training_seconds"] is None and done["passes"] == 3
    written = cv2.imread(str(tmp_path / "b.png"))[..., ::-1].astype(np.float32) / 255
    steps = upscale(model, run, cv2.imread(str(src))[..., ::-1].astype(np.float32) / 255, 2.0, 0, strength=0)
    assert np.abs(written - steps).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        main(["upscale", str(src), "--factor", "2", "--strength", "2", "--out", str(tmp_path / "o.png")])
    assert refused.value.code == 2
    assert "--strength: must be between 0 and 1 (got 2)" in capsys.readouterr().err


def test_an_upscaling_pass_in_tiles_is_the_pass_in_one_piece(image, tmp_path):
    """A pass runs the finest stage tile by tile (bounded memory at any size): the same pixels, at the
    tiles' seams and the image's borders too, as one run over the whole image."""
    from engine.families.singan.apply import draw_noise, run_tiled, to_tensor

    loaded = families.load(_train(image, "super_resolution", tmp_path / "sr"), backend="torch")
    model, finest = loaded.model["pyramid"], len(loaded.model["pyramid"].shapes) - 1
    x = to_tensor(cv2.resize(image, (150, 70), interpolation=cv2.INTER_CUBIC))
    noise = 0.5 * draw_noise(torch.Generator().manual_seed(3), (70, 150), finest, model.task)
    whole = loaded.runner(finest, noise, x)
    tiled = run_tiled(loaded.runner, finest, noise, x, tile=32)  # 3 x 5 tiles, the last ones partial
    assert whole.shape == tiled.shape == (1, 3, 70, 150)
    torch.testing.assert_close(tiled, whole, atol=2e-6, rtol=0)
    assert (whole - x).abs().mean() > 1e-3  # the stage does change the image


def test_upscale_runs_the_finest_stage_once_a_pass_with_its_noise(image, tmp_path):
    from engine.families.singan.apply import upscale, upscale_steps

    model = families.load(_train(image, "super_resolution", tmp_path / "sr"), backend="torch").model[
        "pyramid"
    ]
    seen = []

    def runner(stage, noise, previous):
        seen.append((stage, tuple(previous.shape[2:]), noise))
        return previous

    upscale(model, runner, image, 2.0, seed=1)
    steps, r = upscale_steps(2.0)
    finest, amp = len(model.shapes) - 1, model.amps[-1]
    assert [s for s, _, _ in seen] == [finest] * steps == [finest] * 3
    assert [size for _, size, _ in seen] == [(60, 81), (76, 102), (96, 128)]
    for k, (_, (h, w), noise) in enumerate(seen):
        assert noise.shape == (1, 3, h + 10, w + 10) and not noise[..., :5, :].any()  # a zero border
        inner = noise[..., 5:-5, 5:-5]
        assert float(inner.std()) == pytest.approx(amp, rel=0.1)
        grey = bool((inner[:, 0] == inner[:, 1]).all())
        assert grey == (k == 0)  # grey noise at the first pass, as the reference draws it


def test_every_stage_graph_draws_what_torch_draws_across_widths(image, tmp_path):
    """A pyramid whose stages change width (4 filters, then 8): each width's graph is exported once and
    refilled with every stage's own weights."""
    import dataclasses

    from engine.families.singan import config as singan_config
    from engine.families.singan import training

    config = dataclasses.replace(singan_config.PRESETS["tiny"](singan_config.Task.GENERATION), nfc=4,
                                 max_nfc=8, min_size=12, iters=2)  # fmt: skip
    directory = training.train(config, image, tmp_path / "widths", torch.device("cpu"))
    torch_model = families.load(directory, backend="torch")
    onnx_model = families.load(directory)
    generators = torch_model.model["pyramid"].generators
    assert [g.channels for g in generators] == [4, 4, 4, 4, 8]
    rng = torch.Generator().manual_seed(0)
    for stage, (h, w) in enumerate(torch_model.model["pyramid"].shapes):
        noise, previous = (
            torch.randn(1, 3, h + 10, w + 10, generator=rng),
            torch.randn(1, 3, h, w, generator=rng),
        )
        with torch.no_grad():
            ours, theirs = (
                onnx_model.runner(stage, noise, previous),
                torch_model.runner(stage, noise, previous),
            )
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_upscale_refuses_bad_factors_and_other_models(generation, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "s.png"), np.zeros((30, 40, 3), np.uint8))
    for factor in ("0.5", "17"):
        with pytest.raises(SystemExit):
            main(["upscale", str(tmp_path / "s.png"), "--factor", factor, "--out", str(tmp_path / "o.png")])
        assert "--factor: must be between 1 and 16" in capsys.readouterr().err
    args = ["upscale", str(tmp_path / "s.png"), "--factor", "2", "--out", str(tmp_path / "o.png")]
    assert main([*args, "--model", str(generation)]) != 0
    assert "needs a model trained with --mode super_resolution" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    assert main([*args, "--model", str(tmp_path / "notes")]) != 0
    assert "is neither a model nor empty: give a new or empty folder" in capsys.readouterr().err
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    assert not (tmp_path / "o.png").exists()
    # x1 is the image itself, and trains nothing
    assert (
        main(["upscale", str(tmp_path / "s.png"), "--factor", "1", "--out", str(tmp_path / "same.png")]) == 0
    )
    assert (cv2.imread(str(tmp_path / "same.png")) == 0).all()
    assert not (tmp_path / "o.png").exists()


def test_animation_moves_smoothly_and_a_seed_repeats_it(image, tmp_path):
    from engine.families.singan.apply import TorchRunner, animate

    directory = _train(image, "animation", tmp_path / "animation")
    loaded = families.load(directory, backend="torch")
    model = loaded.model["pyramid"]
    assert isinstance(loaded.runner, TorchRunner)
    frames = np.stack(animate(model, loaded.runner, 24, "strong", 0.9, seed=2))
    assert frames.shape == (24, 30, 40, 3)
    step = np.abs(np.diff(frames, axis=0)).mean()
    apart = np.abs(frames[8:] - frames[:-8]).mean()
    assert 0 < step < apart  # neighbours are closer than frames 8 apart: motion, not flicker
    assert np.array_equal(frames, np.stack(animate(model, loaded.runner, 24, "strong", 0.9, seed=2)))
    assert not np.array_equal(frames, np.stack(animate(model, loaded.runner, 24, "strong", 0.9, seed=3)))


def test_a_cancelled_run_resumes_to_the_same_model(image, tmp_path, capsys):
    from safetensors.torch import load_file

    whole = _train(image, "generation", tmp_path / "whole", seed=4)
    cancel = threading.Event()
    seen: list = []

    def progress(event) -> None:
        seen.append(event)
        if event.stage == 1 and event.iteration == 2:
            cancel.set()

    family = families.get("singan")
    options = Options(preset="tiny", seed=4)
    run = TrainRun(
        "generation", TrainData(image=image), options, tmp_path / "cut", torch.device("cpu"), progress, cancel
    )
    with pytest.raises(CancelledError, match="engine train --resume"):
        family.train(run)
    assert not (tmp_path / "cut" / "model.json").exists()
    assert main(["train", "--resume", str(tmp_path / "cut"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["family"] == "singan"
    a, b = load_file(whole / "generators.safetensors"), load_file(tmp_path / "cut" / "generators.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


def test_bad_inputs_get_one_line_each(generation, image, tmp_path):
    with pytest.raises(BadInputError, match="too small or too thin: its short side must be at least 16 px"):
        _train(image[:10], "generation", tmp_path / "thin")
    wide = np.zeros((20, 400, 3), np.float32)  # fitted to 40 px long, it would be 2 px high
    with pytest.raises(BadInputError, match="once its long side is fitted to 40 px"):
        _train(wide, "generation", tmp_path / "wide")
    from engine.families.singan.apply import upscale

    loaded = families.load(generation, backend="torch")
    with pytest.raises(BadInputError, match="upscale needs one trained with --mode super_resolution"):
        upscale(loaded.model["pyramid"], loaded.runner, image, 2.0, 0)


def test_upscale_gives_a_cut_out_no_dark_fringe(tmp_path):
    """An orange disc on transparent black: the enlarged edge keeps the disc's colour (the transparent
    pixels' black is not learned or enlarged into it), at strength 0 (bicubic steps) and at 1."""
    disc = np.zeros((48, 48, 4), np.uint8)
    cv2.circle(disc, (24, 24), 15, (0, 128, 255, 255), -1)  # B, G, R, A
    src = tmp_path / "disc.png"
    cv2.imwrite(str(src), disc)
    for strength in ("0", "1"):
        out = tmp_path / f"disc{strength}.png"
        args = ["upscale", str(src), "--factor", "2", "--strength", strength, "--preset", "tiny"]
        assert main([*args, "--model", str(tmp_path / "model"), "--out", str(out)]) == 0
        big = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
        assert big.shape == (96, 96, 4)
        edge = (big[..., 3] > 64) & (big[..., 3] < 255)  # the disc's soft rim
        assert edge.sum() > 50
        assert big[edge, 2].min() > 200, (strength, big[edge, 2].min())  # red stays; black would pull it down
