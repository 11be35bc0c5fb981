"""Scale schedule of the image pyramid and the resizing used to build it."""

from __future__ import annotations

import math

import cv2
import numpy as np

from engine.errors import BadInputError
from engine.families.consingan.config import ModelConfig
from engine.families.consingan.modes import Pyramid, spec

Shape = tuple[int, int]  # (height, width)

MIN_SIDE = 8  # below this the 3x3 convolutions of a stage have nothing left to see


def fit_to_max_size(height: int, width: int, max_size: int) -> Shape:
    """Shrink (never enlarge) so that the long side is at most max_size, as the reference does."""
    scale = min(max_size / max(height, width), 1.0)
    # The reference's imresize rounds output sizes up.
    return math.ceil(height * scale - 1e-9), math.ceil(width * scale - 1e-9)


def scale_factor(final: Shape, cfg: ModelConfig) -> float:
    if cfg.n_stages == 1:
        return 1.0
    min_size = min(cfg.min_size, min(final))
    return (min_size / min(final)) ** (1.0 / (cfg.n_stages - 1))


def stage_scales(cfg: ModelConfig, factor: float) -> list[float]:
    """Scale of each stage relative to the final image, coarsest first."""
    stop = cfg.n_stages - 1
    if stop == 0:
        return [1.0]
    if spec(cfg.mode).pyramid is Pyramid.GEOMETRIC or stop == 1:
        scales = [factor ** (stop - i) for i in range(stop)]
    else:
        # ConSinGAN's rescaling: exponents fall off logarithmically, giving more stages at the fine end.
        scales = [factor ** ((stop - 1) / math.log(stop) * math.log(stop - i) + 1) for i in range(stop)]
    return [*scales, 1.0]


def stage_shapes(height: int, width: int, cfg: ModelConfig) -> list[Shape]:
    """Training pyramid for an image of this size: the final shape fits max_size; coarsest first."""
    final = fit_to_max_size(height, width, cfg.max_size)
    if min(final) < MIN_SIDE:
        raise BadInputError(
            f"image of {width}x{height} px is too thin: both sides must be at least {MIN_SIDE} px "
            "after fitting to --max-size"
        )
    factor = scale_factor(final, cfg)
    return [
        (math.ceil(final[0] * s - 1e-9), math.ceil(final[1] * s - 1e-9)) for s in stage_scales(cfg, factor)
    ]


def retarget_shapes(trained: list[Shape], height: int, width: int) -> list[Shape]:
    """Stage shapes for an output of another size: every stage scaled like the final one."""
    th, tw = trained[-1]
    sh, sw = height / th, width / tw
    shapes = [(max(MIN_SIDE, round(h * sh)), max(MIN_SIDE, round(w * sw))) for h, w in trained[:-1]]
    return [*shapes, (height, width)]


def resize(image: np.ndarray, shape: Shape) -> np.ndarray:
    """Resize an HxWxC float image; area averaging when shrinking (anti-aliased), bicubic when growing."""
    h, w = shape
    if image.shape[:2] == (h, w):
        return image.copy()
    shrinking = h <= image.shape[0] and w <= image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    if out.ndim == 2 and image.ndim == 3:
        out = out[:, :, None]
    return out


def build_pyramid(image: np.ndarray, shapes: list[Shape]) -> list[np.ndarray]:
    """Resize from the full image to each shape directly (no accumulating blur), coarsest first."""
    return [np.clip(resize(image, s), 0.0, 1.0) for s in shapes]
