"""Reading and writing images: formats, bit depths, alpha, masks, permissions; real files and codecs."""

from __future__ import annotations

import os
import stat

import cv2
import numpy as np
import pytest

from engine.errors import BadInputError
from engine.imageio import Picture, check_output_file, read_image, read_mask, write_image


def _rgba(alpha: int | np.ndarray) -> Picture:
    rgb = np.random.default_rng(0).random((20, 30, 3), dtype=np.float32)
    return Picture(rgb, np.broadcast_to(np.asarray(alpha, np.uint8), (20, 30)).copy(), 8)


def test_transparency_is_never_dropped_silently(tmp_path):
    with pytest.raises(BadInputError, match="transparency.*use .png"):
        write_image(tmp_path / "out.jpg", _rgba(np.arange(30, dtype=np.uint8)[None, :]))
    assert list(tmp_path.iterdir()) == []
    # A fully opaque alpha loses nothing in a JPEG: written as RGB.
    write_image(tmp_path / "opaque.jpg", _rgba(255))
    assert cv2.imread(str(tmp_path / "opaque.jpg"), cv2.IMREAD_UNCHANGED).shape == (20, 30, 3)
    for suffix in (".png", ".tif", ".webp"):
        write_image(tmp_path / f"out{suffix}", _rgba(77))
        back = cv2.imread(str(tmp_path / f"out{suffix}"), cv2.IMREAD_UNCHANGED)
        assert back.shape == (20, 30, 4) and (back[..., 3] == 77).all(), suffix


def test_float_images_stay_float_where_the_format_can_hold_them(tmp_path):
    pixels = np.random.default_rng(1).random((16, 24, 3), dtype=np.float32)
    for suffix in (".pfm", ".tif"):
        cv2.imwrite(str(tmp_path / f"in{suffix}"), pixels)
        picture = read_image(tmp_path / f"in{suffix}")
        write_image(tmp_path / f"out{suffix}", picture)
        back = cv2.imread(str(tmp_path / f"out{suffix}"), cv2.IMREAD_UNCHANGED)
        assert back.dtype == np.float32, suffix
        np.testing.assert_array_equal(back, pixels, err_msg=suffix)
    # HDR values cannot be kept by the engine's 0-1 pipeline: refused, not clipped.
    cv2.imwrite(str(tmp_path / "hdr.pfm"), pixels * 4)
    with pytest.raises(BadInputError, match="outside 0-1.*tone-map"):
        read_image(tmp_path / "hdr.pfm")


def test_unwritable_output_paths_are_refused_before_any_work(tmp_path):
    with pytest.raises(BadInputError, match="OpenCV cannot encode '.xyz'"):
        check_output_file(tmp_path / "out.xyz")
    with pytest.raises(BadInputError, match="OpenCV cannot encode ''"):
        check_output_file(tmp_path / "no_extension")
    with pytest.raises(BadInputError, match="is a folder"):
        check_output_file(tmp_path)
    source = tmp_path / "in.png"
    write_image(source, _rgba(255))
    with pytest.raises(BadInputError, match="never writes over its inputs"):
        check_output_file(tmp_path / "." / "in.png", inputs=(source,))
    # A format whose encoder refuses this picture: one clear error, no file.
    with pytest.raises(BadInputError, match="cannot encode a 8-bit RGB image as '.pgm'"):
        write_image(tmp_path / "grey.pgm", _rgba(255))
    assert not (tmp_path / "grey.pgm").exists()


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_image(tmp_path / "out.png", _rgba(255))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the rest of a shared pipeline


def test_a_mask_with_alpha_selects_only_where_it_is_opaque(tmp_path):
    mask = np.zeros((20, 30, 4), np.uint8)
    mask[..., :3] = 255  # white everywhere ...
    mask[5:15, 10:20, 3] = 255  # ... but opaque only here
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    selected = read_mask(tmp_path / "mask.png", (20, 30))
    assert selected.sum() == 100 and selected[5:15, 10:20].all()


def test_a_huge_image_is_refused_from_its_header_without_decoding_it(tmp_path):
    # 100.02 MP of zeros: a 114 KB PNG that decodes to 100 MB. In a fresh process (engine imported first, as
    # the CLI and the daemon do) OpenCV must refuse it before allocating.
    import subprocess
    import sys

    cv2.imwrite(str(tmp_path / "huge.png"), np.zeros((10001, 10001), np.uint8))
    code = (
        "import re\n"
        "from engine.errors import BadInputError\n"
        "from engine.imageio import read_image\n"
        "try:\n"
        f"    read_image({str(tmp_path / 'huge.png')!r})\n"
        "except BadInputError as e:\n"
        "    print(e)\n"
        # VmHWM is this process's own peak; ru_maxrss would include the pytest process it was forked from.
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    message, peak_mb = out.strip().splitlines()
    assert "over the 100 MP limit: downscale it first" in message
    assert int(peak_mb) < 100, f"{peak_mb} MB: the image was decoded before it was refused"


def test_visible_rgb_fills_what_transparent_pixels_hold_from_the_visible_ones():
    """An erased part holds black: filled from the colours around it; the visible pixels, and a picture
    without transparent pixels, untouched."""
    from engine.imageio import visible_rgb

    rgb = np.zeros((20, 30, 3), np.float32)
    rgb[:, :15] = (1.0, 0.5, 0.0)  # orange on the left; the right half erased (black, alpha 0)
    alpha = np.zeros((20, 30), np.uint16)
    alpha[:, :15] = 65535
    filled = visible_rgb(Picture(rgb, alpha, 16))
    np.testing.assert_array_equal(filled[:, :15], rgb[:, :15])
    assert np.abs(filled[:, 15:18] - (1.0, 0.5, 0.0)).max() < 0.02  # the edge's neighbours take its colour
    opaque = _rgba(255)
    assert visible_rgb(opaque) is opaque.rgb and visible_rgb(Picture(rgb)) is rgb
