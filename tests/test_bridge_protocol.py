"""Round trips of every message type and the schema's own validation."""

from __future__ import annotations

import pydantic
import pytest
from bridge_samples import layer, samples

from editor_bridge import frames
from editor_bridge.protocol import (
    CONTENT_TYPES,
    PROTOCOL_VERSION,
    BBox,
    ChannelOrder,
    HarmonizeRequest,
    Header,
    ImageDescriptor,
    MsgType,
    SampleRequest,
    TrainRequest,
    decode_content,
    encode_content,
    iter_images,
)
from editor_bridge.wire import WireCodec

SAMPLES = samples()


def _id(sample) -> str:
    return sample[0].msg_type.value


def test_samples_cover_every_message_type():
    assert {content.msg_type for content, _ in SAMPLES} == set(MsgType)
    assert set(CONTENT_TYPES) == set(MsgType)


@pytest.mark.parametrize("sample", SAMPLES, ids=_id)
def test_content_round_trip(sample):
    content, _ = sample
    assert decode_content(content.msg_type.value, encode_content(content)) == content


@pytest.mark.parametrize("sample", SAMPLES, ids=_id)
def test_wire_round_trip(sample):
    content, buffers = sample
    codec = WireCodec("k" * 64)
    parent = Header.new(MsgType.PING, "s")
    wire = codec.serialize(
        content, parent=parent, metadata={"trace": [1, 2]}, buffers=buffers, identities=[b"id"]
    )
    message = codec.deserialize(wire)
    assert message.content == content
    assert message.parent_header == parent
    assert message.metadata == {"trace": [1, 2]}
    assert message.identities == [b"id"]
    assert [bytes(b) for b in message.buffers] == [bytes(b) for b in buffers]
    for desc in iter_images(content):
        assert message.image(desc).shape == (desc.height, desc.width, desc.channels)


def test_header_round_trip_keeps_version_and_date():
    header = Header.new(MsgType.TRAIN, "session")
    again = Header.model_validate(header.model_dump(mode="json"))
    assert again == header and again.protocol_version == PROTOCOL_VERSION
    assert again.date.utcoffset() is not None


def test_unknown_fields_are_refused():
    with pytest.raises(pydantic.ValidationError):
        SampleRequest.model_validate({"model_id": "m1", "temperature": 2})


@pytest.mark.parametrize(
    "bad",
    [
        {"model_id": "../etc/passwd"},
        {"model_id": "m1", "n": 0},
        {"model_id": "m1", "n": 10_000},
        {"model_id": "m1", "width": 10**9},
        {"model_id": "m1", "seed": -1},
        {"model_id": ""},
    ],
)
def test_absurd_parameters_are_refused(bad):
    with pytest.raises(pydantic.ValidationError):
        SampleRequest.model_validate(bad)


def test_train_needs_exactly_one_image_source():
    buffers: list = []
    image = frames.attach(buffers, layer(), ChannelOrder.RGBA)
    TrainRequest(mode="generation", image=image)
    TrainRequest(mode="generation", stored_image="img-1")
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        TrainRequest(mode="generation")
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        TrainRequest(mode="generation", image=image, stored_image="img-1")
    with pytest.raises(pydantic.ValidationError):
        TrainRequest(mode="painting", stored_image="img-1")
    with pytest.raises(pydantic.ValidationError):
        TrainRequest(mode="generation", stored_image="img-1", iters=10**7)


def _apply(**kw) -> HarmonizeRequest:
    buffers: list = []
    base = {
        "image": frames.attach(buffers, layer(), ChannelOrder.BGRA),
        "mask": frames.attach(buffers, layer(c=1), ChannelOrder.GRAY),
        "model_id": "m1",
    }
    return HarmonizeRequest(**{**base, **kw})


def test_harmonize_checks_mask_and_model_source():
    assert _apply().model_id == "m1"
    with pytest.raises(pydantic.ValidationError, match="mask is 4x6"):
        _apply(mask=ImageDescriptor(width=4, height=6, channels=1, channel_order="GRAY", buffer_index=1))
    with pytest.raises(pydantic.ValidationError, match="GRAY"):
        _apply(mask=ImageDescriptor(width=5, height=6, channels=3, channel_order="RGB", buffer_index=1))
    with pytest.raises(pydantic.ValidationError, match="train_if_missing"):
        _apply(model_id=None)
    with pytest.raises(pydantic.ValidationError, match="train_if_missing"):
        _apply(model_id=None, train_if_missing=True)
    one_call = _apply(model_id=None, train_if_missing=True, background=_apply().image)
    assert one_call.background == one_call.image  # the plugin may point both at one buffer
    with pytest.raises(pydantic.ValidationError, match="crop_to_bbox needs a bbox"):
        _apply(crop_to_bbox=True)
    assert _apply().color_match is None  # the model's mode decides
    assert _apply(color_match=0.25).color_match == 0.25
    with pytest.raises(pydantic.ValidationError, match="less than or equal to 1"):
        _apply(color_match=1.5)
    with pytest.raises(pydantic.ValidationError, match="retrain trains on the background"):
        _apply(retrain=True)
    assert _apply(model_id=None, train_if_missing=True, background=_apply().image, retrain=True).retrain


def test_descriptor_consistency():
    with pytest.raises(pydantic.ValidationError, match="has 4 channels"):
        ImageDescriptor(width=2, height=2, channels=3, channel_order="BGRA", buffer_index=0)
    with pytest.raises(pydantic.ValidationError, match="outside"):
        ImageDescriptor(
            width=10,
            height=10,
            channels=4,
            channel_order="RGBA",
            buffer_index=0,
            bbox=BBox(x=8, y=0, w=3, h=1),
        )
    desc = ImageDescriptor(
        width=3, height=2, channels=4, channel_order="RGBA", bit_depth="u16", buffer_index=0
    )
    assert desc.nbytes == 3 * 2 * 4 * 2
    assert [ChannelOrder(o).channels for o in ("GRAY", "GRAYA", "RGB", "BGR", "RGBA", "BGRA")] == [
        1,
        2,
        3,
        3,
        4,
        4,
    ]


def test_iter_images_finds_nested_descriptors():
    content, _ = next(s for s in SAMPLES if s[0].msg_type is MsgType.HARMONIZE)
    assert [d.buffer_index for d in iter_images(content)] == [0, 1, 2]
    result, _ = next(s for s in SAMPLES if s[0].msg_type is MsgType.RESULT)
    assert len(iter_images(result)) == 2
