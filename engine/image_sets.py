"""Many pictures as one file: a contact sheet (torchvision's image grid) or an animation (Pillow's GIF and
WebP writers). Written atomically, as every output is."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from engine.errors import BadInputError
from engine.files import atomic_write_bytes
from engine.imageio import Picture, alpha_to_8bit, write_image

ANIMATION_SUFFIXES = (".gif", ".webp")


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
    """A looping animated GIF or WebP (by the extension). GIF keeps 256 colours and on/off transparency."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise BadInputError(
            f"cannot write an animation as {path}: use .gif or .webp (or a folder for frames)"
        )
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
