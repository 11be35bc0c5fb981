"""BridgeServer on real loopback sockets: every message type crosses the wire intact, and every bad message
gets an error reply while the server keeps serving everyone else."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import zmq
from bridge_fakes import KEY, FakeEngine, forge
from bridge_samples import layer, samples

from editor_bridge import frames
from editor_bridge.client import Client
from editor_bridge.errors import AuthenticationError, RemoteError
from editor_bridge.protocol import (
    PROTOCOL_VERSION,
    ApplyRequest,
    ChannelOrder,
    ErrorCode,
    ErrorReply,
    ModelListReply,
    PingRequest,
    PongReply,
)
from editor_bridge.server import BridgeServer
from editor_bridge.signing import present_key
from editor_bridge.wire import WireCodec

SAMPLES = samples()


@pytest.fixture
def ctx():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def server(ctx):
    with BridgeServer(KEY, context=ctx, max_frame_bytes=1 << 20) as srv:
        yield srv


@pytest.fixture
def dealer(ctx, server):
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    present_key(sock, KEY)
    sock.connect(server.endpoint)
    yield sock
    sock.close()


def test_binds_loopback_on_a_random_port(server):
    assert server.endpoint.startswith("tcp://127.0.0.1:") and not server.endpoint.endswith(":0")


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s[0].msg_type.value)
def test_every_message_type_crosses_the_socket_both_ways(server, dealer, sample):
    content, buffers = sample
    client_codec = WireCodec(KEY)
    dealer.send_multipart(client_codec.serialize(content, buffers=buffers), copy=False)
    request = server.recv(timeout=5)
    assert request is not None and request.content == content
    assert [bytes(b) for b in request.buffers] == [bytes(b) for b in buffers]
    server.reply(request, content, buffers=buffers)  # and back, as if it were a reply
    assert dealer.poll(5000)
    reply = client_codec.deserialize(dealer.recv_multipart(copy=False))
    assert reply.content == content and reply.parent_header == request.header
    assert [bytes(b) for b in reply.buffers] == [bytes(b) for b in buffers]


def _error_for(server, dealer, raw) -> ErrorReply:
    dealer.send_multipart(raw)
    deadline = time.monotonic() + 10
    while not dealer.poll(50):  # the server answers refused messages while it receives
        assert server.recv(timeout=0.05) is None  # refused: never reaches the handler
        assert time.monotonic() < deadline, "no error reply"
    reply = WireCodec(KEY).deserialize(dealer.recv_multipart())
    assert isinstance(reply.content, ErrorReply)
    return reply.content


def _assert_still_serving(server, dealer):
    codec = WireCodec(KEY)
    dealer.send_multipart(codec.serialize(PingRequest()))
    request = server.recv(timeout=5)
    assert request is not None
    server.reply(request, PongReply())
    assert dealer.poll(5000)
    assert isinstance(codec.deserialize(dealer.recv_multipart()).content, PongReply)


def _mismatched_image() -> list:
    buffers: list = []
    request = ApplyRequest(
        operation="harmonize",
        image=frames.attach(buffers, layer(8, 8, 4), ChannelOrder.BGRA),
        mask=frames.attach(buffers, layer(8, 8, 1), ChannelOrder.GRAY),
        model_id="m1",
    )
    buffers[0] = b"\0" * 100
    return forge(content=request.model_dump(mode="json"), buffers=buffers, msg_type="apply", msg_id="img1")


NEXT = PROTOCOL_VERSION + 1
OLD = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
BAD_MESSAGES = {
    "forged": (lambda: forge(key="b" * 64, msg_id="f1"), ErrorCode.BAD_SIGNATURE, "f1"),
    "unsigned": (lambda: forge(signature=b"", msg_id="u1"), ErrorCode.UNSIGNED, "u1"),
    "wrong_version": (lambda: forge(protocol_version=NEXT, msg_id="v1"), ErrorCode.UNSUPPORTED_VERSION, "v1"),
    "expired": (lambda: forge(date=OLD, msg_id="e1"), ErrorCode.EXPIRED, "e1"),
    "garbage": (lambda: [b"\xde\xad\xbe\xef", b"\x00"], ErrorCode.MALFORMED, None),
    "no_parts": (lambda: [b""], ErrorCode.MALFORMED, None),
    "oversized": (
        lambda: forge(buffers=[b"\0" * ((1 << 20) + 1)], msg_id="o1"),
        ErrorCode.FRAME_TOO_LARGE,
        "o1",
    ),
    "byte_count": (_mismatched_image, ErrorCode.BAD_IMAGE, "img1"),
    "absurd": (
        lambda: forge(content={"operation": "sample", "model_id": "m/1"}, msg_type="apply"),
        ErrorCode.INVALID_REQUEST,
        None,
    ),
    "unknown_type": (lambda: forge(msg_type="format_disk"), ErrorCode.UNKNOWN_MSG_TYPE, None),
}


@pytest.mark.parametrize("name", BAD_MESSAGES)
def test_bad_messages_get_error_replies_and_the_server_keeps_serving(server, dealer, name):
    build, code, msg_id = BAD_MESSAGES[name]
    error = _error_for(server, dealer, build())
    assert error.code is code
    assert error.message and error.message[0].islower()  # a sentence fragment, not a traceback
    if msg_id is not None:
        assert error.in_reply_to == msg_id
    _assert_still_serving(server, dealer)


def test_replayed_message_is_refused(server, dealer):
    raw = forge(msg_id="r1")
    dealer.send_multipart(raw)
    assert server.recv(timeout=5) is not None
    error = _error_for(server, dealer, raw)
    assert error.code is ErrorCode.REPLAYED and error.in_reply_to == "r1"


def test_a_flood_of_bad_messages_does_not_disturb_a_good_client(ctx, server):
    evil = ctx.socket(zmq.DEALER)
    good = ctx.socket(zmq.DEALER)
    for sock in (evil, good):
        sock.linger = 0
        present_key(sock, KEY)  # the flood comes from a peer with the key: past the handshake
        sock.connect(server.endpoint)
    for _ in range(20):
        evil.send_multipart([b"junk"] * 3)
        evil.send_multipart(forge(key="wrong"))
    codec = WireCodec(KEY)
    good.send_multipart(codec.serialize(PingRequest()))
    request = server.recv(timeout=5)  # answers bad ones itself, returns only the good request
    assert request is not None and isinstance(request.content, PingRequest)
    server.reply(request, PongReply())
    assert good.poll(5000) and isinstance(codec.deserialize(good.recv_multipart()).content, PongReply)
    errors, deadline = 0, time.monotonic() + 10
    while errors < 40 and time.monotonic() < deadline:
        assert server.recv(timeout=0.05) is None  # whatever of the flood is left: refused, answered
        while evil.poll(0):
            errors += isinstance(codec.deserialize(evil.recv_multipart()).content, ErrorReply)
    assert errors == 40
    evil.close()
    good.close()


def test_handler_exceptions_become_error_replies():
    def handler(server, request):
        if isinstance(request.content, PingRequest):
            raise RuntimeError("boom")
        server.reply(request, ModelListReply())

    with FakeEngine(handler=handler) as engine, Client(engine.endpoint, KEY, timeout=5) as client:
        with pytest.raises(RemoteError, match="internal engine error") as err:
            client.ping()
        assert err.value.code is ErrorCode.INTERNAL
        assert client.list_models() == []  # the loop lives on


def test_client_with_the_wrong_key_fails_fast():
    with FakeEngine() as engine, Client(engine.endpoint, "wrong-key", timeout=30) as client:
        started = time.monotonic()
        with pytest.raises(AuthenticationError, match="connection file is out of date"):
            client.ping()
        assert time.monotonic() - started < 5


def test_binding_a_busy_port_fails_cleanly(server):
    with pytest.raises(zmq.ZMQError, match="in use"):
        BridgeServer(KEY, server.endpoint)


def test_a_peer_without_the_key_gets_no_message_through(ctx, server, dealer):
    # Refused in ZeroMQ's handshake, before any of its messages is received (and held in memory): the
    # server never sees them, and the peer gets no reply, not even an error.
    stranger = ctx.socket(zmq.DEALER)
    stranger.linger = 0
    present_key(stranger, "not-the-key")
    plain = ctx.socket(zmq.DEALER)  # no credentials at all
    plain.linger = 0
    for sock in (stranger, plain):
        sock.connect(server.endpoint)
        sock.send_multipart(forge(msg_id="stranger"))
        sock.send_multipart([b"x" * 100_000] * 4)
    assert server.recv(timeout=2) is None
    assert not stranger.poll(500) and not plain.poll(500)
    _assert_still_serving(server, dealer)
    stranger.close()
    plain.close()


def test_refusals_are_logged_at_most_ten_a_minute(server, dealer, caplog):
    caplog.set_level("WARNING", logger="editor_bridge.server")
    for _ in range(200):
        dealer.send_multipart([b"junk"] * 3)
    errors = 0
    deadline = time.monotonic() + 20
    while errors < 200 and time.monotonic() < deadline:
        server.recv(timeout=0.05)
        while dealer.poll(0):
            dealer.recv_multipart()
            errors += 1
    assert errors == 200  # every one is answered ...
    assert len([r for r in caplog.records if "refused a message" in r.message]) == 10  # ... few are logged


def test_an_older_plugin_is_told_to_update_in_a_reply_it_can_read(server, dealer):
    """A protocol-3 plugin (before model families) reads only protocol-3 headers: the refusal goes in one,
    and says how to update it."""
    import msgpack

    dealer.send_multipart(forge(protocol_version=3, msg_id="old1"))
    deadline = time.monotonic() + 10
    while not dealer.poll(50):
        assert server.recv(timeout=0.05) is None
        assert time.monotonic() < deadline, "no error reply"
    frames = dealer.recv_multipart()
    header, content = msgpack.unpackb(frames[2]), msgpack.unpackb(frames[5])
    assert header["protocol_version"] == 3 and header["msg_type"] == "error"
    assert content["code"] == "unsupported_version" and content["in_reply_to"] == "old1"
    assert "update the plugin: `engine plugin install krita` (or gimp)" in content["message"]
    _assert_still_serving(server, dealer)
