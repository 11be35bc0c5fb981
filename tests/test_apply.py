"""Sampling at any size and harmonization/editing: exactness outside the mask, full resolution, alpha."""

import re

import cv2
import numpy as np
import pytest
import torch

from engine.errors import BadInputError, IncompatibleModelError, ModelDamagedError
from engine.families.consingan import apply, store
from engine.families.consingan.modes import Mode, spec
from engine.families.consingan.pyramid import fit_to_max_size
from engine.imageio import Picture, mask_from_array, read_image, read_mask


def naive_pair(shared_images, scale=1.0):
    picture = read_image(shared_images / "harmonization" / "scream_naive.jpg")
    mask = read_mask(shared_images / "harmonization" / "scream_naive_mask.jpg", picture.shape)
    if scale != 1.0:
        h, w = round(picture.shape[0] * scale), round(picture.shape[1] * scale)
        picture = Picture(cv2.resize(picture.rgb, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1))
        mask = mask_from_array(cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST))
    return picture, mask


@pytest.mark.parametrize("mode", ["generation", "retarget"])
@pytest.mark.parametrize("size", [(40, 100), (100, 40), (64, 64)])
def test_samples_at_any_size(tiny_models, mode, size):
    model = store.load_model(tiny_models[mode])
    h, w = size
    samples = apply.sample(model, n=2, height=h, width=w, seed=3)
    assert [s.shape for s in samples] == [(h, w, 3)] * 2
    assert not np.array_equal(samples[0], samples[1])


def test_sample_refuses_absurd_sizes(tiny_models):
    model = store.load_model(tiny_models["generation"])
    with pytest.raises(BadInputError, match="too small"):
        apply.sample(model, height=2, width=50)
    with pytest.raises(BadInputError, match="MP limit"):
        apply.sample(model, height=20000, width=20000)


def test_sample_refuses_sizes_the_memory_cannot_hold_and_says_which_fits(tiny_models, monkeypatch):
    """Running out of memory on the CPU is no error Python sees: the system kills the process (a daemon
    with it). A sample needing more than is available is refused, with a size that fits, which runs."""
    model = store.load_model(tiny_models["generation"])
    monkeypatch.setenv("ENGINE_MEMORY_GB", "0.02")  # 8 channels: 38 * 8 B per pixel, about 66000 px
    with pytest.raises(BadInputError) as refused:
        apply.sample(model, height=300, width=400)
    message = str(refused.value)
    assert message.startswith("a 400x300 sample needs about 36 MB of memory and 20 MB is available: ")
    width, height = map(int, re.search(r"sample at most about (\d+)x(\d+)", message).groups())
    assert (width, height) == (296, 222)  # the same shape, scaled by sqrt(20 / 36.48)
    assert apply.sample_memory(model, height, width) <= 0.02e9
    assert apply.sample(model, height=height, width=width)[0].shape == (height, width, 3)
    monkeypatch.setenv("ENGINE_MEMORY_GB", "lots")
    with pytest.raises(BadInputError, match="ENGINE_MEMORY_GB='lots' is not a number of gigabytes"):
        apply.sample(model, height=30, width=40)


@pytest.mark.parametrize("mode", ["harmonization", "editing"])
def test_output_equals_input_outside_the_feathered_mask(tiny_models, shared_images, mode):
    model = store.load_model(tiny_models[mode])
    picture, _ = naive_pair(shared_images)
    mask = np.zeros(picture.shape, np.float32)
    mask[:10, :10] = 1  # in a corner: the 48 px model's feathering, scaled to this canvas, is wide
    result = apply.apply_to_selection(model, picture, mask, seed=0)
    soft = apply.feathered_mask(mask, model.shapes[-1], 7 if mode == "harmonization" else 20)
    outside = soft == 0
    assert outside.mean() > 0.05  # editing dilates by 20 model px: a 48 px model reaches far
    np.testing.assert_array_equal(result.rgb[outside], picture.rgb[outside])
    inside = mask > 0
    assert np.abs(result.rgb[inside] - picture.rgb[inside]).mean() > 0.01


def test_feathered_mask_is_the_reference_shape_at_model_size():
    mask = np.zeros((100, 100), np.float32)
    mask[40:60, 40:60] = 1
    soft = apply.feathered_mask(mask, (100, 100), dilation=7)
    assert soft[50, 50] == pytest.approx(1.0) and soft.max() == pytest.approx(1.0)
    assert soft[40, 50] > 0.85  # the selection's edge is kept almost fully thanks to the dilation
    assert soft[50, 40 - 7] == pytest.approx(0.5, abs=0.1)  # the dilated edge is the blur's midpoint
    assert soft[0, 0] == 0 and soft[50, 5] == 0


def test_feathered_mask_keeps_thin_selections_on_large_images():
    mask = np.zeros((2000, 2000), np.float32)
    mask[:, 1000:1003] = 1  # a 3 px line, far thinner than one model pixel
    soft = apply.feathered_mask(mask, (250, 250), dilation=7)
    assert soft[:, 1000:1003].min() > 0.8


def test_full_resolution_keeps_detail_and_size(tiny_models, shared_images):
    model = store.load_model(tiny_models["harmonization"])
    picture, mask = naive_pair(shared_images, scale=4.0)  # about 1000 x 1276
    # Give the pasted object fine detail that the 48 px model cannot represent.
    rng = np.random.default_rng(0)
    picture.rgb[mask > 0] = np.clip(picture.rgb[mask > 0] + rng.normal(0, 0.1, (int(mask.sum()), 3)), 0, 1)
    result = apply.apply_to_selection(model, picture, mask)
    assert result.rgb.shape == picture.rgb.shape

    def high_pass(x):
        return x - cv2.GaussianBlur(x, (0, 0), 2)

    inside = mask > 0
    detail_in, detail_out = high_pass(picture.rgb)[inside], high_pass(result.rgb)[inside]
    correlation = np.corrcoef(detail_in.ravel(), detail_out.ravel())[0, 1]
    assert correlation > 0.9, "the input's fine detail did not survive"
    assert np.abs(result.rgb[inside] - picture.rgb[inside]).mean() > 0.01, "nothing was harmonized"


def test_alpha_and_16_bit_depth_are_kept(tiny_models, shared_images):
    model = store.load_model(tiny_models["harmonization"])
    picture, mask = naive_pair(shared_images)
    alpha = np.full(picture.shape, 40000, np.uint16)
    picture16 = Picture(picture.rgb, alpha, 16)
    result = apply.apply_to_selection(model, picture16, mask)
    assert result.depth == 16 and result.alpha is alpha


def test_mask_of_another_size_is_refused(tiny_models, shared_images):
    model = store.load_model(tiny_models["harmonization"])
    picture, mask = naive_pair(shared_images)
    with pytest.raises(BadInputError, match="must match"):
        apply.apply_to_selection(model, picture, mask[:-1])


def test_generation_models_cannot_harmonize(tiny_models, shared_images):
    picture, mask = naive_pair(shared_images)
    with pytest.raises(IncompatibleModelError, match="--mode harmonization"):
        apply.apply_to_selection(store.load_model(tiny_models["generation"]), picture, mask)


def pasted_square(width: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A blue 'painting' with soft strokes and a striped red square pasted into it."""
    yy, xx = np.mgrid[0:80, 0:width].astype(np.float32)
    rgb = np.stack([0.1 + 0.05 * np.sin(xx / 5), 0.2 + 0.05 * np.cos(yy / 7), 0.8 + 0 * xx], axis=2)
    inside = np.zeros((80, width), bool)
    inside[25:55, 30:70] = True
    stripes = 0.1 * (np.arange(40) // 4 % 2)[None, :, None]
    rgb[25:55, 30:70] = np.array([0.85, 0.1, 0.1]) + stripes
    return rgb.astype(np.float32), inside


def test_surroundings_offset_takes_the_surroundings_colours_and_keeps_the_selections_gradients():
    from engine.families.consingan.blend import surroundings_offset

    rgb, inside = pasted_square()
    offset = surroundings_offset(rgb, inside)
    assert (offset[~inside] == 0).all()
    matched = rgb + offset
    surroundings = rgb[~inside].mean(axis=0)
    assert np.abs(rgb[inside].mean(axis=0) - surroundings).max() > 0.6
    assert np.abs(matched[inside].mean(axis=0) - surroundings).max() < 0.1
    # The stripes (the selection's own gradients) survive: compare the red channel across a stripe edge.
    step_before = rgb[40, 35, 0] - rgb[40, 33, 0]
    step_after = matched[40, 35, 0] - matched[40, 33, 0]
    assert step_before == pytest.approx(0.1, abs=1e-6) and step_after == pytest.approx(0.1, abs=0.02)
    assert not surroundings_offset(rgb, np.zeros_like(inside)).any()  # nothing selected
    assert not surroundings_offset(rgb, np.ones_like(inside)).any()  # nothing around it to match


def test_color_match_moves_hue_and_saturation_first_then_lightness():
    from engine.families.consingan.blend import (
        _BAND,
        _MAX_LIGHTNESS_SHIFT,
        color_match_offset,
        surroundings_offset,
    )

    rgb, inside = pasted_square()
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    poisson = cv2.cvtColor(np.clip(rgb + surroundings_offset(rgb, inside), 0, 1), cv2.COLOR_RGB2Lab)

    def matched(share: float) -> np.ndarray:
        offset = color_match_offset(rgb, inside, share)
        assert (offset[~inside] == 0).all()
        return cv2.cvtColor(np.clip(rgb + offset, 0, 1), cv2.COLOR_RGB2Lab)[inside]

    assert not color_match_offset(rgb, inside, 0.0).any()
    width = round(_BAND * max(inside.shape))
    band = (cv2.dilate(inside.astype(np.uint8), np.ones((2 * width + 1,) * 2, np.uint8)) > 0) & ~inside
    light_change = np.abs(poisson[inside][:, 0] - lab[inside][:, 0]).mean()
    chroma_change = np.linalg.norm(poisson[inside][:, 1:] - lab[inside][:, 1:], axis=1).mean()
    assert light_change > 10 and chroma_change > 50  # the red square is far from the blue painting
    own = lab[inside][:, 0]
    for share, light, chroma in [(0.25, 0.0, 0.5), (0.5, 0.0, 1.0), (0.75, 0.5, 1.0), (1.0, 1.0, 1.0)]:
        moved = matched(share)
        # Lightness: the selection's own light and shade with the surroundings' contrast (the soft blue
        # strokes are less than half as contrasted as the stripes: halved, the limit, at 0.5), then that
        # share of the way to the mean of Poisson's and of that shading moved to the mean lightness of
        # the band around the selection (gamut clipping aside).
        shaded = own.mean() + (own - own.mean()) * 0.5**chroma
        shift = 0.5 * poisson[inside][:, 0] + 0.5 * (shaded - own.mean() + lab[band][:, 0].mean()) - shaded
        # ... its mean by at most 15 L*: here it would be more (the red square is lighter than the blue)
        assert _MAX_LIGHTNESS_SHIFT == 15 and shift.mean() < -15
        expected_light = shaded + light * (shift - shift.mean() - 15)
        assert np.abs(moved[:, 0] - expected_light).mean() < 0.6, share
        # Hue and saturation: that share of the way to Poisson's, which are the surroundings' blue.
        expected_ab = lab[inside][:, 1:] + chroma * (poisson[inside][:, 1:] - lab[inside][:, 1:])
        assert np.linalg.norm(moved[:, 1:] - expected_ab, axis=1).mean() < 0.1 * chroma_change, share


def test_color_match_gives_the_selection_its_surroundings_contrast_and_keeps_its_lightness():
    """A flat paste (faint stripes) in a more contrasted painting: the first half of the colour match
    brings the spread of its lightness to that of the painting around it, about its own mean."""
    from engine.families.consingan.blend import color_match_offset

    yy, xx = np.mgrid[0:80, 0:96].astype(np.float32)
    grey = 0.5 + 0.07 * np.sin(xx / 3 + yy / 5)
    rgb = np.stack([grey * 0.9, grey, grey * 1.1], axis=2)
    inside = np.zeros((80, 96), bool)
    inside[25:55, 30:70] = True
    rgb[25:55, 30:70] = np.array([0.7, 0.3, 0.2]) + 0.06 * (np.arange(40) // 4 % 2)[None, :, None]
    rgb = rgb.astype(np.float32)

    def lightness(share: float) -> np.ndarray:
        offset = color_match_offset(rgb, inside, share)
        return cv2.cvtColor(np.clip(rgb + offset, 0, 1), cv2.COLOR_RGB2Lab)[..., 0][inside]

    painting = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[..., 0]
    band = (cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0) & ~inside
    own, around = lightness(0.0), painting[band].std()
    assert around / own.std() > 1.5  # the painting around is more contrasted than the paste
    half = lightness(0.5)
    assert abs(half.std() - around) < 0.05 * around
    assert abs(half.mean() - own.mean()) < 0.5  # its own mean lightness
    # a quarter of the way: half the change of contrast, geometrically
    assert abs(lightness(0.25).std() - np.sqrt(own.std() * around)) < 0.05 * around


def test_color_match_changes_only_the_selection_and_checks_its_range(tiny_models):
    model = store.load_model(tiny_models["harmonization"])
    rgb, inside = pasted_square(width=240)  # the square at the left, far from the right end
    picture, mask = Picture(rgb), inside.astype(np.float32)
    own = apply.apply_to_selection(model, picture, mask, color_match=0.0)
    half = apply.apply_to_selection(model, picture, mask, color_match=0.5)
    default = apply.apply_to_selection(model, picture, mask)
    np.testing.assert_array_equal(
        default.rgb, apply.apply_to_selection(model, picture, mask, color_match=1).rgb
    )
    model_shape = apply.output_shapes(model, *fit_to_max_size(80, 240, max(model.shapes[-1])))[-1]
    outside = apply.feathered_mask(mask, model_shape, 7) == 0
    assert outside.sum() > 2000
    for result in (own, half, default):
        np.testing.assert_array_equal(result.rgb[outside], rgb[outside])
    # The colour match is carried into the result: 0.5 (hue, saturation and contrast) and the default, 1
    # (lightness too: the square is lighter than the blue, so darker, the colour step by its limit of
    # 15 L*) each give another result.
    # (Which way the tiny model takes a light blue input is its own affair: it paints it the orange of
    # the Scream's sky.)
    lightness = [cv2.cvtColor(r.rgb, cv2.COLOR_RGB2Lab)[..., 0][inside].mean() for r in (half, default)]
    assert lightness[0] - lightness[1] > 3  # darker by more than a just noticeable difference (2.3)
    assert np.abs(half.rgb[inside] - own.rgb[inside]).mean() > 0.05
    assert np.abs(half.rgb[inside] - default.rgb[inside]).mean() > 0.02
    with pytest.raises(BadInputError, match="between 0 and 1"):
        apply.apply_to_selection(model, picture, mask, color_match=1.5)
    for bad in (-0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(BadInputError, match="keep detail must be between 0 and 1"):
            apply.apply_to_selection(model, picture, mask, keep_detail=bad)


def test_color_match_leaves_selections_too_thin_to_solve_for():
    from engine.families.consingan.blend import surroundings_offset

    rgb, _ = pasted_square()
    for box in [(slice(0, 1), slice(0, 1)), (slice(0, 2), slice(0, 2)), (slice(10, 60), slice(40, 42))]:
        inside = np.zeros(rgb.shape[:2], bool)
        inside[box] = True
        assert not surroundings_offset(rgb, inside).any()


@pytest.mark.parametrize("shape", [(243, 600), (517, 389), (199, 523), (301, 777), (3000, 4000)])
def test_feathered_mask_of_the_whole_image_is_one_everywhere(shape):
    h, w = shape
    model_shape = (round(250 * h / max(shape)), round(250 * w / max(shape)))
    soft = apply.feathered_mask(np.ones(shape, np.float32), model_shape, dilation=7)
    np.testing.assert_array_equal(soft, 1.0)


class _NanBackend:
    """A generator whose output has gone non-finite (as damaged weights inside an .onnx file give)."""

    def generate(self, inputs):
        out = torch.zeros(1, 3, *inputs[-1].shape[-2:])
        out[0, :, 2, 3] = float("nan")
        return out


def test_non_finite_output_is_an_error_not_black_pixels(tiny_models, shared_images):
    model = store.load_model(tiny_models["harmonization"])
    picture, mask = naive_pair(shared_images)
    with pytest.raises(ModelDamagedError, match=r"produced non-finite pixels .*train it again"):
        apply.apply_to_selection(model, picture, mask, backend=_NanBackend())
    with pytest.raises(ModelDamagedError, match=str(tiny_models["harmonization"])):
        apply.sample(model, backend=_NanBackend())


def test_harmonization_keeps_the_selections_own_strokes(tiny_models):
    """The generator redraws texture of its own, not a drawing's strokes where they were; the change it
    makes would subtract them. With the selection's own detail kept (the harmonization default), the
    result's fine detail inside the selection follows the input's strokes; without, it does not."""
    model = store.load_model(tiny_models["harmonization"])
    assert spec(Mode.HARMONIZATION).keep_detail == 0.75 and spec(Mode.EDITING).keep_detail == 0.0
    model_shape = model.shapes[-1]
    yy, xx = np.mgrid[0 : model_shape[0], 0 : model_shape[1]].astype(np.float32)
    rgb = np.stack([0.5 + 0.1 * np.sin(xx / 2), 0.4 + 0 * xx, 0.3 + 0.1 * np.cos(yy / 3)], axis=2)
    inside = np.zeros(model_shape, bool)
    inside[10:-10, 8:-8] = True
    strokes = np.where((xx + yy) % 5 < 1.5, -0.25, 0.05).astype(np.float32)  # pencil hatching
    rgb[inside] = (np.array([0.8, 0.75, 0.7]) + strokes[inside][:, None]).clip(0, 1)
    picture, mask = Picture(rgb.astype(np.float32)), inside.astype(np.float32)

    def detail(image: np.ndarray) -> np.ndarray:
        grey = image.mean(axis=2)
        return (grey - cv2.GaussianBlur(grey, (0, 0), 1.0))[inside]

    def follows(result: Picture) -> float:
        return float(np.corrcoef(detail(result.rgb), detail(picture.rgb))[0, 1])

    kept = apply.apply_to_selection(model, picture, mask, keep_detail=1.0)
    erased = apply.apply_to_selection(model, picture, mask, keep_detail=0.0)
    assert follows(kept) > 0.8, follows(kept)
    assert follows(erased) < follows(kept) - 0.2, (follows(erased), follows(kept))
    # The detail is added to the generator's result, not blended: half keeps half the strokes' amplitude.
    half = apply.apply_to_selection(model, picture, mask, keep_detail=0.5)
    gain = np.std(detail(half.rgb) - detail(erased.rgb)) / np.std(detail(kept.rgb) - detail(erased.rgb))
    assert gain == pytest.approx(0.5, abs=0.05)
