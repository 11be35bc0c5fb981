"""A harmonized selection in seconds, without training: the preview shown while a model trains.

At a working resolution of about WORK_SIDE px (the models' own), then carried to the picture's full size as
the models' results are (engine.families.consingan.apply: the change, upsampled, over the full-size input):

1. Colour: the harmonization models' own colour match (engine.families.consingan.blend, at the mode's
   default share): the selection takes its surroundings' hue, saturation and contrast from Poisson
   blending's solution and keeps its own lightness. The preview and the trained model's result therefore
   agree in colour, and the swap from one to the other does not jump.
2. Texture: a selection smoother than the painting around it (a pasted photo) is given the painting's
   strokes. Each of its pixels looks up the painting patch most like its own neighbourhood, both blurred
   (the analogy of GPNN's finest scale, Granot et al. CVPR 2022: queries and keys at the same blur, values
   sharp), and takes that patch's centre detail (its high-pass); the detail is added with the strength
   that brings the selection's texture up to that of a ring of painting around it, and not at all where
   the selection is already as textured. Mean voting over overlapping patches, and GPNN's coarse-to-fine
   re-synthesis, were measured and dropped: both blurred the selection and raised the error
   (docs/benchmarks.md, "Preview").

The patch search is exact and brute force in torch (distances as one matrix product per chunk of queries).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import BadInputError
from engine.imageio import Picture

WORK_SIDE = 256  # px, the long side the preview is made at
COLOR_MATCH = 1.0  # the harmonization mode's default (engine.families.consingan.modes)
PATCH = 8  # px, the side of the matched patches
KEY_STRIDE = 2  # px between the painting's patches that are searched
BLUR = 1.5  # px, the blur that queries and keys are compared at; detail is what it removes
RING = 0.08  # width of the ring of painting whose texture the selection is given, share of the long side
STRENGTH = 0.75  # share of the ring's texture the selection is brought up to (measured: 1 adds
# more error than it is worth, docs/benchmarks.md "Preview")
_CHUNK = 2048  # queries per distance matrix


@dataclass(frozen=True)
class PreviewSettings:
    work_side: int = WORK_SIDE
    color_match: float = COLOR_MATCH
    patch: int = PATCH
    key_stride: int = KEY_STRIDE
    blur: float = BLUR
    ring: float = RING
    strength: float = STRENGTH
    texture: bool = True  # False: the colour step only


def ring_of(inside: np.ndarray, width: int) -> np.ndarray:
    """The pixels within `width` px of the selection and outside it."""
    distance = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 3)
    return (distance > 0) & (distance <= width)


def _unfold(image: torch.Tensor, patch: int, stride: int = 1) -> torch.Tensor:
    """C x H x W -> positions x (C * patch * patch), row-major over the patches' top-left corners."""
    return F.unfold(image[None], patch, stride=stride)[0].T.contiguous()


def _nearest(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Index of each query's nearest key (squared L2), exact."""
    key_norms = (keys * keys).sum(1)
    out = torch.empty(len(queries), dtype=torch.long)
    for start in range(0, len(queries), _CHUNK):
        q = queries[start : start + _CHUNK]
        out[start : start + _CHUNK] = (key_norms[None] - 2.0 * (q @ keys.T)).argmin(1)  # |q|^2: same for all
    return out


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2))) if values.size else 0.0


def painting_detail(
    matched: np.ndarray, inside: np.ndarray, background: np.ndarray, usable: np.ndarray, s: PreviewSettings
) -> np.ndarray:
    """The painting's fine detail (image minus its blur) laid over the selection of `matched`: the selection
    is cut into patches overlapping by half, each takes the detail of the `background` patch (of `usable`
    pixels) whose blurred pixels are nearest its own blurred pixels, and overlaps are averaged. Zero outside
    the selection. H x W x 3."""
    h, w = inside.shape
    out = np.zeros_like(matched)
    p, step = s.patch, max(1, s.patch // 2)
    if min(h, w) < p:
        return out
    soft = cv2.GaussianBlur(background, (0, 0), s.blur)
    as_tensor = lambda image: torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # noqa: E731
    keys = _unfold(as_tensor(soft), p, s.key_stride)
    values = _unfold(as_tensor(background - soft), p, s.key_stride)
    unusable = torch.from_numpy((~usable).astype(np.float32))[None, None]
    keep = F.max_pool2d(unusable, p, s.key_stride)[0, 0].flatten() == 0
    if not keep.any():
        return out
    keys, values = keys[keep], values[keep]
    # the query grid covers the picture padded by a patch, so the selection's edges are covered too
    blurred = as_tensor(cv2.GaussianBlur(matched, (0, 0), s.blur))
    query = F.pad(blurred[None], (p, p, p, p), mode="replicate")[0]
    selected = F.pad(torch.from_numpy(inside.astype(np.float32))[None, None], (p, p, p, p))
    size = query.shape[1:]
    wanted = F.max_pool2d(selected, p, step)[0, 0].flatten() > 0
    patches = _unfold(query, p, step)
    laid = torch.zeros_like(patches)
    laid[wanted] = values[_nearest(patches[wanted], keys)]
    covered = wanted[:, None].to(patches.dtype).expand_as(patches)
    total = F.fold(laid.T[None], size, p, stride=step)[0]
    count = F.fold(covered.T[None], size, p, stride=step)[0].clamp_min(1.0)
    detail = (total / count)[:, p : p + h, p : p + w].permute(1, 2, 0).numpy()
    out[inside] = detail[inside]
    return out


def default_background(rgb: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """The picture with its selection inpainted from around it (OpenCV's Telea)."""
    image8 = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    radius = max(3, min(inside.shape) // 60)
    filled = cv2.inpaint(image8, inside.astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)
    return filled.astype(np.float32) / 255.0


def _high_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    return image - cv2.GaussianBlur(image, (0, 0), sigma)


def preview_small(
    rgb: np.ndarray,
    inside: np.ndarray,
    background: np.ndarray | None = None,
    settings: PreviewSettings = PreviewSettings(),
) -> np.ndarray:
    """The harmonized picture at the size it is given (the working resolution): H x W x 3 float in [0, 1].
    `background` (the painting without the paste) supplies the texture; by default the picture with its
    selection inpainted, whose inpainted pixels are then not used."""
    from engine.families.consingan.blend import color_match_offset

    s = settings
    matched = rgb + color_match_offset(rgb, inside, s.color_match)
    if not s.texture:
        return np.clip(matched, 0.0, 1.0)
    grown = cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if background is None:
        bg, usable = default_background(rgb, inside), ~grown
    else:
        bg, usable = background.astype(np.float32), np.ones_like(inside)
    ring = ring_of(grown, max(2, round(s.ring * max(inside.shape)))) & usable
    wanted = s.strength * _rms(_high_pass(bg, s.blur)[ring])
    own = _rms(_high_pass(matched, s.blur)[inside])
    missing = np.sqrt(max(0.0, wanted**2 - own**2))
    if missing > 1e-3:
        detail = painting_detail(matched, inside, bg, usable, s)
        have = _rms(_high_pass(detail, s.blur)[inside])
        if have > 1e-6:
            matched = matched + detail * (missing / have)
    return np.clip(np.where(inside[..., None], matched, rgb), 0.0, 1.0).astype(np.float32)


def harmonize_preview(
    picture: Picture,
    mask: np.ndarray,
    background: Picture | None = None,
    settings: PreviewSettings = PreviewSettings(),
) -> Picture:
    """The picture with its masked selection (H x W float, 1 = selected) harmonized without a model, at its
    full size; pixels outside the feathered mask are the input's exactly."""
    from engine.families.consingan.apply import carry_change, feathered_mask
    from engine.families.consingan.pyramid import fit_to_max_size, resize

    if mask.shape != picture.shape:
        raise BadInputError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} px but the image is "
            f"{picture.shape[1]}x{picture.shape[0]} px: they must match"
        )
    if background is not None and background.shape != picture.shape:
        raise BadInputError(
            f"background is {background.shape[1]}x{background.shape[0]} px but the image is "
            f"{picture.shape[1]}x{picture.shape[0]} px: they must match"
        )
    selected = mask > 0.5
    if not selected.any():
        raise BadInputError("the mask selects nothing: paint the region to harmonize white")
    if selected.all():
        raise BadInputError(
            "the mask selects the whole image: there is no painting around it to match; select only the "
            "pasted object"
        )
    # the models' own sizing and resampling (engine.families.consingan.pyramid), so the preview is carried
    # to full size exactly as their results are
    shape = fit_to_max_size(*picture.shape, settings.work_side)
    small = resize(picture.rgb, shape).clip(0.0, 1.0)
    small_mask = resize(mask.astype(np.float32), shape)
    inside = small_mask > 0.5
    if not inside.any():  # a selection thinner than a working pixel: keep its strongest ones
        inside = small_mask >= small_mask.max()
    bg = None if background is None else resize(background.rgb, shape).clip(0.0, 1.0)
    harmonized = preview_small(small, inside, bg, settings)
    return carry_change(picture, small, harmonized, feathered_mask(mask, shape, dilation=1, sigma=1.0))
