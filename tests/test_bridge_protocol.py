"""Round trips of every message type and the schema's own validation."""

from __future__ import annotations

import pydantic
import pytest
from bridge_samples import layer, samples

from editor_bridge import frames
from editor_bridge.protocol import (
    CONTENT_TYPES,
    PROTOCOL_VERSION,
    ApplyRequest,
    BBox,
    ChannelOrder,
    Header,
    ImageDescriptor,
    MsgType,
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
        ApplyRequest.model_validate({"operation": "sample", "model_id": "m1", "temperature": 2})


@pytest.mark.parametrize(
    "bad",
    [
        {"operation": "sample", "model_id": "../etc/passwd"},
        {"operation": "../sample", "model_id": "m1"},
        {"operation": "Sample Now", "model_id": "m1"},
        {"operation": "sample", "model_id": ""},
        {"operation": "sample", "model_id": "m1", "params": {"n": [1, 2]}},  # plain values only
        {"operation": "sample", "model_id": "m1", "params": {"n": {"deep": 1}}},
        {"operation": "sample", "model_id": "m1", "params": {f"p{i}": 1 for i in range(65)}},
        {"operation": "sample", "model_id": "m1", "params": {"x" * 65: 1}},
        {"operation": "sample", "model_id": "m1", "finetune_iters": 0},
    ],
)
def test_absurd_parameters_are_refused(bad):
    # An operation's own parameters (n, width, ...) are checked by the engine against its spec
    # (tests/test_serve_daemon.py); the protocol bounds their shape.
    with pytest.raises(pydantic.ValidationError):
        ApplyRequest.model_validate(bad)


def test_train_needs_exactly_one_source_of_data():
    buffers: list = []
    image = frames.attach(buffers, layer(), ChannelOrder.RGBA)
    assert TrainRequest(task="generation", image=image).family == "consingan"  # the default family
    TrainRequest(task="generation", stored_image="img-1")
    TrainRequest(family="cyclegan", task="restyle", folders=["/a", "/b"])
    TrainRequest(base_model="m1", image=image, options={"iters": 50})  # fine-tuning
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        TrainRequest(task="generation")
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        TrainRequest(task="generation", image=image, stored_image="img-1")
    with pytest.raises(pydantic.ValidationError, match="exactly one"):
        TrainRequest(task="generation", image=image, folders=["/a"])
    with pytest.raises(pydantic.ValidationError, match="base_model is fine-tuned on an attached image"):
        TrainRequest(base_model="m1", stored_image="img-1")
    with pytest.raises(pydantic.ValidationError):
        TrainRequest(task="generation", folders=["/a", "/b", "/c"])
    with pytest.raises(pydantic.ValidationError):
        TrainRequest(family="Con SinGAN", task="generation", stored_image="img-1")


def _apply(**kw) -> ApplyRequest:
    buffers: list = []
    base = {
        "image": frames.attach(buffers, layer(), ChannelOrder.BGRA),
        "mask": frames.attach(buffers, layer(c=1), ChannelOrder.GRAY),
        "model_id": "m1",
    }
    return ApplyRequest(**{"operation": "harmonize", **base, **kw})


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
    assert _apply().params == {}  # every parameter: the operation's default
    with pytest.raises(pydantic.ValidationError, match="a mask needs the image"):
        ApplyRequest(operation="harmonize", model_id="m1", mask=_apply().mask)
    with pytest.raises(pydantic.ValidationError, match="finetune_iters fine-tunes on the image"):
        ApplyRequest(operation="sample", model_id="m1", finetune_iters=5)
    assert _apply(params={"color_match": 0.25}).params["color_match"] == 0.25  # the engine checks its range
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
    content, _ = next(s for s in SAMPLES if s[0].msg_type is MsgType.APPLY and s[0].image is not None)
    assert [d.buffer_index for d in iter_images(content)] == [0, 1, 2]
    result, _ = next(s for s in SAMPLES if s[0].msg_type is MsgType.RESULT)
    assert len(iter_images(result)) == 2
