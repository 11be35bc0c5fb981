"""Tests for the harmonization and editing augmentations."""

from collections import Counter

import cv2
import numpy as np
import pytest

from engine.families.consingan.augment import (
    COLOUR_TRANSFORMS,
    HarmonizationPlan,
    apply_harmonization_plan,
    augment_for_harmonization,
    draw_harmonization_plan,
    draw_tiles,
    recolour_region,
    shuffle_tiles,
    smooth_region,
)


def _image(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth gradient with some texture, so moved tiles and colour changes are visible."""
    yy, xx = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 40, size=(height, width, 3))
    base = np.stack([xx * 200 / width, yy * 200 / height, (xx + yy) * 100 / (height + width)], axis=-1)
    return (base + noise).astype(np.uint8)


def _smoothing_augment(image, rng):
    return augment_for_harmonization(image, rng, smooth_probability=1.0)


def _recolouring_augment(image, rng):
    return augment_for_harmonization(image, rng, recolour_probability=1.0)


@pytest.mark.parametrize(
    "augment",
    [
        augment_for_harmonization,
        shuffle_tiles,
        smooth_region,
        _smoothing_augment,
        recolour_region,
        _recolouring_augment,
    ],
)
def test_shape_dtype_determinism_and_input_untouched(augment):
    image = _image()
    before = image.copy()
    for seed in range(20):
        a = augment(image, np.random.default_rng(seed))
        b = augment(image, np.random.default_rng(seed))
        assert a.shape == image.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(image, before)
    outputs = [augment(image, np.random.default_rng(seed)).tobytes() for seed in range(10)]
    assert len(set(outputs)) > 5  # different seeds give different augmentations


@pytest.mark.parametrize(
    "augment", [augment_for_harmonization, shuffle_tiles, smooth_region, recolour_region]
)
def test_rejects_non_rgb_uint8(augment):
    with pytest.raises(ValueError):
        augment(np.zeros((10, 10), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError):
        augment(np.zeros((10, 10, 3), np.float32), np.random.default_rng(0))


def test_plan_frequencies_match_the_reference():
    rng = np.random.default_rng(1)
    plans = [draw_harmonization_plan((120, 160, 3), rng) for _ in range(4000)]
    with_holes = sum(bool(p.holes) for p in plans) / len(plans)
    with_colour = sum(p.colour is not None for p in plans) / len(plans)
    assert 0.87 < with_holes < 0.93
    assert 0.22 < with_colour < 0.28
    kinds = Counter(p.colour for p in plans if p.colour)
    assert set(kinds) == set(COLOUR_TRANSFORMS)  # every kind occurs
    # Each of the three grouped branches is 5/16 of the colour draws; hue/saturation/value is 1/16.
    colour_draws = sum(kinds.values())
    assert kinds["hue_saturation_value"] < kinds["invert"] + kinds["sepia"]
    assert abs((kinds["invert"] + kinds["sepia"]) / colour_draws - 5 / 16) < 0.06


def test_holes_scale_with_image_size():
    def mean_hole_area(shape):
        rng = np.random.default_rng(2)
        areas = [
            (y2 - y1) * (x2 - x1)
            for _ in range(300)
            for y1, y2, x1, x2 in draw_harmonization_plan(shape, rng).holes
        ]
        return np.mean(areas) / (shape[0] * shape[1])

    small, large = mean_hole_area((120, 160, 3)), mean_hole_area((480, 640, 3))
    assert small == pytest.approx(large, rel=0.15)


def test_holes_are_filled_with_one_colour():
    image = _image()
    plan = HarmonizationPlan(None, ((10, 40, 20, 50), (100, 130, 150, 170)), (1, 2, 3))
    out = apply_harmonization_plan(image, plan, np.random.default_rng(0))
    assert (out[10:40, 20:50] == (1, 2, 3)).all() and (out[100:120, 150:160] == (1, 2, 3)).all()
    untouched = np.ones(image.shape[:2], bool)
    untouched[10:40, 20:50] = untouched[100:, 150:] = False
    np.testing.assert_array_equal(out[untouched], image[untouched])


@pytest.mark.parametrize("colour", COLOUR_TRANSFORMS)
def test_each_colour_transform_changes_the_image(colour):
    image = _image()
    out = apply_harmonization_plan(image, HarmonizationPlan(colour, (), (0, 0, 0)), np.random.default_rng(3))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    if colour == "invert":
        np.testing.assert_array_equal(out, 255 - image)
    if colour == "channel_dropout":
        assert sum(int((out[:, :, c] == 0).all()) for c in range(3)) == 1
    if colour == "channel_shuffle":
        assert sorted(out.reshape(-1, 3).sum(0).tolist()) == sorted(image.reshape(-1, 3).sum(0).tolist())


def test_shuffle_tiles_moves_content_from_the_image():
    image = _image()
    moved = 0
    for seed in range(30):
        tiles = draw_tiles(image.shape, np.random.default_rng(seed))
        out = shuffle_tiles(image, np.random.default_rng(seed))
        assert 1 <= len(tiles) <= 5
        # Rebuild where every output pixel must come from: the last tile covering it, else itself.
        src_y, src_x = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
        sy, sx = src_y.copy(), src_x.copy()
        for t in tiles:
            assert 0 <= t.new_y and t.new_y + t.h <= image.shape[0]
            assert 0 <= t.new_x and t.new_x + t.w <= image.shape[1]
            sy[t.new_y : t.new_y + t.h, t.new_x : t.new_x + t.w] = src_y[t.y : t.y + t.h, t.x : t.x + t.w]
            sx[t.new_y : t.new_y + t.h, t.new_x : t.new_x + t.w] = src_x[t.y : t.y + t.h, t.x : t.x + t.w]
        np.testing.assert_array_equal(out, image[sy, sx])
        moved += int(not np.array_equal(out, image))
    assert moved >= 25  # almost every draw moves something


def test_shuffle_tiles_respects_max_tiles():
    counts = {len(draw_tiles((100, 100, 3), np.random.default_rng(s), max_tiles=2)) for s in range(50)}
    assert counts == {1, 2}
    with pytest.raises(ValueError):
        shuffle_tiles(_image(), np.random.default_rng(0), max_tiles=0)


def _high_pass_energy(image: np.ndarray) -> np.ndarray:
    gray = image.astype(np.float32).mean(axis=2)
    return (gray - cv2.GaussianBlur(gray, (0, 0), 2.0)) ** 2


def _one_ellipse_changed(image: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Where `out` differs from `image`, checked to be one ellipse of 20-50% of each side at most."""
    changed = (out != image).any(axis=2)
    assert 0.01 < changed.mean() < 0.5  # partly outside the image at times
    ys, xs = np.nonzero(changed)
    longest = 0.5 * max(image.shape[:2]) + 2  # semi-axes up to 25% of a side, at any angle
    assert ys.max() - ys.min() < longest and xs.max() - xs.min() < longest
    return changed


def test_smooth_region_blurs_one_ellipse_and_nothing_else():
    image = _image()
    for seed in range(10):
        out = smooth_region(image, np.random.default_rng(seed))
        changed = _one_ellipse_changed(image, out)
        # inside, the fine texture is mostly gone
        assert _high_pass_energy(out)[changed].mean() < 0.5 * _high_pass_energy(image)[changed].mean()


def test_recolour_region_changes_the_colours_of_one_ellipse_and_nothing_else():
    image = _image()
    for seed in range(10):
        out = recolour_region(image, np.random.default_rng(seed))
        changed = _one_ellipse_changed(image, out)
        # a colour change, not a blur: the region's mean colour moves, its texture stays
        shift = np.abs(out[changed].astype(float).mean(axis=0) - image[changed].astype(float).mean(axis=0))
        assert shift.max() > 5
        assert _high_pass_energy(out)[changed].mean() > 0.3 * _high_pass_energy(image)[changed].mean()


@pytest.mark.parametrize(
    "option,first", [("smooth_probability", smooth_region), ("recolour_probability", recolour_region)]
)
def test_an_option_at_zero_leaves_the_reference_augmentation_as_it_was(option, first):
    image = _image()
    for seed in range(20):
        reference = augment_for_harmonization(image, np.random.default_rng(seed))
        unchanged = augment_for_harmonization(image, np.random.default_rng(seed), **{option: 0.0})
        np.testing.assert_array_equal(reference, unchanged)
        # at 1: the region changed first, then the reference's augmentation of that
        rng = np.random.default_rng(seed)
        rng.random()  # the option's draw
        changed = first(image, rng)
        expected = apply_harmonization_plan(changed, draw_harmonization_plan(image.shape, rng), rng)
        got = augment_for_harmonization(image, np.random.default_rng(seed), **{option: 1.0})
        np.testing.assert_array_equal(got, expected)
