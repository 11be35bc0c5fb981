"""ConSinGAN's animation task: training from fixed noise, the random walk, and `engine animate`'s files."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.errors import IncompatibleModelError
from engine.families.consingan import apply, store


@pytest.fixture(scope="module")
def model(tiny_models):
    return store.load_model(tiny_models["animation"])


def test_the_coarsest_stage_reconstructs_from_noise_not_the_image(model, tiny_models):
    z0 = model.fixed_noise[0]
    assert z0.shape[1] == 3
    # a generation model's fixed input at stage 0 is the image (values near the image's); this one is
    # standard normal noise
    assert abs(float(z0.mean())) < 0.2 and 0.8 < float(z0.std()) < 1.2
    generation = store.load_model(tiny_models["generation"])
    assert float(generation.fixed_noise[0].std()) < 0.8


def test_the_walk_moves_smoothly_repeats_by_seed_and_weak_moves_less(model):
    frames = np.stack(apply.animate(model, frames=30, motion="strong", seed=3))
    assert frames.shape == (30, *model.shapes[-1], 3) and np.isfinite(frames).all()
    assert frames.min() >= 0 and frames.max() <= 1
    step = np.abs(np.diff(frames, axis=0)).mean()
    apart = np.abs(frames[10:] - frames[:-10]).mean()
    assert 0 < step < apart, (step, apart)  # neighbours are closer than frames 10 apart: motion, not flicker
    again = np.stack(apply.animate(model, frames=30, motion="strong", seed=3))
    assert np.array_equal(frames, again)
    other = np.stack(apply.animate(model, frames=30, motion="strong", seed=4))
    assert not np.array_equal(frames, other)
    weak = np.stack(apply.animate(model, frames=30, motion="weak", seed=3))
    assert weak.std(axis=0).mean() < frames.std(axis=0).mean()


def test_animate_needs_an_animation_model(tiny_models):
    with pytest.raises(IncompatibleModelError, match="--mode animation"):
        apply.animate(store.load_model(tiny_models["generation"]), frames=2)


def test_cli_writes_gif_mp4_and_frames(tiny_models, tmp_path, capsys):
    directory = tiny_models["animation"]
    h, w = store.load_model(directory).shapes[-1]
    base = ["animate", str(directory), "--frames", "6", "--backend", "torch", "--fps", "5"]
    assert main([*base, "--out", str(tmp_path / "clip.gif")]) == 0
    gif = Image.open(tmp_path / "clip.gif")
    assert gif.n_frames == 6 and gif.size == (w, h) and gif.info["duration"] == 200
    assert main([*base, "--out", str(tmp_path / "clip.mp4")]) == 0
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 5.0
    assert len(decoded) == 6 and decoded[0].shape[:2] == (h + h % 2, w + w % 2)
    assert main([*base, "--out", str(tmp_path / "frames")]) == 0
    written = sorted(p.name for p in (tmp_path / "frames").iterdir())
    assert written == [f"animate_{i:03d}.png" for i in range(6)]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "clip.avi")]) != 0
    assert "writes an animated .gif, .webp or .mp4" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: a one-line usage error naming the choices
        main([*base, "--out", str(tmp_path / "c.gif"), "--motion", "wild"])
    assert "'strong', 'medium', 'weak'" in capsys.readouterr().err and not (tmp_path / "c.gif").exists()
