"""Tests for the benchmark measures, baselines and synthetic harmonization cases."""

import cv2
import numpy as np
import pytest

from bench.baselines import poisson_blend, reinhard_transfer
from bench.quality import detail_score, diversity, masked_error, swd, swd_per_level, texture_score
from bench.synthetic_cases import DEFAULT_DIR, load_cases, make_case

FAST = {"n_patches": 2048, "n_directions": 64}


def _painting(size: int = 96, seed: int = 0) -> np.ndarray:
    """A colourful texture with strokes at several scales, standing in for a painting."""
    rng = np.random.default_rng(seed)
    fine = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 1.0)
    coarse = cv2.resize(rng.random((6, 6, 3)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip((0.5 * coarse + 0.5 * fine * 2 - 0.25) * 255, 0, 255).astype(np.uint8)


def _disc_mask(size: int = 96, centre=(48, 48), radius: int = 20) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, centre, radius, 255, -1)
    return mask


def test_swd_is_zero_for_identical_sets_and_orders_distortions():
    x = _painting()
    assert swd([x], [x], **FAST) == pytest.approx(0.0, abs=1e-9)
    shifted = np.roll(x, 2, axis=1)
    noise = np.random.default_rng(1).integers(0, 256, x.shape, dtype=np.uint8)
    assert swd([x], [noise], **FAST) > 2 * swd([x], [shifted], **FAST)
    assert swd([x], [noise], **FAST, seed=3) == swd([x], [noise], **FAST, seed=3)


def test_swd_handles_sets_of_different_sizes():
    x = _painting(96)
    levels = swd_per_level([x], [_painting(64, seed=2), _painting(80, seed=3)], **FAST)
    assert len(levels) == 3 and all(v > 0 for v in levels)  # 64 px: bands at 64 and 32 px, residual at 16


def test_diversity():
    x = _painting()
    assert diversity([x, x, x], x) == 0.0
    others = [_painting(seed=s) for s in range(3)]
    assert 0.3 < diversity(others, x) < 2.0
    with pytest.raises(ValueError):
        diversity([x], x)


def test_detail_score_is_one_for_the_reference_and_low_for_a_blur():
    x, mask = _painting(), _disc_mask()
    assert detail_score(x, x, mask) == pytest.approx(1.0)
    assert detail_score(cv2.GaussianBlur(x, (0, 0), 3), x, mask) < 0.3
    assert abs(detail_score(_painting(seed=5), x, mask)) < 0.3  # unrelated texture


def test_texture_score_credits_any_texture_of_the_right_strength():
    x, mask = _painting(), _disc_mask()
    assert texture_score(x, x, mask) == pytest.approx(1.0)
    assert texture_score(cv2.GaussianBlur(x, (0, 0), 3), x, mask) < 0.3
    assert texture_score(_painting(seed=5), x, mask) > 0.7  # other strokes of the same strength
    flat = np.full_like(x, 128)
    assert texture_score(flat, x, mask) < 1e-4 and texture_score(flat, flat, mask) == 1.0
    with pytest.raises(ValueError, match="empty"):
        texture_score(x, x, np.zeros_like(mask))


def test_masked_error():
    x, mask = _painting(), _disc_mask()
    zero = masked_error(x, x, mask)
    assert zero.mae == zero.rmse == zero.delta_e == 0.0
    brighter = np.clip(x.astype(int) + 51, 0, 255).astype(np.uint8)
    changed = brighter.copy()
    changed[mask == 0] = x[mask == 0]  # only the inside counts
    err = masked_error(changed, x, mask)
    assert err.mae == pytest.approx(masked_error(brighter, x, mask).mae)
    assert 0.1 < err.mae <= 0.2 + 1e-6 and err.rmse >= err.mae and err.delta_e > 5


def _lab_mean(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)[where].mean(axis=0)


def test_reinhard_moves_the_object_towards_the_background_colour():
    background, mask = _painting(), _disc_mask()
    composite = background.copy()
    composite[mask > 0] = (np.array([40, 90, 220]) * 0.5 + composite[mask > 0] * 0.5).astype(np.uint8)
    out = reinhard_transfer(composite, mask, background)
    inside = mask > 0
    target = _lab_mean(background, ~inside)
    before = np.linalg.norm(_lab_mean(composite, inside) - target)
    after = np.linalg.norm(_lab_mean(out, inside) - target)
    assert after < 0.2 * before
    np.testing.assert_array_equal(out[~inside], composite[~inside])


@pytest.mark.parametrize("centre", [(48, 48), (5, 90)])  # the second disc runs off the border
def test_poisson_blend_changes_only_the_inside(centre):
    background, mask = _painting(), _disc_mask(centre=centre)
    composite = background.copy()
    composite[mask > 0] = np.clip(composite[mask > 0].astype(int) + 80, 0, 255)
    out = poisson_blend(composite, mask, background)
    assert out.shape == composite.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[mask == 0], background[mask == 0])
    # The added offset is largely removed: boundary colours come from the background.
    inside = mask > 0
    assert np.abs(out[inside].astype(int) - background[inside]).mean() < 0.5 * 80


def test_make_case_is_deterministic_and_differs_only_inside_the_mask():
    painting = _painting(128)
    region = _disc_mask(128, (64, 64), 25) > 0
    for hard in (False, True):
        case = make_case(painting, region, seed=4, hard=hard)
        again = make_case(painting, region, seed=4, hard=hard)
        np.testing.assert_array_equal(case.composite, again.composite)
        assert case.background.shape == case.composite.shape == case.ground_truth.shape == painting.shape
        assert case.mask.shape == painting.shape[:2] and case.mask.dtype == np.uint8
        assert case.mask.sum() == region.sum() * 255  # shifted, same shape
        outside = case.mask == 0
        np.testing.assert_array_equal(case.composite[outside], painting[outside])
        np.testing.assert_array_equal(case.background[outside], painting[outside])
        assert np.abs(case.composite[~outside].astype(int) - painting[~outside]).mean() > 10
    # Hard cases lose the painting's fine detail inside the region; easy ones keep much of it.
    easy, hard_case = (make_case(painting, region, seed=4, hard=h) for h in (False, True))
    assert detail_score(hard_case.composite, painting, hard_case.mask) < detail_score(
        easy.composite, painting, easy.mask
    )


@pytest.mark.skipif(not DEFAULT_DIR.is_dir(), reason="shared images not present")
def test_cases_from_the_shared_paintings():
    cases = load_cases(max_side=96)
    assert len(cases) == 8 and sum(c.hard for c in cases) == 4
    for case in cases:
        assert case.composite.shape == case.ground_truth.shape and max(case.composite.shape[:2]) == 96
        assert 0.01 < (case.mask > 0).mean() < 0.5
        assert not np.array_equal(case.background, case.ground_truth)
