"""Image quality measures for the benchmarks, without downloaded weights: patch-statistics distance (SWD),
sample diversity, and error and surviving fine detail inside a mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

PATCH = 7  # patch side, as in Karras et al.'s SWD


def to_float(image: np.ndarray) -> np.ndarray:
    """An image as float32 in [0, 1]: uint8 and uint16 are scaled, floats are taken as already in [0, 1]."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    return image.astype(np.float32)


def mask_to_float(mask: np.ndarray) -> np.ndarray:
    """A HxW (or HxWx1/3) mask as float32 in [0, 1]; uint8 masks are read as 0..255."""
    m = to_float(mask)
    return m if m.ndim == 2 else m[..., 0]


def _laplacian_pyramid(image: np.ndarray, min_size: int) -> list[np.ndarray]:
    """Band-pass levels, fine to coarse, then the low-pass residual (short side >= min_size)."""
    levels = []
    current = image
    while min(current.shape[:2]) // 2 >= min_size:
        down = cv2.pyrDown(current)
        levels.append(current - cv2.pyrUp(down, dstsize=(current.shape[1], current.shape[0])))
        current = down
    levels.append(current)
    return levels


def _patches(levels: Sequence[np.ndarray], count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` random 7x7 patches (flattened, float32) from a set of same-level images."""
    windows = [sliding_window_view(lv, (PATCH, PATCH), axis=(0, 1)) for lv in levels]
    sizes = np.array([w.shape[0] * w.shape[1] for w in windows])
    total = int(sizes.sum())
    if total == 0:
        raise ValueError(f"images are smaller than a {PATCH}x{PATCH} patch at some pyramid level")
    picks = np.sort(rng.choice(total, size=count, replace=False)) if total > count else np.arange(total)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for i, win in enumerate(windows):
        local = picks[(picks >= starts[i]) & (picks < starts[i + 1])] - starts[i]
        rows, cols = np.divmod(local, win.shape[1])
        out.append(win[rows, cols].reshape(len(local), -1))
    return np.concatenate(out).astype(np.float32)


def _wasserstein_1d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-column W1 distance between the empirical distributions in the columns of a and b."""
    a, b = np.sort(a, axis=0), np.sort(b, axis=0)
    if len(a) != len(b):
        # Compare quantile functions at common levels when the sets differ in size.
        n = max(len(a), len(b))
        levels = (np.arange(n) + 0.5) / n
        a, b = a[(levels * len(a)).astype(int)], b[(levels * len(b)).astype(int)]
    return np.abs(a - b).mean(axis=0)


def swd_per_level(
    images_a: Sequence[np.ndarray],
    images_b: Sequence[np.ndarray],
    *,
    n_patches: int = 8192,
    n_directions: int = 256,
    min_size: int = 16,
    seed: int = 0,
) -> list[float]:
    """Sliced Wasserstein distance between the 7x7 patch distributions of two image sets, per Laplacian
    pyramid level (fine to coarse). Images are HxWx3 (uint8 or float in [0, 1]); sizes may differ."""
    if not images_a or not images_b:
        raise ValueError("swd needs at least one image in each set")
    pyramids_a = [_laplacian_pyramid(to_float(im), min_size) for im in images_a]
    pyramids_b = [_laplacian_pyramid(to_float(im), min_size) for im in images_b]
    n_levels = min(len(p) for p in pyramids_a + pyramids_b)
    directions = np.random.default_rng(seed).standard_normal((n_levels, PATCH * PATCH * 3, n_directions))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    distances = []
    for level in range(n_levels):
        # A fresh generator per set: identical sets then draw identical patches, so swd(x, x) is exactly 0.
        a = _patches([p[level] for p in pyramids_a], n_patches, np.random.default_rng([seed, level]))
        b = _patches([p[level] for p in pyramids_b], n_patches, np.random.default_rng([seed, level]))
        # Karras et al. normalise each set by its own statistics; normalising both by the first set's keeps a
        # global colour or contrast shift visible, which matters when set a is the training image.
        shape = (-1, 3, PATCH * PATCH)
        mean = a.reshape(shape).mean(axis=(0, 2))[None, :, None]
        std = a.reshape(shape).std(axis=(0, 2))[None, :, None] + 1e-8
        a = ((a.reshape(shape) - mean) / std).reshape(len(a), -1)
        b = ((b.reshape(shape) - mean) / std).reshape(len(b), -1)
        proj = directions[level].astype(np.float32)
        distances.append(float(_wasserstein_1d(a @ proj, b @ proj).mean()))
    return distances


def swd(
    images_a: Sequence[np.ndarray],
    images_b: Sequence[np.ndarray],
    *,
    n_patches: int = 8192,
    n_directions: int = 256,
    min_size: int = 16,
    seed: int = 0,
) -> float:
    """Mean over pyramid levels of `swd_per_level`; 0 for identical sets, deterministic for a seed."""
    levels = swd_per_level(
        images_a, images_b, n_patches=n_patches, n_directions=n_directions, min_size=min_size, seed=seed
    )
    return float(np.mean(levels))


def diversity(samples: Sequence[np.ndarray], training_image: np.ndarray) -> float:
    """SinGAN's diversity: the std of each pixel value across samples, averaged over pixels and channels,
    divided by the std of the training image's pixel values. 0 when all samples are equal."""
    if len(samples) < 2:
        raise ValueError("diversity needs at least two samples")
    stack = np.stack([to_float(s) for s in samples]).astype(np.float64)
    return float(stack.std(axis=0).mean() / (to_float(training_image).std() + 1e-8))


def high_pass(image: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Luminance minus its Gaussian blur: the fine detail (strokes, texture) finer than about `sigma` px."""
    img = to_float(image)
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    return gray - cv2.GaussianBlur(gray, (0, 0), sigma)


def _high_pass_inside(
    result: np.ndarray, reference: np.ndarray, mask: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """The fine detail (`high_pass`) of both images at the pixels inside the mask, as float64 vectors."""
    inside = mask_to_float(mask) > 0.5
    if not inside.any():
        raise ValueError("the mask is empty")
    return tuple(high_pass(image, sigma)[inside].astype(np.float64) for image in (result, reference))


def detail_score(result: np.ndarray, reference: np.ndarray, mask: np.ndarray, sigma: float = 2.0) -> float:
    """How much of the reference's fine detail the result has inside the mask: <r, f> / max(|r|^2, |f|^2)
    over the high-pass of result r and reference f. That is their correlation times the ratio of their
    amplitudes (smaller over larger): 1 for the reference itself, near 0 for a blurred blob or unrelated
    texture, and below 1 for detail that is too weak or too strong."""
    r, f = _high_pass_inside(result, reference, mask, sigma)
    denominator = max(float(r @ r), float(f @ f))
    return float(r @ f / denominator) if denominator > 0 else 1.0


def texture_score(result: np.ndarray, reference: np.ndarray, mask: np.ndarray, sigma: float = 2.0) -> float:
    """How strong the result's fine texture is inside the mask against the reference's, whatever its
    strokes: the ratio of their high-pass RMS amplitudes, smaller over larger. 1 when the result is as
    textured as the reference there, near 0 for a blurred blob, below 1 for texture too weak or too strong.
    Unlike `detail_score` it does not ask for the reference's own strokes, which no method can recover
    once a paste has lost them; it asks whether the region looks painted at all."""
    r, f = (float(np.sqrt(np.mean(x**2))) for x in _high_pass_inside(result, reference, mask, sigma))
    larger = max(r, f)
    return min(r, f) / larger if larger > 0 else 1.0


@dataclass(frozen=True)
class MaskedError:
    """Errors inside a mask: RGB values in [0, 1] units, and CIE76 Delta E (Lab, ~2.3 is just noticeable)."""

    mae: float
    rmse: float
    delta_e: float


def masked_error(result: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> MaskedError:
    """Mean absolute error, RMSE and mean Delta E between two RGB images over the pixels inside the mask."""
    if result.shape[:2] != reference.shape[:2] or mask.shape[:2] != result.shape[:2]:
        raise ValueError(f"sizes differ: {result.shape}, {reference.shape}, mask {mask.shape}")
    inside = mask_to_float(mask) > 0.5
    if not inside.any():
        raise ValueError("the mask is empty")
    a, b = to_float(result), to_float(reference)
    diff = (a - b)[inside]
    # cv2 gives Lab in its true units for float32 input in [0, 1] (L 0..100).
    lab_a = cv2.cvtColor(np.clip(a, 0, 1), cv2.COLOR_RGB2Lab)[inside]
    lab_b = cv2.cvtColor(np.clip(b, 0, 1), cv2.COLOR_RGB2Lab)[inside]
    return MaskedError(
        mae=float(np.abs(diff).mean()),
        rmse=float(np.sqrt((diff**2).mean())),
        delta_e=float(np.linalg.norm(lab_a - lab_b, axis=1).mean()),
    )
