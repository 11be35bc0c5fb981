"""Training-time augmentations of the coarsest training image: colour/noise transforms plus cut-out holes
(harmonization) and moved tiles (editing), as the reference does with albumentations, in numpy and cv2."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

# The reference draws hole sizes in pixels for its coarsest harmonization scale, whose short side is
# min_size = 120 px; sizes are scaled by (short side / 120) so holes cover the same fraction at other sizes.
REFERENCE_SHORT_SIDE = 120

COLOUR_PROBABILITY = 0.25
HOLES_PROBABILITY = 0.9

# The reference's outer OneOf picks a branch with probability proportional to each branch's p: three nested
# OneOf groups (default p=0.5) and HueSaturationValue(p=0.1). Nested members are applied with force_apply,
# so within a group only the relative p matters: MultiplicativeNoise has p=0.2, the rest the default 0.5.
_COLOUR_CHOICES: tuple[tuple[str, float], ...] = (
    ("multiplicative_noise", 0.5 / 1.6 * 0.2 / 1.2),
    ("additive_gaussian_noise", 0.5 / 1.6 * 0.5 / 1.2),
    ("gauss_noise", 0.5 / 1.6 * 0.5 / 1.2),
    ("invert", 0.5 / 1.6 * 0.5),
    ("sepia", 0.5 / 1.6 * 0.5),
    ("channel_dropout", 0.5 / 1.6 * 0.5),
    ("channel_shuffle", 0.5 / 1.6 * 0.5),
    ("hue_saturation_value", 0.1 / 1.6),
)
COLOUR_TRANSFORMS: tuple[str, ...] = tuple(name for name, _ in _COLOUR_CHOICES)

# Tile count -> (tile size range, translation range) as fractions of the image size; 4 stands for 4 or more.
_TILE_RANGES: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {
    1: ((0.2, 0.5), (0.05, 0.15)),
    2: ((0.15, 0.3), (0.05, 0.1)),
    3: ((0.1, 0.2), (0.05, 0.1)),
    4: ((0.1, 0.15), (0.05, 0.1)),
}

_SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)


@dataclass(frozen=True)
class HarmonizationPlan:
    """What one harmonization augmentation does; drawn first so that tests can count the kinds."""

    colour: str | None  # a name from COLOUR_TRANSFORMS, or None
    holes: tuple[tuple[int, int, int, int], ...]  # (y1, y2, x1, x2), half-open
    fill: tuple[int, int, int]  # RGB


@dataclass(frozen=True)
class Tile:
    """A rectangle copied from (y, x) to (new_y, new_x) of the original image."""

    y: int
    x: int
    h: int
    w: int
    new_y: int
    new_x: int


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 RGB image, got {image.dtype} {image.shape}")


def _randint(rng: np.random.Generator, low: int, high: int) -> int:
    """Python's random.randint (both ends inclusive), which the reference uses throughout."""
    return int(rng.integers(low, high + 1))


def draw_harmonization_plan(shape: tuple[int, ...], rng: np.random.Generator) -> HarmonizationPlan:
    """Draw the colour transform (or none) and the cut-out holes for an image of this shape."""
    height, width = shape[:2]
    # The reference's fill colour is randint(0, 256), which can overflow uint8; 0..255 is what it means.
    red, green, blue = (int(c) for c in rng.integers(0, 256, size=3))
    num_holes = _randint(rng, 1, 2)
    low, high = (15, 30) if num_holes == 2 else (30, 60)
    scale = min(height, width) / REFERENCE_SHORT_SIDE
    hole_h = max(1, round(_randint(rng, low, high) * scale))
    hole_w = max(1, round(_randint(rng, low, high) * scale))

    colour = None
    if rng.random() < COLOUR_PROBABILITY:
        probs = np.array([p for _, p in _COLOUR_CHOICES])
        colour = COLOUR_TRANSFORMS[int(rng.choice(len(probs), p=probs / probs.sum()))]

    holes: list[tuple[int, int, int, int]] = []
    if rng.random() < HOLES_PROBABILITY:
        # albumentations' Cutout: a fixed-size hole whose centre is uniform over the image, clipped.
        for _ in range(num_holes):
            cy, cx = _randint(rng, 0, height), _randint(rng, 0, width)
            y1 = min(max(cy - hole_h // 2, 0), height)
            x1 = min(max(cx - hole_w // 2, 0), width)
            holes.append((y1, min(y1 + hole_h, height), x1, min(x1 + hole_w, width)))
    return HarmonizationPlan(colour, tuple(holes), (red, green, blue))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _multiplicative_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # elementwise=True, per_channel=True: an independent multiplier per pixel and channel.
    return _to_uint8(image * rng.uniform(0.5, 1.5, size=image.shape))


def _additive_gaussian_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # imgaug's AdditiveGaussianNoise as albumentations wraps it: scale ~ U(0.01, 0.05) * 255, and the same
    # noise on all channels (per_channel=False), so it is luminance grain.
    sigma = rng.uniform(0.01 * 255, 0.05 * 255)
    return _to_uint8(image + rng.normal(0.0, sigma, size=(*image.shape[:2], 1)))


def _gauss_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # GaussNoise: variance ~ U(10, 50), independent per channel.
    sigma = np.sqrt(rng.uniform(10.0, 50.0))
    return _to_uint8(image + rng.normal(0.0, sigma, size=image.shape))


def _invert(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - image


def _sepia(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return cv2.transform(image, _SEPIA)  # saturates to uint8 as albumentations' ToSepia does


def _channel_dropout(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    out[:, :, int(rng.integers(0, 3))] = 0
    return out


def _channel_shuffle(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(image[:, :, rng.permutation(3)])


def _hue_saturation_value(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # HueSaturationValue(20, 30, 20) on uint8: shifts in OpenCV's HSV units (hue 0..179, wrapping).
    hue, sat, val = rng.uniform(-20, 20), rng.uniform(-30, 30), rng.uniform(-20, 20)
    h, s, v = cv2.split(cv2.cvtColor(image, cv2.COLOR_RGB2HSV))
    levels = np.arange(256, dtype=np.float32)
    h = cv2.LUT(h, np.mod(levels + hue, 180).astype(np.uint8))
    s = cv2.LUT(s, _to_uint8(levels + sat))
    v = cv2.LUT(v, _to_uint8(levels + val))
    return cv2.cvtColor(cv2.merge([h, s, v]), cv2.COLOR_HSV2RGB)


_COLOUR_FUNCTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "multiplicative_noise": _multiplicative_noise,
    "additive_gaussian_noise": _additive_gaussian_noise,
    "gauss_noise": _gauss_noise,
    "invert": _invert,
    "sepia": _sepia,
    "channel_dropout": _channel_dropout,
    "channel_shuffle": _channel_shuffle,
    "hue_saturation_value": _hue_saturation_value,
}


def apply_harmonization_plan(
    image: np.ndarray, plan: HarmonizationPlan, rng: np.random.Generator
) -> np.ndarray:
    """Apply a drawn plan; `rng` supplies the transform's own parameters (noise, shifts, channel)."""
    _check_image(image)
    # Every colour function returns a new array, so the holes never write into the caller's image.
    out = image.copy() if plan.colour is None else _COLOUR_FUNCTIONS[plan.colour](image, rng)
    for y1, y2, x1, x2 in plan.holes:
        out[y1:y2, x1:x2] = plan.fill
    return out


def smooth_region(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy with the strokes inside one random ellipse blurred away, as a pasted photo has none.

    Not in the reference. Its augmentations change colours and cut flat holes, but never show the model a
    region with the painting's layout and without its texture, which is what a pasted photo is; this was
    meant to teach it to paint strokes back into such a region. Measured, it did not help beyond the seed
    spread (docs/benchmarks.md), so every preset leaves it off. The ellipse spans 20-50% of each side, the
    blur's sigma is 1-3 px at the reference's 120 px scale."""
    _check_image(image)
    height, width = image.shape[:2]
    scale = min(height, width) / REFERENCE_SHORT_SIDE
    sigma = rng.uniform(1.0, 3.0) * scale
    centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
    axes = (max(1, round(rng.uniform(0.1, 0.25) * width)), max(1, round(rng.uniform(0.1, 0.25) * height)))
    inside = np.zeros((height, width), np.uint8)
    cv2.ellipse(inside, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    return np.where(inside[..., None] > 0, blurred, image)


def recolour_region(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy with the colours inside one random ellipse changed, as a pasted object's colours do not
    match the painting around it: hue rotated by up to 90 degrees, saturation, per-channel gains and
    contrast changed, with a hard edge. Not in the reference, whose colour transforms change the whole
    image; this was meant to teach the model to pull such a region's colours to the painting's. Measured,
    it made the benchmark's mean error worse at every colour match (docs/benchmarks.md), so every preset
    leaves it off. The ellipse spans 20-50% of each side."""
    _check_image(image)
    height, width = image.shape[:2]
    centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
    axes = (max(1, round(rng.uniform(0.1, 0.25) * width)), max(1, round(rng.uniform(0.1, 0.25) * height)))
    inside = np.zeros((height, width), np.uint8)
    cv2.ellipse(inside, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    hsv = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_RGB2HSV)  # H in degrees
    hsv[..., 0] = np.mod(hsv[..., 0] + rng.uniform(-90, 90), 360)
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.5, 1.5), 0, 1)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * rng.uniform(0.7, 1.3, size=3).astype(np.float32)
    region = inside > 0
    mean = rgb[region].mean(axis=0) if region.any() else rgb.mean(axis=(0, 1))
    rgb = mean + (rgb - mean) * rng.uniform(0.7, 1.3)
    return np.where(region[..., None], _to_uint8(rgb * 255), image)


def augment_for_harmonization(
    image: np.ndarray,
    rng: np.random.Generator,
    smooth_probability: float = 0.0,
    recolour_probability: float = 0.0,
) -> np.ndarray:
    """One augmented copy of a uint8 HxWx3 RGB image for harmonization training; the input is untouched.
    smooth_probability, recolour_probability: the chances of `smooth_region`, then `recolour_region`, first
    (0, the reference's augmentation, draws nothing more from rng)."""
    _check_image(image)
    if smooth_probability > 0 and rng.random() < smooth_probability:
        image = smooth_region(image, rng)
    if recolour_probability > 0 and rng.random() < recolour_probability:
        image = recolour_region(image, rng)
    return apply_harmonization_plan(image, draw_harmonization_plan(image.shape, rng), rng)


def draw_tiles(shape: tuple[int, ...], rng: np.random.Generator, max_tiles: int = 5) -> list[Tile]:
    """The reference's shuffle_grid choices: 1..max_tiles tiles, smaller and moved less if there are more."""
    rows, cols = shape[:2]
    count = _randint(rng, 1, max_tiles)
    size_range, shift_range = _TILE_RANGES[min(count, 4)]
    tiles = []
    for _ in range(count):
        # The reference draws the corner with randint(0, size), which can give an empty tile; stay inside.
        y, x = int(rng.integers(0, rows)), int(rng.integers(0, cols))
        h = min(_randint(rng, int(rows * size_range[0]), int(rows * size_range[1])), rows - y)
        w = min(_randint(rng, int(cols * size_range[0]), int(cols * size_range[1])), cols - x)
        dy = _randint(rng, int(rows * shift_range[0]), int(rows * shift_range[1]))
        dx = _randint(rng, int(cols * shift_range[0]), int(cols * shift_range[1]))
        # As in the reference, one sign for both axes (tiles move up-left or down-right), clamped inside.
        if rng.random() < 0.5:
            dy, dx = max(-dy, -y), max(-dx, -x)
        else:
            dy, dx = min(dy, rows - h - y), min(dx, cols - w - x)
        tiles.append(Tile(y, x, h, w, y + dy, x + dx))
    return tiles


def apply_tiles(image: np.ndarray, tiles: list[Tile]) -> np.ndarray:
    """Copy each tile of the original image to its new place (later tiles win where they overlap)."""
    _check_image(image)
    out = image.copy()
    for t in tiles:
        out[t.new_y : t.new_y + t.h, t.new_x : t.new_x + t.w] = image[t.y : t.y + t.h, t.x : t.x + t.w]
    return out


def shuffle_tiles(image: np.ndarray, rng: np.random.Generator, max_tiles: int = 5) -> np.ndarray:
    """The editing augmentation: a copy of a uint8 HxWx3 image with a few tiles moved (input untouched)."""
    _check_image(image)
    if max_tiles < 1:
        raise ValueError(f"max_tiles must be at least 1, got {max_tiles}")
    return apply_tiles(image, draw_tiles(image.shape, rng, max_tiles))
