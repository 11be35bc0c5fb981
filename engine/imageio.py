"""Reading and writing images: any format OpenCV knows, 8 or 16 bit, alpha kept; writes are atomic."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.errors import BadInputError

MAX_PIXELS = 100_000_000  # 100 MP: beyond this decoding alone needs gigabytes


@dataclass
class Picture:
    """An image as the engine works on it, with what is needed to write it back the same way."""

    rgb: np.ndarray  # float32, H x W x 3, in [0, 1]
    alpha: np.ndarray | None = None  # H x W in the file's own dtype, written back untouched
    depth: int = 8  # bits per channel of the source (8 or 16)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


def _scale(dtype: np.dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    return 1.0


def from_array(pixels: np.ndarray, channel_order: str = "RGB") -> Picture:
    """Make a Picture from an H x W x C array in the given channel order (RGB, RGBA, BGR, BGRA or GRAY)."""
    order = channel_order.upper().replace("GRAY", "Y")
    if pixels.ndim == 2:
        pixels, order = pixels[:, :, None], "Y"
    if pixels.ndim != 3 or pixels.shape[2] != len(order) or not set(order) <= set("RGBAY"):
        raise BadInputError(
            f"pixel array of shape {pixels.shape} does not match channel order {channel_order}"
        )
    if pixels.dtype not in (np.uint8, np.uint16, np.float32):
        raise BadInputError(
            f"unsupported pixel type {pixels.dtype}: use 8-bit, 16-bit or 32-bit float images"
        )
    depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(pixels.dtype, 32)
    scale = _scale(pixels.dtype)
    alpha = pixels[:, :, order.index("A")].copy() if "A" in order else None
    if order == "Y":
        rgb = np.repeat(pixels, 3, axis=2)
    else:
        rgb = np.stack([pixels[:, :, order.index(c)] for c in "RGB"], axis=2)
    rgb = np.clip(rgb.astype(np.float32) / scale, 0.0, 1.0)
    return Picture(rgb=rgb, alpha=alpha, depth=depth)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Picture:
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"cannot read image {path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if pixels is None:
        raise BadInputError(f"cannot read image {path}: not an image format OpenCV can decode")
    h, w = pixels.shape[:2]
    if h * w > max_pixels:
        raise BadInputError(
            f"image {path} is {w}x{h} px ({h * w / 1e6:.0f} MP); the limit is {max_pixels / 1e6:.0f} MP: "
            "downscale it first"
        )
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    order = {1: "GRAY", 3: "BGR", 4: "BGRA"}.get(channels)
    if order is None:
        raise BadInputError(f"cannot read image {path}: {channels} channels (expected 1, 3 or 4)")
    return from_array(pixels, order)


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A selection mask as float32 H x W in {0, 1}; it must have the image's size."""
    picture = read_image(path)
    if picture.shape != shape:
        raise BadInputError(
            f"mask {path} is {picture.shape[1]}x{picture.shape[0]} px but the image is "
            f"{shape[1]}x{shape[0]} px: export the mask at the image's size"
        )
    return mask_from_array(picture.rgb.mean(axis=2))


def mask_from_array(values: np.ndarray) -> np.ndarray:
    # Masks often come as JPEGs: threshold so compression noise does not select the whole image.
    return (values > 0.5).astype(np.float32)


def to_array(picture: Picture, channel_order: str = "RGB") -> np.ndarray:
    """The inverse of from_array: H x W x C in the source's bit depth and the given channel order."""
    dtype = {8: np.uint8, 16: np.uint16}.get(picture.depth, np.float32)
    scale = _scale(np.dtype(dtype))
    rgb = np.clip(picture.rgb, 0.0, 1.0) * scale
    if dtype != np.float32:
        rgb = np.rint(rgb)
    channels = {"R": rgb[:, :, 0], "G": rgb[:, :, 1], "B": rgb[:, :, 2]}
    if "A" in channel_order:
        alpha = picture.alpha if picture.alpha is not None else np.full(picture.shape, scale)
        channels["A"] = alpha
    return np.stack([channels[c].astype(dtype) for c in channel_order.upper()], axis=2)


def write_image(path: str | Path, picture: Picture) -> Path:
    """Encode by the file's extension and write atomically (a crash never leaves half a file)."""
    path = Path(path)
    order = "BGRA" if picture.alpha is not None else "BGR"
    if picture.depth == 16 and path.suffix.lower() not in (".png", ".tif", ".tiff"):
        picture = Picture(picture.rgb, _alpha_to_8bit(picture.alpha), 8)
    if picture.depth == 32:
        picture = Picture(picture.rgb, _alpha_to_8bit(picture.alpha), 8)
    ok, encoded = cv2.imencode(path.suffix or ".png", to_array(picture, order))
    if not ok:
        raise BadInputError(f"cannot write {path}: OpenCV cannot encode '{path.suffix}' files; use .png")
    atomic_write_bytes(path, encoded.tobytes())
    return path


def _alpha_to_8bit(alpha: np.ndarray | None) -> np.ndarray | None:
    if alpha is None or alpha.dtype == np.uint8:
        return alpha
    return np.rint(np.clip(alpha.astype(np.float32) / _scale(alpha.dtype), 0, 1) * 255).astype(np.uint8)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
