"""Training samples from a folder of images: a random square crop at a random scale, flipped half the time.

Each image is resized (torchvision) so that its short side is `crop` times a factor drawn from the
config's range, never larger than the image itself (at least the crop), then cropped at a random place:
from one large painting this gives crops of its whole composition down to its brush strokes. The
randomness comes from the run's own generator, so a run repeats exactly and resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from engine.errors import BadInputError
from engine.families.cyclegan.config import Config
from engine.imageio import image_files, read_image

CACHE_BYTES = 1 << 30  # decoded images kept in memory (8 bits a channel) up to this; the rest read each time


class Domain:
    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = Path(folder), name
        self.files = image_files(self.folder)
        if not self.files:
            raise BadInputError(f"{name} {self.folder} has no images (PNG, JPEG, TIFF, WebP, ...)")
        self._cache: dict[int, torch.Tensor] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> torch.Tensor:
        """3 x H x W uint8."""
        if index in self._cache:
            return self._cache[index]
        try:
            rgb = read_image(self.files[index]).rgb
        except Exception as exc:
            raise BadInputError(f"cannot read {self.files[index]} in {self.name}: {exc}") from None
        tensor = torch.from_numpy(np.rint(rgb * 255).astype(np.uint8)).permute(2, 0, 1).contiguous()
        if self._cached_bytes + tensor.numel() <= CACHE_BYTES:
            self._cache[index] = tensor
            self._cached_bytes += tensor.numel()
        return tensor

    def sample(self, config: Config, rng: torch.Generator, index: int | None = None) -> torch.Tensor:
        """1 x 3 x crop x crop in [-1, 1]."""
        if index is None:
            index = int(torch.randint(len(self.files), (1,), generator=rng))
        image = self.image(index)
        crop = config.crop
        short = min(image.shape[1:])
        spread = config.scale_max - config.scale_min
        factor = config.scale_min + float(torch.rand((), generator=rng)) * spread
        target = max(crop, min(round(crop * factor), short))
        if target != short:
            image = TF.resize(image, [target], antialias=True)
        h, w = image.shape[1:]
        top = int(torch.randint(h - crop + 1, (1,), generator=rng))
        left = int(torch.randint(w - crop + 1, (1,), generator=rng))
        image = image[:, top : top + crop, left : left + crop]
        if float(torch.rand((), generator=rng)) < 0.5:
            image = TF.horizontal_flip(image)
        return (image.float() / 127.5 - 1.0).unsqueeze(0)
