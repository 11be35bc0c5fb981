"""Reading and writing images: any format OpenCV knows, 8 or 16 bit, alpha kept; writes are atomic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.errors import BadInputError
from engine.files import atomic_write_bytes

# 100 MP: beyond this the float copies the engine works on need gigabytes. engine/__init__.py hands the
# same limit to OpenCV, which then refuses such files from their header, before decoding them.
MAX_PIXELS = 100_000_000
# Formats whose OpenCV encoder keeps a fourth (alpha) channel, and those that store 32-bit float pixels.
ALPHA_SUFFIXES = {".png", ".tif", ".tiff", ".webp", ".bmp", ".dib", ".avif"}
FLOAT_SUFFIXES = {".pfm", ".tif", ".tiff", ".hdr", ".pic"}


@dataclass
class Picture:
    """An image as the engine works on it, with what is needed to write it back the same way."""

    rgb: np.ndarray  # float32, H x W x 3, in [0, 1]
    alpha: np.ndarray | None = None  # H x W in the file's own dtype, written back untouched
    depth: int = 8  # bits per channel of the source (8 or 16)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


def visible_rgb(picture: Picture) -> np.ndarray:
    """The picture's colours, those of its fully transparent pixels filled in from the visible ones around
    them (cv2's inpainting). A transparent pixel shows nothing but still holds a colour, usually black
    where an editor erased or never painted: a model would learn it, and enlarging or blurring would bleed
    it into the visible edge as a dark fringe. The visible pixels are untouched."""
    if picture.alpha is None:
        return picture.rgb
    hidden = picture.alpha == 0
    if not hidden.any() or hidden.all():
        return picture.rgb
    eight = np.clip(np.rint(picture.rgb * 255.0), 0, 255).astype(np.uint8)
    filled = cv2.inpaint(eight, hidden.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    out = picture.rgb.copy()
    out[hidden] = filled[hidden].astype(np.float32) / 255.0
    return out


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
    if path.is_dir():
        raise BadInputError(f"cannot read image {path}: it is a folder; give an image file")
    if not path.is_file():
        raise BadInputError(f"cannot read image {path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    if _truncated_png(data):
        # Refused here: OpenCV's libpng would print a line of its own on stderr beside the engine's error.
        raise BadInputError(
            f"cannot read image {path}: the PNG file is cut short (an incomplete copy or download); "
            "copy or save it again"
        )
    try:
        pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as e:
        if "MAX_IMAGE_PIXELS" not in str(e):
            raise BadInputError(f"cannot read image {path}: OpenCV failed to decode it") from None
        raise BadInputError(
            f"image {path} is over the {max_pixels / 1e6:.0f} MP limit: downscale it first"
        ) from None
    if pixels is None:
        raise BadInputError(
            f"cannot read image {path}: it is damaged, or not an image file that OpenCV can decode"
        )
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
    # Float images hold 0-1; rounding noise of a thousandth either side is clipped, real HDR is refused.
    if pixels.dtype == np.float32 and not (
        np.isfinite(pixels).all() and -1e-3 <= pixels.min() <= pixels.max() <= 1 + 1e-3
    ):
        raise BadInputError(
            f"image {path} has floating-point values outside 0-1 (HDR): "
            "tone-map it to an 8- or 16-bit image first"
        )
    return from_array(pixels, order)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _truncated_png(data: np.ndarray) -> bool:
    """A PNG file that ends before its IEND chunk: walk the chunk lengths (CRCs are libpng's business)."""
    if data.size < 8 or bytes(data[:8]) != _PNG_SIGNATURE:
        return False
    view = data.data.cast("B")
    pos = 8
    while pos + 8 <= len(view):
        length = int.from_bytes(view[pos : pos + 4], "big")
        kind = bytes(view[pos + 4 : pos + 8])
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return pos > len(view)
    return True


# The usual image extensions; any other file is taken when OpenCV recognises its content (PPM, PFM, ...).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


def image_files(folder: Path) -> list[Path]:
    """The images in a folder (not recursive, hidden files skipped), sorted by name."""

    def is_image(path: Path) -> bool:
        if not path.is_file() or path.name.startswith("."):
            return False
        return path.suffix.lower() in IMAGE_SUFFIXES or cv2.haveImageReader(str(path))

    return sorted(p for p in Path(folder).iterdir() if is_image(p))


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A selection mask as float32 H x W in {0, 1}; it must have the image's size.

    White selects. A mask with alpha selects where it is white *and* opaque, so a white shape on a
    transparent layer selects the shape, not the whole image.
    """
    picture = read_image(path)
    if picture.shape != shape:
        raise BadInputError(
            f"mask {path} is {picture.shape[1]}x{picture.shape[0]} px but the image is "
            f"{shape[1]}x{shape[0]} px: export the mask at the image's size"
        )
    values = picture.rgb.mean(axis=2)
    if picture.alpha is not None:
        values = values * (picture.alpha.astype(np.float32) / _scale(picture.alpha.dtype))
    return mask_from_array(values)


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


def check_output_file(path: str | Path, inputs: tuple[str | Path, ...] = ()) -> Path:
    """Refuse, before any work is done, an output path that cannot be written as an image.

    Not a folder, an extension OpenCV can encode, and none of the command's own input files.
    """
    path = Path(path)
    if path.is_dir():
        raise BadInputError(
            f"--out {path} is a folder: give an image file name such as {path / 'result.png'}"
        )
    if not path.suffix or not cv2.haveImageWriter(str(path)):
        raise BadInputError(
            f"cannot write {path}: OpenCV cannot encode '{path.suffix}' files; use .png, .tif, .jpg or .webp"
        )
    for source in inputs:
        if Path(source).exists() and path.exists() and path.samefile(source):
            raise BadInputError(
                f"--out {path} is one of the inputs; the engine never writes over its inputs: "
                "choose another --out"
            )
    return path


def write_image(path: str | Path, picture: Picture) -> Path:
    """Encode by the file's extension and write atomically (a crash never leaves half a file)."""
    path = check_output_file(path)
    atomic_write_bytes(path, encode_image(path, picture))
    return path


def encode_image(path: Path, picture: Picture) -> bytes:
    """The file's bytes, in the format its extension names.

    16-bit pictures stay 16-bit in PNG and TIFF, 32-bit float ones stay float in PFM, TIFF and HDR; other
    formats get 8 bits. Alpha is written where the format keeps it; writing a picture whose alpha is not
    fully opaque to a format without alpha (JPEG) is an error rather than a silent loss.
    """
    suffix = path.suffix.lower()
    if picture.alpha is not None and suffix not in ALPHA_SUFFIXES:
        if picture.alpha.min() < _scale(picture.alpha.dtype):
            raise BadInputError(
                f"cannot write {path}: the image has transparency, which '{path.suffix}' files cannot keep; "
                "use .png, .tif or .webp"
            )
        picture = Picture(picture.rgb, None, picture.depth)  # fully opaque: nothing is lost
    if (picture.depth == 16 and suffix not in (".png", ".tif", ".tiff")) or (
        picture.depth == 32 and suffix not in FLOAT_SUFFIXES
    ):
        picture = Picture(picture.rgb, alpha_to_8bit(picture.alpha), 8)
    order = "BGRA" if picture.alpha is not None else "BGR"
    try:
        ok, encoded = cv2.imencode(suffix, to_array(picture, order))
    except cv2.error:
        ok = False
    if not ok:
        raise BadInputError(
            f"cannot write {path}: OpenCV cannot encode a {picture.depth}-bit "
            f"{'RGBA' if picture.alpha is not None else 'RGB'} image as '{path.suffix}'; use .png or .tif"
        )
    return encoded.tobytes()


def alpha_fraction(alpha: np.ndarray) -> np.ndarray:
    """A picture's alpha (in its file's dtype) as float32 coverage in [0, 1]."""
    return np.clip(alpha.astype(np.float32) / _scale(alpha.dtype), 0, 1)


def alpha_to_8bit(alpha: np.ndarray | None) -> np.ndarray | None:
    if alpha is None or alpha.dtype == np.uint8:
        return alpha
    return np.rint(alpha_fraction(alpha) * 255).astype(np.uint8)
