"""A clip as Krita's own file: a .kra holding one animated paint layer, one keyframe a frame.

Krita 5.1's Python API cannot add keyframes, and its Import Animation Frames (`Document.importAnimation`)
reads each file into one scratch document and takes its projection without waiting for it: under load
Krita crashes mid-import. A .kra opens synchronously instead (`Krita.openDocument`), and its animated
layer is copied, keyframes and all, into the artist's image in one step (document.add_animated_layer).

The format is what Krita 5.1 writes and reads (libs/ui/kra): maindoc.xml names the layer and its keyframe
file; each keyframe's pixels are a tile stream ("VERSION 2", 64 x 64 tiles, each "x,y,LZF,size" and a
flag byte 0 = raw, uncompressed, in the colour space's own channel order: B, G, R, A, little-endian);
the layer's ICC profile is required (without it Krita asks about it in a dialog). No Krita import here: the
worker thread writes it, and the tests read it back.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

TILE = 64
IMAGE = "clip"  # the image's name in the file, and its folder there
LAYER = "layer1"  # the layer's file name (its first keyframe's pixels), "layer1.fN" the others'
MIMETYPE = "application/x-krita"


def frame_file(index: int) -> str:
    """The file of keyframe `index`'s pixels, as Krita names them."""
    return LAYER if index == 0 else f"{LAYER}.f{index}"


def tile_stream(frame: np.ndarray) -> bytes:
    """A frame (H x W x 4, uint8 or uint16, B G R A) as Krita's tile stream. Tiles of all zeros are left
    out (Krita's default pixel: transparent black)."""
    if frame.ndim != 3 or frame.shape[2] != 4 or frame.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"a frame is H x W x 4 of uint8 or uint16, not {frame.shape} {frame.dtype}")
    h, w = frame.shape[:2]
    rows, cols = -(-h // TILE), -(-w // TILE)
    padded = np.zeros((rows * TILE, cols * TILE, 4), frame.dtype.newbyteorder("<"))
    padded[:h, :w] = frame
    blocks = padded.reshape(rows, TILE, cols, TILE, 4).swapaxes(1, 2)
    size = TILE * TILE * 4 * frame.itemsize + 1
    tiles = [
        f"{c * TILE},{r * TILE},LZF,{size}\n".encode() + b"\0" + blocks[r, c].tobytes()
        for r in range(rows)
        for c in range(cols)
        if blocks[r, c].any()
    ]
    head = (
        f"VERSION 2\nTILEWIDTH {TILE}\nTILEHEIGHT {TILE}\nPIXELSIZE {4 * frame.itemsize}\nDATA {len(tiles)}\n"
    )
    return head.encode() + b"".join(tiles)


def _maindoc(width: int, height: int, bits: int, name: str, fps: int, end: int) -> str:
    space = "RGBA" if bits == 8 else "RGBA16"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<!DOCTYPE DOC PUBLIC '-//KDE//DTD krita 2.0//EN' 'http://www.calligra.org/DTD/krita-2.0.dtd'>\n"
        '<DOC xmlns="http://www.calligra.org/DTD/krita" syntaxVersion="2.0" editor="Krita" '
        'kritaVersion="5.1.5">\n'
        f' <IMAGE name="{IMAGE}" width="{width}" height="{height}" colorspacename="{space}" '
        'profile="sRGB-elle-V2-srgbtrc.icc" mime="application/x-kra" x-res="72" y-res="72" description="">\n'
        "  <layers>\n"
        f'   <layer nodetype="paintlayer" name={quoteattr(name)} filename="{LAYER}" '
        f'keyframes="{LAYER}.keyframes.xml" opacity="255" visible="1" locked="0" x="0" y="0" '
        'compositeop="normal" intimeline="1" collapsed="0" colorlabel="0" onionskin="0" channelflags="" '
        'channellockflags=""/>\n'
        "  </layers>\n"
        "  <animation>\n"
        f'   <framerate type="value" value="{fps}"/>\n'
        f'   <range type="timerange" from="0" to="{end}"/>\n'
        '   <currentTime type="value" value="0"/>\n'
        "  </animation>\n"
        " </IMAGE>\n"
        "</DOC>\n"
    )


def _keyframes(times: list[int]) -> str:
    keys = "".join(
        f'  <keyframe time="{t}" color-label="0" frame="{frame_file(i)}">\n'
        '   <offset type="point" x="0" y="0"/>\n'
        "  </keyframe>\n"
        for i, t in enumerate(times)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<!DOCTYPE keyframes PUBLIC '-//KDE//DTD krita-keyframes 1.0//EN' "
        "'http://www.calligra.org/DTD/krita-keyframes-1.0.dtd'>\n"
        '<keyframes xmlns="http://www.calligra.org/DTD/krita-keyframes">\n'
        ' <channel name="content">\n' + keys + " </channel>\n</keyframes>\n"
    )


def write_animated_layer(
    path: Path,
    frames: Iterable[np.ndarray],
    count: int,
    *,
    width: int,
    height: int,
    bits: int,
    name: str,
    fps: int,
    step: int,
    icc: bytes,
) -> None:
    """Write `count` frames (each height x width x 4, B G R A, uint8 for 8 bits or uint16 for 16) as a .kra
    of one animated paint layer: frame i a keyframe at time i x `step`, the timeline at `fps`. `icc`: the
    layer's profile (any RGB profile; the caller assigns the image's after opening it). Frames are
    consumed one at a time (a clip at a large canvas's size does not fit in memory twice)."""
    if bits not in (8, 16) or count < 1 or step < 1:
        raise ValueError(f"bits {bits}, count {count}, step {step}")
    layers = f"{IMAGE}/layers/"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr(zipfile.ZipInfo("mimetype"), MIMETYPE, compress_type=zipfile.ZIP_STORED)  # first
        z.writestr("maindoc.xml", _maindoc(width, height, bits, name, fps, (count - 1) * step))
        z.writestr(layers + f"{LAYER}.keyframes.xml", _keyframes([i * step for i in range(count)]))
        z.writestr(layers + f"{LAYER}.icc", icc)
        written = 0
        for i, frame in enumerate(frames):
            if i == count:
                raise ValueError(f"more than the {count} frames announced")
            if frame.shape != (height, width, 4) or frame.itemsize * 8 != bits:
                raise ValueError(
                    f"frame {i} is {frame.shape} {frame.dtype}, not {height}x{width}x4 {bits}-bit"
                )
            z.writestr(layers + frame_file(i), tile_stream(frame))
            written += 1
    if written != count:
        raise ValueError(f"{written} frames written, {count} announced")
