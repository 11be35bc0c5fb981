"""Framing and decoding: every bad input is a typed BridgeError, never a crash; the decoder is fuzzed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgpack
import pytest
from bridge_fakes import KEY, forge
from bridge_samples import layer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from editor_bridge import frames
from editor_bridge.errors import (
    AuthenticationError,
    BridgeError,
    FrameSizeMismatch,
    FrameTooLarge,
    InvalidRequest,
    MissingBuffer,
    ProtocolError,
    ReplayedMessage,
    UnknownMessageType,
    UnsupportedVersion,
)
from editor_bridge.protocol import ApplyRequest, ChannelOrder, ErrorCode, Header, PingRequest, pack
from editor_bridge.wire import DELIMITER, MAX_CONTROL_BYTES, WireCodec, peek_msg_id

CORPUS = DirectoryBasedExampleDatabase(str(Path(__file__).parent / "fuzz_corpus"))
FUZZ = settings(
    database=CORPUS, max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def codec(**kw) -> WireCodec:
    return WireCodec(KEY, **kw)


def _harmonize_frames(image_bytes: bytes | None = None) -> list:
    buffers: list = []
    request = ApplyRequest(
        operation="harmonize",
        image=frames.attach(buffers, layer(4, 4, 4), ChannelOrder.BGRA),
        mask=frames.attach(buffers, layer(4, 4, 1), ChannelOrder.GRAY),
        model_id="m1",
    )
    if image_bytes is not None:
        buffers[0] = image_bytes
        return forge(content=request.model_dump(mode="json"), buffers=buffers, msg_type="apply")
    return codec().serialize(request, buffers=buffers)


def test_framing_layout():
    wire = codec().serialize(PingRequest(), identities=[b"route"], buffers=[b"xy"])
    assert wire[0] == b"route" and wire[1] == DELIMITER and len(wire[2]) == 64
    assert msgpack.unpackb(wire[3])["msg_type"] == "ping"
    assert msgpack.unpackb(wire[4]) == {} and msgpack.unpackb(wire[5]) == {}
    assert bytes(wire[7]) == b"xy"


def test_valid_message_decodes_once_then_is_a_replay():
    c = codec()
    wire = c.serialize(PingRequest())
    assert isinstance(c.deserialize(wire).content, PingRequest)
    with pytest.raises(ReplayedMessage):
        c.deserialize(wire)


@pytest.mark.parametrize(
    "raw, error, code",
    [
        ([], ProtocolError, ErrorCode.MALFORMED),
        ([b"garbage"], ProtocolError, ErrorCode.MALFORMED),
        ([DELIMITER, b"sig", b"h"], ProtocolError, ErrorCode.MALFORMED),
        ([DELIMITER, b"", b"h", b"p", b"m", b"c"], AuthenticationError, ErrorCode.UNSIGNED),
        ([DELIMITER, b"0" * 64, b"h", b"p", b"m", b"c"], AuthenticationError, ErrorCode.BAD_SIGNATURE),
        ([DELIMITER, b"0" * 1000, b"h", b"p", b"m", b"c"], FrameTooLarge, ErrorCode.FRAME_TOO_LARGE),
    ],
)
def test_bad_framing(raw, error, code):
    with pytest.raises(error) as err:
        codec().deserialize(raw)
    assert err.value.code is code


def test_forged_signature_is_refused():
    wire = forge(key="not-the-key")
    with pytest.raises(AuthenticationError, match="does not match"):
        codec().deserialize(wire)


def test_signed_garbage_is_malformed_not_a_crash():
    parts = [b"\xc1\xc1", pack({}), pack({}), pack({})]
    from editor_bridge.signing import Signer

    with pytest.raises(ProtocolError, match="header is not valid msgpack"):
        codec().deserialize([DELIMITER, Signer(KEY).sign(parts), *parts])


def test_wrong_version_is_refused_with_msg_id_and_what_to_do():
    wire = forge(protocol_version=99, msg_id="abc123")
    with pytest.raises(UnsupportedVersion, match="speaks protocol 99, this one .*same release") as err:
        codec().deserialize(wire)
    assert err.value.msg_id == "abc123" and err.value.peer_version is None
    # An older peer: the codec says what its side must do (a client: update the engine).
    with pytest.raises(UnsupportedVersion, match="speaks protocol 3, .*update the engine") as err:
        codec().deserialize(forge(protocol_version=3))
    assert err.value.peer_version == 3


def test_expired_message_is_refused():
    old = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    with pytest.raises(AuthenticationError, match="old") as err:
        codec().deserialize(forge(date=old))
    assert err.value.code is ErrorCode.EXPIRED


def test_unknown_message_type():
    with pytest.raises(UnknownMessageType, match="'teleport'"):
        codec().deserialize(forge(msg_type="teleport"))


def test_invalid_content_names_the_field():
    wire = forge(content={"operation": "sample", "model_id": "m/1"}, msg_type="apply")
    with pytest.raises(InvalidRequest, match=r"apply: model_id: String should match pattern") as err:
        codec().deserialize(wire)
    assert err.value.code is ErrorCode.INVALID_REQUEST


def test_oversized_frames_are_refused_before_decoding():
    big = codec(max_frame_bytes=10_000).serialize(PingRequest(), buffers=[b"\0" * 10_000])
    with pytest.raises(FrameTooLarge, match="over the engine's 1000 byte limit"):
        codec(max_frame_bytes=1000).deserialize(big)
    with pytest.raises(FrameTooLarge, match="1000 byte limit"):
        codec(max_frame_bytes=1000).serialize(PingRequest(), buffers=[b"\0" * 1001])
    huge_content = forge(content={"x": "y" * (MAX_CONTROL_BYTES + 1)})
    with pytest.raises(FrameTooLarge, match="pixels go in buffers"):
        codec().deserialize(huge_content)


def test_a_reply_carries_up_to_max_buffers_images():
    """A 100-frame clip is one reply: MAX_BUFFERS images go through, one more is refused on both sides."""
    import numpy as np

    from editor_bridge.protocol import MAX_BUFFERS, ImageDescriptor, ResultReply

    def reply(n: int) -> tuple[ResultReply, list]:
        buffers: list = []
        descs = [
            frames.attach(buffers, np.full((2, 3, 3), i % 256, np.uint8), ChannelOrder.RGB) for i in range(n)
        ]
        return ResultReply(images=descs), buffers

    sender, receiver = codec(), codec()
    content, buffers = reply(MAX_BUFFERS)
    message = receiver.deserialize(sender.serialize(content, buffers=buffers))
    assert [int(message.image(d)[0, 0, 0]) for d in message.content.images] == [
        i % 256 for i in range(MAX_BUFFERS)
    ]
    with pytest.raises(FrameTooLarge, match=f"{MAX_BUFFERS + 1} buffers is more than {MAX_BUFFERS}"):
        sender.serialize(ResultReply(), buffers=[b"x"] * (MAX_BUFFERS + 1))
    with pytest.raises(FrameTooLarge, match=f"{MAX_BUFFERS + 1} buffers is more than {MAX_BUFFERS}"):
        receiver.deserialize(forge(content={}, buffers=[b"x"] * (MAX_BUFFERS + 1), msg_type="result"))
    desc = content.images[0].model_dump()
    with pytest.raises(ValueError, match="buffer_index"):
        ImageDescriptor(**{**desc, "buffer_index": MAX_BUFFERS})


def test_image_byte_count_mismatch_and_missing_buffer():
    assert isinstance(codec().deserialize(_harmonize_frames()).content, ApplyRequest)
    with pytest.raises(FrameSizeMismatch, match="has 60 bytes") as err:
        codec().deserialize(_harmonize_frames(b"\0" * 60))
    assert err.value.code is ErrorCode.BAD_IMAGE and err.value.msg_id
    wire = _harmonize_frames()[:-1]  # drop the mask's buffer, and re-sign so only the count is wrong
    from editor_bridge.signing import Signer

    wire[1] = Signer(KEY).sign(wire[2:])
    with pytest.raises(MissingBuffer):
        codec().deserialize(wire)


def test_sender_refuses_a_descriptor_without_its_buffer():
    buffers: list = []
    request = ApplyRequest(
        operation="harmonize",
        image=frames.attach(buffers, layer(4, 4, 4), ChannelOrder.BGRA),
        mask=frames.attach(buffers, layer(4, 4, 1), ChannelOrder.GRAY),
        model_id="m1",
    )
    with pytest.raises(MissingBuffer):
        codec().serialize(request, buffers=buffers[:1])


def test_peek_msg_id_never_raises():
    assert peek_msg_id(forge(msg_id="abc")) == "abc"
    assert peek_msg_id([DELIMITER, b"s", b"\xc1"]) is None
    assert peek_msg_id([b"junk"]) is None
    assert peek_msg_id([DELIMITER, b"s", pack({"msg_id": 5})]) is None


# ---- fuzz: the corpus of failing examples lives in tests/fuzz_corpus ----

_frames = st.lists(st.binary(max_size=64), max_size=10)
_msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(raw=_frames)
@example(raw=[DELIMITER])
@example(raw=[DELIMITER, b"", b"", b"", b"", b""])
@example(raw=[b"id", DELIMITER, b"\x00" * 64, b"\x80", b"\x80", b"\x80", b"\x80"])
@example(raw=[DELIMITER, DELIMITER, DELIMITER, DELIMITER, DELIMITER, DELIMITER])
def test_fuzz_raw_frames(raw):
    try:
        codec().deserialize(raw)
    except BridgeError:
        pass


@FUZZ
@given(header=_msgpack_values, content=_msgpack_values, extra=st.lists(st.binary(max_size=32), max_size=3))
@example(header={"protocol_version": 1}, content={}, extra=[])
@example(
    header={"msg_type": "ping", "protocol_version": 1, "msg_id": "x", "session": "", "date": 0},
    content={},
    extra=[],
)
@example(header=[1, 2], content="text", extra=[b""])
def test_fuzz_signed_structures(header, content, extra):
    """Correctly signed, so the fuzz reaches the header and content decoders behind the signature check."""
    wire = forge(
        header if isinstance(header, dict) else {"h": header},
        content if isinstance(content, dict) else {"c": content},
        buffers=extra,
    )
    try:
        codec().deserialize(wire)
    except BridgeError:
        pass


@FUZZ
@given(data=st.data())
def test_fuzz_valid_headers_with_fuzzed_content(data):
    msg_type = data.draw(st.sampled_from(["ping", "train", "apply", "progress", "result", "error"]))
    content = data.draw(
        st.dictionaries(
            st.sampled_from(["model_id", "image", "mask", "n", "job_id", "mode", "code", "images", "stage"]),
            _msgpack_values,
            max_size=5,
        )
    )
    wire = forge(
        content=content, msg_type=msg_type, buffers=data.draw(st.lists(st.binary(max_size=80), max_size=3))
    )
    try:
        codec().deserialize(wire)
    except BridgeError:
        pass


@FUZZ
@given(index=st.integers(0, 5), position=st.integers(0, 200), value=st.integers(0, 255))
def test_fuzz_bit_flips_are_caught_by_the_signature(index, position, value):
    wire = [bytes(p) for p in codec().serialize(PingRequest(), buffers=[b"pixels"])]
    part = bytearray(wire[1 + index])
    if not part:
        return
    position %= len(part)
    if part[position] == value:
        return
    part[position] = value
    wire[1 + index] = bytes(part)
    with pytest.raises(BridgeError):
        codec().deserialize(wire)


def test_header_model_round_trip_through_msgpack():
    header = Header.new("ping", "s")
    assert Header.model_validate(msgpack.unpackb(pack(header.model_dump(mode="json")))) == header
