"""Contact sheets of result strips for the benchmarks' --sheet options."""

from __future__ import annotations

import cv2
import numpy as np


def write_strips(path: str, strips: list[np.ndarray]) -> None:
    """Strips (H x W x 3 float RGB in [0, 1], any sizes) one under the other, 4 px of white between them
    and on the right of the narrower ones, as an 8-bit image file (JPEG at quality 90)."""
    width = max(s.shape[1] for s in strips)
    padded = [np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0)), constant_values=1.0) for s in strips]
    sheet = (np.clip(np.concatenate(padded, axis=0), 0, 1) * 255).round().astype(np.uint8)
    cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
