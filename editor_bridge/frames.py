"""Layers and masks as raw frames: numpy arrays <-> bytes plus an `ImageDescriptor`, checked on the way in.

Decoding is zero-copy (`np.frombuffer` on the received frame, so the array is read-only); encoding copies only
when the array is not C-contiguous.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from editor_bridge.errors import BBoxOutOfBounds, FrameSizeMismatch, MissingBuffer, UnsupportedLayout
from editor_bridge.protocol import BBox, BitDepth, ChannelOrder, ImageDescriptor

# Little-endian on the wire whatever the host, so a descriptor means the same bytes everywhere.
_DTYPES: dict[BitDepth, np.dtype[Any]] = {
    BitDepth.U8: np.dtype("u1"),
    BitDepth.U16: np.dtype("<u2"),
    BitDepth.F32: np.dtype("<f4"),
}

# Index arrays that turn each order into canonical RGB(A) (or leave gray alone), and back.
_TO_CANONICAL: dict[ChannelOrder, tuple[ChannelOrder, tuple[int, ...] | None]] = {
    ChannelOrder.GRAY: (ChannelOrder.GRAY, None),
    ChannelOrder.GRAYA: (ChannelOrder.GRAYA, None),
    ChannelOrder.RGB: (ChannelOrder.RGB, None),
    ChannelOrder.RGBA: (ChannelOrder.RGBA, None),
    ChannelOrder.BGR: (ChannelOrder.RGB, (2, 1, 0)),
    ChannelOrder.BGRA: (ChannelOrder.RGBA, (2, 1, 0, 3)),
}

BufferLike = bytes | bytearray | memoryview


def bit_depth_of(dtype: np.dtype[Any] | type) -> BitDepth:
    given = np.dtype(dtype)
    for depth, wire in _DTYPES.items():
        if given.kind == wire.kind and given.itemsize == wire.itemsize:
            return depth
    raise UnsupportedLayout(f"pixel type {given} is not supported; convert to uint8, uint16 or float32")


def dtype_of(bit_depth: BitDepth) -> np.dtype[Any]:
    return _DTYPES[bit_depth]


def check_bbox(bbox: BBox | None, width: int, height: int) -> None:
    if bbox is not None and not bbox.fits(width, height):
        raise BBoxOutOfBounds(
            f"selection ({bbox.x}, {bbox.y}, {bbox.w}x{bbox.h}) lies outside the {width}x{height} image; "
            "clip the selection to the layer"
        )


def describe(
    array: np.ndarray, channel_order: ChannelOrder | str, buffer_index: int, bbox: BBox | None = None
) -> ImageDescriptor:
    """The descriptor for `array` (H x W or H x W x C) sent as buffer `buffer_index`."""
    order = ChannelOrder(channel_order)
    if array.ndim == 2:
        height, width, channels = *array.shape, 1
    elif array.ndim == 3:
        height, width, channels = array.shape
    else:
        raise UnsupportedLayout(f"an image must be H x W or H x W x C, not shape {array.shape}")
    if channels != order.channels:
        raise UnsupportedLayout(f"{order.value} needs {order.channels} channels but the array has {channels}")
    check_bbox(bbox, width, height)
    return ImageDescriptor(
        width=width,
        height=height,
        channels=channels,
        channel_order=order,
        bit_depth=bit_depth_of(array.dtype),
        bbox=bbox,
        buffer_index=buffer_index,
    )


def to_frame(array: np.ndarray) -> memoryview:
    """The array's bytes as a flat memoryview, without a copy when it is C-contiguous and little-endian."""
    wire = _DTYPES[bit_depth_of(array.dtype)]
    contiguous: Any = np.ascontiguousarray(array, dtype=wire)  # numpy's stubs do not call it a Buffer
    return memoryview(contiguous).cast("B")


def attach(
    buffers: list[Any], array: np.ndarray, channel_order: ChannelOrder | str, bbox: BBox | None = None
) -> ImageDescriptor:
    """Append `array` to a message's `buffers` and return the descriptor that refers to it."""
    desc = describe(array, channel_order, len(buffers), bbox)
    buffers.append(to_frame(array))
    return desc


def _nbytes(buffer: Any) -> int:
    return memoryview(buffer).nbytes


def check_buffer(desc: ImageDescriptor, buffers: Sequence[Any]) -> None:
    """Raise unless `buffers` holds a frame for `desc` of exactly the declared size."""
    if desc.buffer_index >= len(buffers):
        raise MissingBuffer(
            f"image refers to buffer {desc.buffer_index} but the message has {len(buffers)}; "
            "attach every layer and mask as a frame"
        )
    got = _nbytes(buffers[desc.buffer_index])
    if got != desc.nbytes:
        raise FrameSizeMismatch(
            f"buffer {desc.buffer_index} has {got} bytes but a {desc.width}x{desc.height} "
            f"{desc.channel_order.value} {desc.bit_depth.value} image needs {desc.nbytes}; "
            "send the layer's raw pixels without padding or a header"
        )
    check_bbox(desc.bbox, desc.width, desc.height)


def from_frame(buffers: Sequence[Any], desc: ImageDescriptor) -> np.ndarray:
    """The H x W x C array that `desc` describes, viewing the frame (read-only for received frames)."""
    check_buffer(desc, buffers)
    flat = np.frombuffer(buffers[desc.buffer_index], dtype=_DTYPES[desc.bit_depth])
    shaped: np.ndarray = flat.reshape(desc.height, desc.width, desc.channels)
    return shaped


def to_canonical(array: np.ndarray, channel_order: ChannelOrder | str) -> tuple[np.ndarray, ChannelOrder]:
    """Reorder channels to RGB or RGBA (gray stays gray); returns the array and its new order.

    A view when nothing moves or for BGR (a reversed stride); a copy for BGRA.
    """
    order = ChannelOrder(channel_order)
    target, index = _TO_CANONICAL[order]
    if index is None:
        return array, target
    _check_channels(array, order)
    if order is ChannelOrder.BGR:
        return array[..., ::-1], target
    return array[..., list(index)], target


def from_canonical(array: np.ndarray, channel_order: ChannelOrder | str) -> np.ndarray:
    """Reorder an RGB(A) or gray array into `channel_order` (e.g. BGRA to write back into a Krita layer)."""
    order = ChannelOrder(channel_order)
    canonical, index = _TO_CANONICAL[order]
    _check_channels(array, canonical)
    if index is None:
        return array
    if order is ChannelOrder.BGR:
        return array[..., ::-1]
    return array[..., list(index)]  # the swaps used here are their own inverse


def _check_channels(array: np.ndarray, order: ChannelOrder) -> None:
    channels = 1 if array.ndim == 2 else array.shape[-1]
    if array.ndim not in (2, 3) or channels != order.channels:
        raise UnsupportedLayout(
            f"{order.value} needs {order.channels} channels, got an array of {array.shape}"
        )


def crop(array: np.ndarray, bbox: BBox | None) -> np.ndarray:
    """The selection's part of the image, as a view; the whole image when there is no selection."""
    if bbox is None:
        return array
    check_bbox(bbox, array.shape[1], array.shape[0])
    return array[bbox.y : bbox.y + bbox.h, bbox.x : bbox.x + bbox.w]
