"""Poisson blending (OpenCV's seamlessClone), and the colour change it makes to a pasted selection.

Harmonization can move a selection part of the way towards its surroundings' colours before the generator
sees it (`apply_to_selection(color_match=...)`). Poisson blending gives that change: it keeps the
selection's own gradients and takes its colours from the pixels around it. The generator then gives the
selection the painting's texture. The colour match takes that change in two halves, in CIELAB: first the
hue and saturation (a*, b*), with the contrast of the selection's own light and shade brought to its
surroundings', then the lightness (L*), half Poisson's and half the mean of the painting around the
selection (Poisson's alone is what makes Poisson-blended objects fade into their surroundings). The
benchmark on cases with a known answer (docs/benchmarks.md) measured this against each method alone.
"""

from __future__ import annotations

import cv2
import numpy as np

# seamlessClone refuses or misplaces a mask whose bounding box touches the image border, and it clears the
# mask's outermost pixels; a reflected margin keeps every mask away from the border.
_MARGIN = 8
# The band around a selection whose contrast (and, at a colour match above 0.5, part of whose mean
# lightness) the colour match gives it: this share of the image's long side (10 px at a model's 250). The
# benchmark's error moved by 0.1 Delta E from 5 to 20 px.
_BAND = 0.04
# The colour match moves a selection's mean lightness (CIELAB L*, 0-100) by at most this much: a photo's
# exposure is corrected, a white ship on dark water is not turned dark. On the benchmark's cases (true
# shifts up to 20) the error is the same with 15 as without a limit, and 25% higher with 10 (lab cases).
_MAX_LIGHTNESS_SHIFT = 15.0
# A selection's contrast is scaled by at most this much either way (a flat selection is not blown up).
_CONTRAST_LIMITS = (0.5, 2.0)


def poisson_clone(source: np.ndarray, dest: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Clone the `inside` pixels of `source` into `dest` (H x W x 3 uint8) with cv2.seamlessClone.

    Inside the mask, the result keeps the source's gradients and takes its values at the mask's edge
    from `dest`; outside it, the result is `dest` exactly (OpenCV's solver perturbs those by a level or two).
    """
    if not inside.any():
        return dest.copy()
    kernel = np.ones((3, 3), np.uint8)
    if not cv2.erode(inside.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).any():
        # OpenCV clears a mask's outermost pixels; one only 1-2 px thick would be left with nothing to
        # solve for (and makes seamlessClone fail). Such a selection is copied as it is.
        return np.where(inside[..., None], source, dest)
    pad = ((_MARGIN, _MARGIN), (_MARGIN, _MARGIN), (0, 0))
    src = np.pad(source, pad, mode="reflect")
    dst = np.pad(dest, pad, mode="reflect")
    mask8 = np.pad(inside.astype(np.uint8) * 255, pad[:2])
    x, y, w, h = cv2.boundingRect(mask8)
    # OpenCV centres the mask's bounding box on this point with integer halving; this puts it back
    # exactly where it was. It also writes into the mask it is given, hence the copy.
    cloned = cv2.seamlessClone(src, dst, mask8.copy(), (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    cloned = cloned[_MARGIN:-_MARGIN, _MARGIN:-_MARGIN]
    return np.where(inside[..., None], cloned, dest)


def surroundings_offset(rgb: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The colour change (H x W x 3 float, zero outside `inside`) that Poisson blending makes to the
    selection of an image in [0, 1] so that it meets its surroundings' colours at its edge.

    Cloning an image into itself gives the image back: its values at the mask's edge are the selection's
    own. The destination is therefore the image with the selection inpainted from its surroundings.
    Everything is solved in 8 bits (OpenCV's solver), but only the change is taken from it, so the
    picture's own precision is kept.
    """
    if not inside.any() or inside.all():
        return np.zeros_like(rgb, dtype=np.float32)  # nothing selected, or nothing around it to match
    source = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    dest = cv2.inpaint(source, inside.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    cloned = poisson_clone(source, dest, inside)
    offset = (cloned.astype(np.float32) - source.astype(np.float32)) / 255.0
    return np.where(inside[..., None], offset, 0.0).astype(np.float32)


def _band(inside: np.ndarray) -> np.ndarray:
    """The pixels around a selection, _BAND of the image's long side wide: the painting nearest to it."""
    width = max(1, round(_BAND * max(inside.shape)))
    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return (cv2.dilate(inside.astype(np.uint8), kernel) > 0) & ~inside


def contrast_gain(lightness: np.ndarray, inside: np.ndarray, band: np.ndarray | None = None) -> float:
    """The factor that gives the selection's lightness (CIELAB L*) the spread, its standard deviation,
    of the band of pixels around it (`_band(inside)`, unless given): the painting's contrast there. 1 when
    there is no band (the selection is the whole image) or the selection is flat."""
    band = _band(inside) if band is None else band
    own = float(lightness[inside].std()) if inside.any() else 0.0
    if not band.any() or own < 1e-3:
        return 1.0
    return float(np.clip(lightness[band].std() / own, *_CONTRAST_LIMITS))


def color_match_offset(rgb: np.ndarray, inside: np.ndarray, share: float) -> np.ndarray:
    """The change (H x W x 3 float, zero outside `inside`) that moves the selection of an image in [0, 1]
    `share` (0-1) of the way towards its surroundings' colours.

    The first half of the scale moves its hue and saturation (CIELAB a* and b*) towards Poisson blending's
    and scales the contrast of its own light and shade (L* about its mean) towards its surroundings'; the
    second half moves its lightness to an even mix of Poisson's and of its own shading set at the mean
    lightness of the band of painting around it, its mean by at most _MAX_LIGHTNESS_SHIFT. 0.5 gives the
    selection its surroundings' hue, saturation and contrast and keeps its own mean lightness and the
    shape of its shading; 1 gives it their lightness too. (Poisson's lightness alone follows the
    selection's edge, which lets an object fade into what it touches; the band's mean alone ignores which
    side is lit. On the benchmark's 56 cases with a known answer the mix has a lower error than Poisson's
    lightness alone or a Reinhard transfer from that band, docs/benchmarks.md.)
    """
    chroma, light = min(1.0, 2.0 * share), max(0.0, 2.0 * share - 1.0)
    if chroma <= 0.0:
        return np.zeros_like(rgb, dtype=np.float32)
    offset = surroundings_offset(rgb, inside)
    if not offset.any():
        # Nothing to solve for (a selection 1-2 px thin), or the selection already meets its surroundings
        # to the 8-bit level: left as it is.
        return offset
    rgb = rgb.astype(np.float32)
    before = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    after = cv2.cvtColor(np.clip(rgb + offset, 0.0, 1.0), cv2.COLOR_RGB2Lab)
    moved = before + (after - before) * np.array([0.0, chroma, chroma], np.float32)
    own = before[..., 0]
    mean = own[inside].mean()
    band = _band(inside)
    shaded = mean + (own - mean) * contrast_gain(own, inside, band) ** chroma
    surroundings = float(own[band].mean()) if band.any() else mean
    # Poisson's lightness keeps the selection's own gradients, so at 1 the shading's contrast is halfway
    # between its own and the band's. (Adding Poisson's change to the contrast-matched shading instead
    # kept the band's contrast and measured worse: mean error 458 against 429 on the lab cases.)
    shift = 0.5 * after[..., 0] + 0.5 * (shaded - mean + surroundings) - shaded
    excess = float(shift[inside].mean())
    excess -= float(np.clip(excess, -_MAX_LIGHTNESS_SHIFT, _MAX_LIGHTNESS_SHIFT))
    moved[..., 0] = shaded + (shift - excess) * light
    matched = np.clip(cv2.cvtColor(moved, cv2.COLOR_Lab2RGB), 0.0, 1.0)
    return np.where(inside[..., None], matched - rgb, 0.0).astype(np.float32)
