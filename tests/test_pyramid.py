"""Pyramid sizes against the reference formula (tohinz/ConSinGAN functions.py)."""

import math

import numpy as np
import pytest

from engine.errors import BadInputError
from engine.families.consingan.config import preset, with_overrides
from engine.families.consingan.pyramid import build_pyramid, fit_to_max_size, retarget_shapes, stage_shapes


def ceil(x):
    # imresize rounds sizes up; the engine ignores float noise (1333 * (250 / 1333) = 250.00000000000003,
    # which the reference turns into a 251 px side, over max_size).
    return math.ceil(x - 1e-9)


def reference_shapes(h, w, n_stages, min_size, max_size, harmonization):
    # The reference's adjust_scales2image + create_reals_pyramid, with imresize's rounding.
    scale1 = min(max_size / max(h, w), 1)
    h, w = ceil(h * scale1), ceil(w * scale1)
    stop = n_stages - 1
    factor = math.pow(min_size / min(h, w), 1 / stop)
    out = []
    for i in range(stop):
        if harmonization:
            s = math.pow(factor, stop - i)
        else:
            s = math.pow(factor, ((stop - 1) / math.log(stop)) * math.log(stop - i) + 1)
        out.append((ceil(h * s), ceil(w * s)))
    return [*out, (h, w)]


def test_paper_generation_pyramid_matches_the_paper_example():
    model, _ = preset("paper", "generation")
    assert stage_shapes(188, 250, model) == [(25, 34), (32, 42), (42, 56), (63, 84), (126, 167), (188, 250)]


@pytest.mark.parametrize("size", [(188, 250), (319, 250), (1000, 1333), (250, 600), (480, 640)])
@pytest.mark.parametrize("mode", ["generation", "retarget", "harmonization", "editing"])
def test_stage_shapes_follow_the_reference_formula(size, mode):
    model, _ = preset("paper", mode)
    final = fit_to_max_size(*size, model.max_size)
    if min(final) < model.min_size:
        # The reference would enlarge the coarse stages beyond the final one; the engine keeps them at the
        # final size instead.
        assert stage_shapes(*size, model) == [final] * model.n_stages
        return
    expected = reference_shapes(
        *size, model.n_stages, model.min_size, model.max_size, mode == "harmonization"
    )
    assert stage_shapes(*size, model) == expected


def test_harmonization_uses_geometric_scales():
    model, _ = preset("paper", "harmonization")
    shapes = stage_shapes(188, 250, model)
    assert shapes[0] == (120, 160) and len(shapes) == 3
    ratios = [shapes[i + 1][0] / shapes[i][0] for i in range(2)]
    assert ratios[0] == pytest.approx(ratios[1], rel=0.02)


def test_small_images_are_not_enlarged():
    assert fit_to_max_size(100, 80, 250) == (100, 80)
    assert fit_to_max_size(3000, 4000, 250) == (188, 250)


def test_more_stages_and_overrides():
    model, train = with_overrides(*preset("paper", "generation"), stages=8, max_size=300)
    shapes = stage_shapes(600, 800, model)
    assert len(shapes) == 8 and shapes[-1] == (225, 300) and min(shapes[0]) == 25


def test_impossible_sizes_are_refused():
    model, _ = preset("paper", "generation")
    with pytest.raises(BadInputError, match="too thin"):
        stage_shapes(3, 500, model)
    with pytest.raises(BadInputError, match="--stages"):
        with_overrides(model, preset("paper", "generation")[1], stages=0)


def test_retarget_shapes_scale_every_stage():
    trained = [(25, 34), (63, 84), (188, 250)]
    assert retarget_shapes(trained, 188, 500) == [(25, 68), (63, 168), (188, 500)]


def test_build_pyramid_resizes_within_range():
    image = np.random.default_rng(0).random((100, 120, 3), dtype=np.float32)
    levels = build_pyramid(image, [(20, 24), (50, 60), (100, 120)])
    assert [lv.shape for lv in levels] == [(20, 24, 3), (50, 60, 3), (100, 120, 3)]
    assert all(lv.min() >= 0 and lv.max() <= 1 for lv in levels)
    np.testing.assert_array_equal(levels[-1], image)
