"""Many pictures as one file: a contact sheet (torchvision's image grid) or an animation (Pillow's GIF and
WebP writers; MP4 through PyAV, FFmpeg's H.264). Written atomically, as every output is."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from engine.errors import BadInputError
from engine.files import atomic_write_bytes
from engine.imageio import Picture, alpha_to_8bit, write_image

ANIMATION_SUFFIXES = (".gif", ".webp", ".mp4")


def _rgba8(picture: Picture) -> np.ndarray:
    """H x W x 4 uint8."""
    rgb = np.rint(np.clip(picture.rgb, 0, 1) * 255).astype(np.uint8)
    alpha = alpha_to_8bit(picture.alpha)
    return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8) if alpha is None else alpha])


def write_sheet(path: str | Path, pictures: list[Picture], columns: int | None = None) -> Path:
    """All pictures (of one size) in a grid, 2 px apart (transparent where they have alpha, else white)."""
    import torch
    from torchvision.utils import make_grid

    has_alpha = any(p.alpha is not None for p in pictures)
    tensors = torch.stack([torch.from_numpy(_rgba8(p)).permute(2, 0, 1) for p in pictures])
    columns = columns or int(np.ceil(np.sqrt(len(pictures))))
    grid = make_grid(
        tensors if has_alpha else tensors[:, :3], nrow=columns, padding=2, pad_value=0 if has_alpha else 255
    )
    pixels = grid.permute(1, 2, 0).numpy()
    rgb = pixels[..., :3].astype(np.float32) / 255
    return write_image(path, Picture(rgb, pixels[..., 3].copy() if has_alpha else None, 8))


def write_animation(path: str | Path, pictures: list[Picture], fps: float) -> Path:
    """A looping animated GIF or WebP, or an H.264 MP4 (by the extension). GIF keeps 256 colours and on/off
    transparency; MP4 has none (alpha is dropped: frames over black)."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise BadInputError(
            f"cannot write an animation as {path}: use .gif, .webp or .mp4 (or a folder for frames)"
        )
    if suffix == ".mp4":
        atomic_write_bytes(path, mp4_bytes(pictures, fps))
        return path
    has_alpha = any(p.alpha is not None for p in pictures)
    frames = [Image.fromarray(_rgba8(p), "RGBA" if has_alpha else None) for p in pictures]
    if not has_alpha:
        frames = [f.convert("RGB") for f in frames]
    data = io.BytesIO()
    duration = max(1, round(1000 / fps))
    options = {"disposal": 2} if suffix == ".gif" else {"lossless": True}
    frames[0].save(
        data, format=suffix[1:].upper(), save_all=True, append_images=frames[1:], duration=duration, loop=0,
        **options,
    )  # fmt: skip
    atomic_write_bytes(path, data.getvalue())
    return path


def mp4_bytes(pictures: list[Picture], fps: float, crf: int = 18) -> bytes:
    """An H.264 MP4 (yuv420p, which every player reads; odd sides padded by one repeated pixel row or
    column, as 4:2:0 needs even ones). crf 18: visually lossless."""
    from fractions import Fraction

    import av

    first = pictures[0].rgb
    h, w = first.shape[:2]
    even = (h + h % 2, w + w % 2)
    data = io.BytesIO()
    with av.open(data, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = even
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for picture in pictures:
            rgb = _rgba8(picture)[..., :3]
            rgb = np.pad(rgb, ((0, even[0] - h), (0, even[1] - w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return data.getvalue()
