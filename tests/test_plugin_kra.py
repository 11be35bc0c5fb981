"""The Krita plugin's .kra writer (plugins/krita/singan_studio/kra.py): what it writes, read back here the way
Krita 5.1 reads it (the real Krita opens it in tests/test_plugin_krita.py's animate runs)."""

from __future__ import annotations

import importlib.util
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kra", ROOT / "plugins/krita/singan_studio/kra.py")
assert _spec is not None and _spec.loader is not None
kra = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kra)

NS = {"k": "http://www.calligra.org/DTD/krita", "f": "http://www.calligra.org/DTD/krita-keyframes"}


def read_tiles(stream: bytes, height: int, width: int, dtype) -> np.ndarray:
    """A tile stream back as H x W x 4 (Krita's KisTileCompressor2: a raw tile is flag 0, then the tile)."""
    head, _, body = stream.partition(b"DATA ")
    fields = dict(line.split(" ") for line in head.decode().strip().splitlines()[1:])
    pixel = str(4 * np.dtype(dtype).itemsize)
    assert head.startswith(b"VERSION 2\n")
    assert fields == {"TILEWIDTH": "64", "TILEHEIGHT": "64", "PIXELSIZE": pixel}
    count, _, body = body.partition(b"\n")
    out = np.zeros((-(-height // 64) * 64, -(-width // 64) * 64, 4), dtype)
    for _ in range(int(count)):
        line, _, body = body.partition(b"\n")
        x, y, compression, size = line.decode().split(",")
        assert compression == "LZF" and body[0] == 0  # raw
        tile = np.frombuffer(body[1 : int(size)], np.dtype(dtype).newbyteorder("<")).reshape(64, 64, 4)
        out[int(y) : int(y) + 64, int(x) : int(x) + 64] = tile
        body = body[int(size) :]
    assert body == b""
    return out[:height, :width]


@pytest.mark.parametrize("bits", [8, 16])
def test_a_clip_is_one_animated_layer_whose_keyframes_hold_its_frames(tmp_path, bits):
    h, w, dtype = 70, 130, np.uint8 if bits == 8 else np.uint16  # 2 x 3 tiles, the last ones partial
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 2**bits, (h, w, 4)).astype(dtype) for _ in range(3)]
    frames[1][:] = 0  # a fully transparent frame: no tiles at all
    frames[2][:64, :64] = 0  # ...and a frame with one empty tile
    path = tmp_path / "clip.kra"
    kra.write_animated_layer(path, iter(frames), 3, width=w, height=h, bits=bits, name='Animated "1" & <2>',
                             fps=12, step=2, icc=b"ICC")  # fmt: skip
    with zipfile.ZipFile(path) as z:
        first = z.infolist()[0]
        assert (first.filename, first.compress_type) == ("mimetype", zipfile.ZIP_STORED)
        assert z.read("mimetype") == b"application/x-krita"
        image = ElementTree.fromstring(z.read("maindoc.xml")).find("k:IMAGE", NS)
        assert image is not None
        assert (image.get("width"), image.get("height")) == (str(w), str(h))
        assert image.get("colorspacename") == ("RGBA" if bits == 8 else "RGBA16")
        (layer,) = image.findall("k:layers/k:layer", NS)
        assert layer.get("name") == 'Animated "1" & <2>' and layer.get("nodetype") == "paintlayer"
        folder = f"{image.get('name')}/layers/"
        assert z.read(folder + layer.get("filename") + ".icc") == b"ICC"  # Krita asks in a dialog without it
        assert image.find("k:animation/k:framerate", NS).get("value") == "12"
        assert image.find("k:animation/k:range", NS).get("to") == "4"
        keys = ElementTree.fromstring(z.read(folder + layer.get("keyframes"))).findall(
            "f:channel[@name='content']/f:keyframe", NS
        )
        assert [k.get("time") for k in keys] == ["0", "2", "4"]
        assert keys[0].get("frame") == layer.get("filename")  # Krita's first keyframe is the layer's file
        for key, frame in zip(keys, frames, strict=True):
            np.testing.assert_array_equal(read_tiles(z.read(folder + key.get("frame")), h, w, dtype), frame)
        stream = z.read(folder + keys[1].get("frame"))
        assert re.search(rb"DATA 0\n$", stream)  # the transparent frame: Krita's default pixel


def test_frames_that_do_not_match_are_refused(tmp_path):
    good = np.zeros((8, 8, 4), np.uint8)
    args = {"width": 8, "height": 8, "bits": 8, "name": "A", "fps": 10, "step": 1, "icc": b""}
    with pytest.raises(ValueError, match="frame 1 is"):
        kra.write_animated_layer(tmp_path / "a.kra", [good, good[:4]], 2, **args)
    with pytest.raises(ValueError, match="1 frames written, 2 announced"):
        kra.write_animated_layer(tmp_path / "b.kra", [good], 2, **args)
    with pytest.raises(ValueError, match="more than the 1 frames announced"):
        kra.write_animated_layer(tmp_path / "d.kra", [good, good], 1, **args)
    with pytest.raises(ValueError, match="frame 0 is"):
        kra.write_animated_layer(tmp_path / "c.kra", [good.astype(np.uint16)], 1, **args)
