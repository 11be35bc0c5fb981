"""The training-free harmonized preview (engine/preview.py) and `engine preview`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.cli import main
from engine.errors import BadInputError
from engine.imageio import Picture, read_image
from engine.preview import PreviewSettings, harmonize_preview, preview_small
from tests.cli_helpers import json_result, run_engine


def _lab_mean(rgb: np.ndarray, where: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2Lab)[where].mean(axis=0)


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    return (distance > 0) & (distance <= width)


def test_cli_preview_of_a_real_paste_moves_its_colours_and_leaves_the_rest(shared_images, tmp_path):
    folder = shared_images / "harmonization"
    out = tmp_path / "preview.png"
    proc = run_engine(
        "preview", "--image", folder / "scream_naive.jpg", "--mask", folder / "scream_naive_mask.jpg",
        "--out", out, "--json",
    )  # fmt: skip
    result = json_result(proc)
    assert result["ok"], proc.stderr
    before = read_image(folder / "scream_naive.jpg")
    after = read_image(out)
    assert after.shape == before.shape and (result["width"], result["height"]) == before.shape[::-1]
    mask = cv2.imread(str(folder / "scream_naive_mask.jpg"), cv2.IMREAD_GRAYSCALE) > 127
    # well outside the selection (beyond the feathering) the picture is the input's, level for level
    far = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3) > 12
    assert np.array_equal(np.rint(after.rgb[far] * 255), np.rint(before.rgb[far] * 255))
    # inside, the pasted plane and ship move towards the painting around them
    ring = _ring(mask, 15)
    target = _lab_mean(before.rgb, ring)
    gap_before = np.linalg.norm(_lab_mean(before.rgb, mask)[1:] - target[1:])
    gap_after = np.linalg.norm(_lab_mean(after.rgb, mask)[1:] - target[1:])
    assert gap_after < 0.8 * gap_before, (gap_before, gap_after)


def _grain(image: np.ndarray, mask: np.ndarray) -> float:
    """The fine detail's spread inside the selection, away from its edge (where the colour match meets
    the painting)."""
    core = cv2.erode(mask.astype(np.uint8), np.ones((11, 11), np.uint8)).astype(bool)
    return float((image - cv2.GaussianBlur(image, (0, 0), 1.5))[core].std())


def _painting(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A brownish canvas of strong diagonal strokes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    strokes = 0.5 + 0.25 * np.sin((xx + yy) * 1.3 + rng.uniform(0, 6, (h, w)) * 0.3)
    base = np.stack([0.6 * strokes + 0.2, 0.4 * strokes + 0.15, 0.2 * strokes + 0.1], axis=2)
    return base.astype(np.float32)


def test_a_flat_paste_gets_the_paintings_strokes_and_a_textured_one_keeps_its_own():
    painting = _painting()
    mask = np.zeros(painting.shape[:2], bool)
    mask[40:80, 50:110] = True
    flat = painting.copy()
    flat[mask] = (0.2, 0.5, 0.9)  # a smooth blue photo patch
    out = preview_small(flat, mask)
    grain = lambda x: _grain(x, mask)  # noqa: E731
    assert grain(out) > 0.5 * grain(painting), (grain(out), grain(painting))
    no_texture = preview_small(flat, mask, settings=PreviewSettings(texture=False))
    assert grain(no_texture) < 0.1 * grain(painting)
    # the blue moved towards the painting's browns
    assert out[mask][:, 2].mean() < 0.7 and out[mask][:, 0].mean() > 0.3
    # a paste as textured as the painting is given no extra strokes: only its colours change
    textured = painting.copy()
    textured[mask] = painting[mask][:, ::-1]
    assert grain(preview_small(textured, mask)) == pytest.approx(
        grain(preview_small(textured, mask, settings=PreviewSettings(texture=False))), rel=1e-6
    )


def test_full_size_keeps_alpha_and_depth_and_the_outside_exactly():
    h, w = 600, 800
    painting = cv2.resize(_painting(), (w, h), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((h, w), np.float32)
    mask[200:400, 300:500] = 1
    rgb = painting.copy()
    rgb[200:400, 300:500] = (0.1, 0.8, 0.3)
    alpha = np.full((h, w), 65535, np.uint16)
    alpha[:10] = 0
    picture = Picture(rgb, alpha, 16)
    out = harmonize_preview(picture, mask)
    assert out.depth == 16 and out.alpha is alpha and out.rgb.shape == rgb.shape
    far = np.ones((h, w), bool)
    far[150:450, 250:550] = False
    assert np.array_equal(out.rgb[far], rgb[far])
    assert not np.allclose(out.rgb[250:350, 350:450], rgb[250:350, 350:450])


def test_a_given_background_supplies_the_texture():
    painting = _painting()
    mask = np.zeros(painting.shape[:2], bool)
    mask[30:90, 40:120] = True
    composite = painting.copy()
    composite[mask] = 0.5
    plain = np.full_like(painting, 0.5)  # a background with no strokes at all has none to give
    grain = lambda x: _grain(x, mask)  # noqa: E731
    assert grain(preview_small(composite, mask, plain)) < 1e-3
    assert grain(preview_small(composite, mask, painting)) > 0.5 * grain(painting)


def test_bad_inputs_are_one_line_errors_and_write_nothing(tmp_path, capsys):
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    black, white, small = tmp_path / "black.png", tmp_path / "white.png", tmp_path / "small.png"
    cv2.imwrite(str(black), np.zeros((60, 80), np.uint8))
    cv2.imwrite(str(white), np.full((60, 80), 255, np.uint8))
    cv2.imwrite(str(small), np.zeros((30, 40), np.uint8))
    out = tmp_path / "out.png"
    cases = [
        (["--mask", str(black)], "the mask selects nothing"),
        (["--mask", str(white)], "the mask selects the whole image"),
        (["--mask", str(small)], "is 40x30 px but the image is 80x60 px"),
        (["--mask", str(black), "--background", str(small)], "--background"),
        (["--mask", str(tmp_path / "none.png")], "no such file"),
    ]
    for extra, message in cases:
        code = main(["preview", "--image", str(image), *extra, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code != 0 and message in err and len(err.splitlines()) == 1, err
        assert not out.exists()
    code = main(["preview", "--image", str(image), "--mask", str(black), "--out", str(image)])
    assert code != 0 and "is one of the inputs" in capsys.readouterr().err
    with pytest.raises(BadInputError, match="must match"):
        harmonize_preview(Picture(np.zeros((10, 10, 3), np.float32)), np.ones((5, 5), np.float32))


def test_the_preview_colour_match_is_the_harmonization_models_default():
    """So the preview and the model's result that replaces it agree in colour."""
    from engine.families.consingan.modes import Mode, spec

    assert PreviewSettings().color_match == spec(Mode.HARMONIZATION).color_match
