"""A small set of images as training data: every image fitted to size x size and kept in memory.

Sizes and modes may be mixed (grey, 16-bit, palette, with or without alpha): each is read as the engine
reads any image, then fitted. A set where some image has transparency (icons, sprites: cut-outs) is
learned with alpha: its images are padded to a square with transparency and scaled, the colour
premultiplied by alpha (so scaling blends colour and coverage together, and a transparent pixel has one
value); an opaque set is scaled by its short side and centre-cropped, as photo sets usually are.
Images are in [-1, 1], N x C x size x size, C = 3 or 4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from engine.errors import BadInputError
from engine.family import image_folder
from engine.imageio import alpha_fraction, image_files, read_image

MIN_IMAGES = 8  # fewer cannot show a style (and leave nothing to hold out)
MAX_IMAGES = 100_000


def load_set(folder: Path, size: int, name: str = "--images") -> tuple[torch.Tensor, list[Path]]:
    """The set's images fitted to size x size (N x C x size x size float32 in [-1, 1]), and their files."""
    folder = image_folder(Path(folder), name)
    files = image_files(folder)
    if len(files) < MIN_IMAGES:
        raise BadInputError(
            f"{name} {folder} has {len(files)} image{'s' * (len(files) != 1)}; a set generator needs at "
            f"least {MIN_IMAGES} (about 100 in one style is what it is made for)"
        )
    if len(files) > MAX_IMAGES:
        raise BadInputError(f"{name} {folder} has {len(files)} images; at most {MAX_IMAGES} are learned")
    pictures = []
    for path in files:
        try:
            pictures.append(read_image(path))
        except Exception as exc:
            raise BadInputError(f"cannot read {path} in {name}: {exc}") from None
    alphas = [None if p.alpha is None else alpha_fraction(p.alpha) for p in pictures]
    cut_out = any(a is not None and float(a.min()) < 1.0 for a in alphas)
    images = []
    for picture, alpha in zip(pictures, alphas, strict=True):
        rgb = torch.from_numpy(np.ascontiguousarray(picture.rgb.transpose(2, 0, 1)))
        if cut_out:
            a = torch.ones(1, *rgb.shape[1:]) if alpha is None else torch.from_numpy(alpha)[None]
            image = torch.cat([rgb * a, a])  # premultiplied
            h, w = image.shape[1:]
            side = max(h, w)
            top, left = (side - h) // 2, (side - w) // 2
            image = TF.pad(image, [left, top, side - w - left, side - h - top], fill=0.0)
            image = TF.resize(image, [size, size], antialias=True)
        else:
            image = TF.center_crop(TF.resize(rgb, [size], antialias=True), [size, size])
        images.append(image.clamp(0, 1))
    return torch.stack(images) * 2 - 1, files
