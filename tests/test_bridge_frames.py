"""Raw frames: descriptors, byte counts, channel orders, bounds, and that decoding does not copy."""

from __future__ import annotations

import numpy as np
import pytest
from bridge_samples import layer

from editor_bridge import frames
from editor_bridge.errors import (
    BBoxOutOfBounds,
    FrameSizeMismatch,
    ImageError,
    MissingBuffer,
    UnsupportedLayout,
)
from editor_bridge.protocol import BBox, BitDepth, ChannelOrder, ErrorCode


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("order", list(ChannelOrder))
def test_attach_and_decode_round_trip(order, dtype):
    array = layer(c=order.channels, dtype=dtype)
    buffers: list = []
    desc = frames.attach(buffers, array, order)
    assert desc.bit_depth is frames.bit_depth_of(dtype)
    assert desc.nbytes == array.nbytes == memoryview(buffers[0]).nbytes
    back = frames.from_frame(buffers, desc)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, array)


def test_two_dimensional_arrays_are_one_channel():
    desc = frames.describe(np.zeros((3, 4), np.uint8), "GRAY", 0)
    assert (desc.width, desc.height, desc.channels) == (4, 3, 1)


def test_encode_and_decode_do_not_copy():
    array = layer(64, 64, 4)
    view = frames.to_frame(array)
    assert np.shares_memory(np.frombuffer(view, np.uint8), array)
    received = bytes(view)  # what a socket hands over
    desc = frames.describe(array, "RGBA", 0)
    decoded = frames.from_frame([received], desc)
    assert np.shares_memory(decoded, np.frombuffer(received, np.uint8))
    assert not decoded.flags.writeable


def test_non_contiguous_and_big_endian_arrays_are_converted():
    array = layer(8, 8, 4)[:, ::2]
    assert np.array_equal(np.frombuffer(frames.to_frame(array), np.uint8).reshape(8, 4, 4), array)
    big = layer(2, 2, 3, np.uint16).astype(">u2")
    assert np.array_equal(np.frombuffer(frames.to_frame(big), "<u2").reshape(2, 2, 3), big)


def test_byte_count_mismatch_is_refused():
    desc = frames.describe(layer(4, 4, 4), "RGBA", 0)
    with pytest.raises(FrameSizeMismatch, match="has 63 bytes but a 4x4 RGBA u8 image needs 64") as err:
        frames.from_frame([b"\0" * 63], desc)
    assert err.value.code is ErrorCode.BAD_IMAGE
    with pytest.raises(FrameSizeMismatch):
        frames.check_buffer(desc, [b"\0" * 65])


def test_missing_buffer_is_refused():
    desc = frames.describe(layer(), "RGBA", 2)
    with pytest.raises(MissingBuffer, match="buffer 2 but the message has 1"):
        frames.from_frame([frames.to_frame(layer())], desc)


def test_bbox_bounds():
    array = layer(10, 20, 4)
    inside = BBox(x=15, y=5, w=5, h=5)
    assert frames.crop(array, inside).shape == (5, 5, 4)
    assert np.shares_memory(frames.crop(array, inside), array)
    assert frames.crop(array, None) is array
    outside = BBox(x=15, y=5, w=6, h=5)
    with pytest.raises(BBoxOutOfBounds, match="outside the 20x10 image"):
        frames.crop(array, outside)
    with pytest.raises(BBoxOutOfBounds):
        frames.describe(array, "RGBA", 0, bbox=outside)


def test_krita_bgra_to_rgba_and_back():
    bgra = np.array([[[10, 20, 30, 255]]], np.uint8)  # blue=10, green=20, red=30
    rgba, order = frames.to_canonical(bgra, ChannelOrder.BGRA)
    assert order is ChannelOrder.RGBA and rgba.tolist() == [[[30, 20, 10, 255]]]
    assert np.array_equal(frames.from_canonical(rgba, "BGRA"), bgra)


def test_gimp_rgba_and_gray_pass_through_without_copy():
    rgba = layer()
    same, order = frames.to_canonical(rgba, "RGBA")
    assert same is rgba and order is ChannelOrder.RGBA
    gray = layer(c=1)
    assert frames.to_canonical(gray, "GRAY")[0] is gray
    assert frames.from_canonical(rgba, "RGBA") is rgba


def test_bgr_conversion_is_a_view():
    bgr = layer(c=3)
    rgb, order = frames.to_canonical(bgr, "BGR")
    assert order is ChannelOrder.RGB and np.shares_memory(rgb, bgr)
    assert np.array_equal(rgb[..., 0], bgr[..., 2])
    assert np.array_equal(frames.from_canonical(rgb, "BGR"), bgr)


def test_layout_errors_are_typed():
    with pytest.raises(UnsupportedLayout, match="RGBA needs 4 channels"):
        frames.describe(layer(c=3), "RGBA", 0)
    with pytest.raises(UnsupportedLayout, match="H x W"):
        frames.describe(np.zeros((2, 2, 2, 2), np.uint8), "RGBA", 0)
    with pytest.raises(UnsupportedLayout, match="uint8, uint16 or float32"):
        frames.describe(np.zeros((2, 2, 4), np.float64), "RGBA", 0)
    with pytest.raises(UnsupportedLayout):
        frames.to_canonical(layer(c=3), "BGRA")
    with pytest.raises(ValueError):
        frames.describe(layer(), "CMYK", 0)
    assert issubclass(UnsupportedLayout, ImageError)


def test_dtype_mapping_is_little_endian():
    assert frames.dtype_of(BitDepth.U16).str == "<u2"
    assert frames.dtype_of(BitDepth.F32).str == "<f4"
