"""Editor layers <-> engine pictures: any channel order and bit depth in, the same layout back out."""

from __future__ import annotations

import numpy as np

from editor_bridge import frames
from editor_bridge.protocol import BBox, ChannelOrder, ImageDescriptor
from engine.imageio import Picture, from_array, to_array


def picture_from_frame(array: np.ndarray, desc: ImageDescriptor) -> Picture:
    """The picture in a received frame (Krita BGRA, GIMP RGBA, gray...), alpha kept for the way back."""
    canonical, order = frames.to_canonical(array, desc.channel_order)
    if order is ChannelOrder.GRAYA:
        gray, alpha = canonical[..., :1], canonical[..., 1:]
        canonical, order = np.concatenate([gray, gray, gray, alpha], axis=2), ChannelOrder.RGBA
    return from_array(np.asarray(canonical), order.value)


def picture_in(buffers, desc: ImageDescriptor) -> Picture:
    """The picture a request's frame `desc` (one of `buffers`) holds."""
    return picture_from_frame(frames.from_frame(buffers, desc), desc)


def frame_from_picture(picture: Picture, desc: ImageDescriptor) -> np.ndarray:
    """`picture` as an array laid out as `desc` says (its channel order and the source's bit depth)."""
    order = desc.channel_order
    if order in (ChannelOrder.GRAY, ChannelOrder.GRAYA):
        gray = Picture(np.repeat(picture.rgb.mean(axis=2, keepdims=True), 3, axis=2), picture.alpha,
                       picture.depth)  # fmt: skip
        rgba = to_array(gray, "RGBA" if order is ChannelOrder.GRAYA else "RGB")
        out = rgba[..., [0, 3]] if order is ChannelOrder.GRAYA else rgba[..., :1]
    else:
        canonical = "RGBA" if order.channels == 4 else "RGB"
        out = frames.from_canonical(to_array(picture, canonical), order)
    return np.ascontiguousarray(out, dtype=frames.dtype_of(desc.bit_depth))


def crop_picture(picture: Picture, box: BBox) -> Picture:
    """The `box` region of `picture` (alpha and bit depth kept)."""
    rows, cols = slice(box.y, box.y + box.h), slice(box.x, box.x + box.w)
    alpha = None if picture.alpha is None else picture.alpha[rows, cols]
    return Picture(picture.rgb[rows, cols], alpha, picture.depth)


def selection_mask(array: np.ndarray, bbox: BBox | None) -> np.ndarray:
    """H x W float32 in {0, 1}: 1 where the GRAY mask is nonzero (and inside the bbox, when one is given)."""
    mask = (array[..., 0] > 0).astype(np.float32)
    if bbox is not None:
        inside = np.zeros_like(mask)
        inside[bbox.y : bbox.y + bbox.h, bbox.x : bbox.x + bbox.w] = 1.0
        mask *= inside
    return mask
