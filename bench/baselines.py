"""Simple harmonization baselines to compare the engine against: Reinhard colour transfer and Poisson
blending (OpenCV's seamlessClone)."""

from __future__ import annotations

import cv2
import numpy as np

from bench.quality import mask_to_float, to_float
from engine.families.consingan.blend import poisson_clone


def _check(composite: np.ndarray, mask: np.ndarray, background: np.ndarray) -> None:
    if composite.ndim != 3 or composite.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB composite, got {composite.shape}")
    if mask.shape[:2] != composite.shape[:2] or background.shape != composite.shape:
        raise ValueError(
            f"sizes differ: composite {composite.shape}, mask {mask.shape}, bg {background.shape}"
        )


def _as_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(to_float(image) * 255), 0, 255).astype(np.uint8)


def reinhard_transfer(composite: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Reinhard et al. (2001) colour transfer: give the masked object of the composite the per-channel Lab
    mean and std of the background outside the mask, then blend it in with the (soft) mask. RGB uint8 out."""
    _check(composite, mask, background)
    soft = mask_to_float(mask)
    inside = soft > 0.5
    if not inside.any() or inside.all():
        return _as_uint8(composite)
    lab, lab_bg = _lab(composite), _lab(background)
    rgb = _moved(lab, lab[inside], lab_bg[~inside])
    out = to_float(composite) * (1 - soft[..., None]) + rgb * soft[..., None]
    return _as_uint8(out)


def ring_mask(inside: np.ndarray, width: int) -> np.ndarray:
    """The pixels within `width` px outside the bool mask `inside` (an elliptical dilation)."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return cv2.dilate(inside.astype(np.uint8), kernel).astype(bool) & ~inside


def ring_reinhard(composite: np.ndarray, mask: np.ndarray, width: int = 20) -> np.ndarray:
    """Reinhard's transfer from a ring of painting around the object: each CIELAB channel of the masked
    region given the mean and standard deviation of the composite's pixels within `width` px outside it
    (issue 25's baseline); blended in with the soft mask. RGB uint8 out."""
    soft = mask_to_float(mask)
    inside = soft > 0.5
    if not inside.any() or inside.all():
        return _as_uint8(composite)
    ring = ring_mask(inside, width)
    lab = _lab(composite)
    rgb = _moved(lab, lab[inside], lab[ring])
    out = to_float(composite) * (1 - soft[..., None]) + rgb * soft[..., None]
    return _as_uint8(out)


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(to_float(image), 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab)


def _moved(lab: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`lab` moved from the Lab mean and std of the `source` pixels to those of `target`: RGB in [0, 1]."""
    gain = target.std(axis=0) / np.maximum(source.std(axis=0), 1e-3)
    moved = (lab - source.mean(axis=0)) * gain + target.mean(axis=0)
    return np.clip(cv2.cvtColor(moved.astype(np.float32), cv2.COLOR_Lab2RGB), 0, 1)


def reinhard_to(image: np.ndarray, references: list[np.ndarray]) -> np.ndarray:
    """The whole image given the Lab mean and std of all the references' pixels (a style's colours, as a
    re-style baseline): RGB float in [0, 1]."""
    lab = _lab(image)
    target = np.concatenate([_lab(r).reshape(-1, 3) for r in references])
    return _moved(lab, lab.reshape(-1, 3), target)


def poisson_blend(composite: np.ndarray, mask: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Poisson-clone the masked object of the composite into the background (cv2.seamlessClone, NORMAL_CLONE):
    it keeps the object's gradients and takes its colours from the background at the mask's edge.

    The background is needed: cloning the composite into itself solves for the composite again (the
    boundary values are its own), so OpenCV returns it unchanged. Pixels outside the mask are the
    background's exactly.
    """
    _check(composite, mask, background)
    inside = mask_to_float(mask) > 0.5
    return poisson_clone(_as_uint8(composite), _as_uint8(background), inside)
