"""The daemon's end of the socket: a ROUTER that verifies every incoming message and answers bad ones itself.

The engine daemon builds its request loop on `BridgeServer`; worker threads send progress and results through
`send`, which is thread-safe (it hands frames to the loop over an inproc pipe).
"""

from __future__ import annotations

import hmac
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import zmq
from zmq.auth.thread import ThreadAuthenticator

from editor_bridge.errors import BridgeError, InvalidRequest
from editor_bridge.protocol import Content, ErrorCode, ErrorReply, Header
from editor_bridge.signing import PEER_USERNAME, UPDATE_PLUGIN, ReplayGuard, peer_password
from editor_bridge.wire import DEFAULT_MAX_FRAME_BYTES, MAX_CONTROL_BYTES, Message, WireCodec, peek_msg_id

log = logging.getLogger(__name__)
C = TypeVar("C", bound=Content)
_outbox_ids = itertools.count()


@dataclass(frozen=True)
class Request:
    """A verified, decoded request and the route back to the client that sent it."""

    message: Message
    identities: tuple[bytes, ...]

    @property
    def content(self) -> Content:
        return self.message.content

    @property
    def header(self) -> Header:
        return self.message.header

    @property
    def buffers(self) -> list[memoryview]:
        return self.message.buffers

    def content_as(self, cls: type[C]) -> C:
        """The content, as the request type its handler was chosen for."""
        content = self.message.content
        if not isinstance(content, cls):
            raise InvalidRequest(f"{content.msg_type.value} is not a {cls.__name__}")
        return content


Handler = Callable[[Request], None]
ZAP_DOMAIN = "editor-bridge"


class _KeyAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler, admitting the PLAIN handshakes that carry the key's password
    (`signing.peer_password`), compared in constant time."""

    def __init__(self, context: zmq.Context[Any], key: bytes | str) -> None:
        super().__init__(context, log=logging.getLogger(f"{__name__}.zap"))
        self._password = peer_password(key).encode()
        self.start()
        self.configure_plain(ZAP_DOMAIN, {PEER_USERNAME: "set in _authenticate_plain"})

    def _authenticate_plain(self, domain: str, username: str, password: str) -> tuple[bool, bytes]:
        given = password.encode() if isinstance(password, str) else bytes(password)
        if username == PEER_USERNAME and hmac.compare_digest(given, self._password):
            return True, b"OK"
        return False, b"not this engine's key: read the engine's connection file"


class _RefusalLog:
    """Refused messages, logged at most BURST a minute; the rest are counted into one line."""

    BURST = 10
    WINDOW_S = 60.0

    def __init__(self) -> None:
        self._window_start = -float("inf")
        self._logged = self._dropped = 0

    def log(self, exc: BridgeError) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.WINDOW_S:
            if self._dropped:
                log.warning("refused %d more messages in the last minute", self._dropped)
            self._window_start, self._logged, self._dropped = now, 0, 0
        if self._logged < self.BURST:
            self._logged += 1
            log.warning("refused a message (%s): %s", exc.code.value, exc)
        else:
            self._dropped += 1


class BridgeServer:
    """Binds a ROUTER socket (loopback, random port by default) and speaks the signed editor_bridge framing.

    `recv`, `serve` and `close` belong to the thread that created the server; `send` works from any thread.
    """

    def __init__(
        self,
        key: bytes | str,
        endpoint: str = "tcp://127.0.0.1:0",
        *,
        context: zmq.Context[Any] | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        replay_guard: ReplayGuard | None = None,
    ) -> None:
        self.codec = WireCodec(
            key, max_frame_bytes=max_frame_bytes, replay_guard=replay_guard, older_peer=UPDATE_PLUGIN
        )
        self._own_context = context is None
        self._ctx = context if context is not None else zmq.Context()
        self._owner = threading.get_ident()
        self._closed = False
        self._router = self._ctx.socket(zmq.ROUTER)
        # Long enough to flush a last reply (e.g. to `shutdown`) on a loaded machine; it only waits while
        # replies to connected peers are still queued, so never a hang.
        self._router.linger = 2000
        # A hard cap in libzmq itself: far-oversized frames drop the peer before they fill memory; frames
        # between the two limits still get an error reply from the codec.
        self._router.setsockopt(zmq.MAXMSGSIZE, 2 * max_frame_bytes + MAX_CONTROL_BYTES)
        # Peers must know the key to get past ZeroMQ's handshake (unless CurveZMQ admits them by their own
        # keys): the connection of any other peer is closed before it can send a byte of a message, where
        # the signature check comes only once a whole message has been received and held in memory.
        self._auth: _KeyAuthenticator | None = None
        try:
            if self._router.get(zmq.MECHANISM) == zmq.NULL:
                self._auth = _KeyAuthenticator(self._ctx, key)
                self._router.plain_server = True
                self._router.zap_domain = ZAP_DOMAIN.encode()
            self._router.bind(endpoint)
        except zmq.ZMQError:
            self._router.close(linger=0)  # leave nothing open that would hang the context's term()
            if self._auth is not None:
                self._auth.stop()
            if self._own_context:
                self._ctx.term()
            raise
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        outbox = f"inproc://editor-bridge-outbox-{next(_outbox_ids)}-{id(self)}"
        self._pull = self._ctx.socket(zmq.PULL)
        self._pull.linger = 0
        self._pull.bind(outbox)
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.linger = 0
        self._push.connect(outbox)
        self._push_lock = threading.Lock()
        self._refusals = _RefusalLog()
        self._poller = zmq.Poller()
        self._poller.register(self._router, zmq.POLLIN)
        self._poller.register(self._pull, zmq.POLLIN)

    def __enter__(self) -> BridgeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def recv(self, timeout: float | None = None) -> Request | None:
        """The next valid request, or None after `timeout` seconds. Invalid messages are answered here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait_ms = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            events = dict(self._poller.poll(wait_ms))
            if self._pull in events:
                self._flush_outbox()
            if self._router in events:
                raw = self._router.recv_multipart(copy=False)
                try:
                    message = self.codec.deserialize(raw)
                except BridgeError as exc:
                    self._reject(raw, exc)
                else:
                    return Request(message, tuple(message.identities))
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def serve(
        self,
        handler: Handler,
        stop: threading.Event,
        poll_s: float = 0.05,
        every: tuple[float, Callable[[], None]] | None = None,
    ) -> None:
        """Run `handler` on each request until `stop` is set; handler errors become error replies.
        `every` (seconds, function): housekeeping run on this thread that often, between requests."""
        next_tick = time.monotonic()
        while not stop.is_set():
            if every is not None and time.monotonic() >= next_tick:
                next_tick = time.monotonic() + every[0]
                try:
                    every[1]()
                except Exception:
                    log.exception("housekeeping failed")
            request = self.recv(poll_s)
            if request is None:
                continue
            try:
                handler(request)
            except BridgeError as exc:
                self.reply_error(request, exc.code, str(exc))
            except Exception as exc:
                log.exception("handler failed on %s", request.header.msg_type)
                self.reply_error(
                    request,
                    ErrorCode.INTERNAL,
                    f"internal engine error ({type(exc).__name__}); see the engine log",
                )

    def send(
        self,
        identities: Sequence[bytes],
        content: Content,
        *,
        parent: Header | None = None,
        buffers: Sequence[Any] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Send `content` (reply, progress event, result) to the client behind `identities`; any thread."""
        frames = self.codec.serialize(
            content, parent=parent, buffers=buffers, metadata=metadata, identities=identities
        )
        if threading.get_ident() == self._owner:
            if not self._closed:
                self._router.send_multipart(frames, copy=False)
            return
        with self._push_lock:  # also orders this against close()
            if self._closed:
                log.debug("server closed; dropping %s", content.msg_type.value)
                return
            self._push.send_multipart(frames, copy=False)

    def reply(
        self,
        request: Request,
        content: Content,
        buffers: Sequence[Any] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.send(request.identities, content, parent=request.header, buffers=buffers, metadata=metadata)

    def reply_error(
        self, request: Request, code: ErrorCode, message: str, *, job_id: str | None = None
    ) -> None:
        error = ErrorReply(code=code, message=message, in_reply_to=request.header.msg_id, job_id=job_id)
        self.reply(request, error)

    def close(self) -> None:
        """Close the sockets, and the context when the server made it. Idempotent."""
        with self._push_lock:
            if self._closed:
                return
            self._closed = True
            self._push.close(linger=0)
        self._pull.close(linger=0)
        self._router.close()
        if self._auth is not None:
            self._auth.stop()
        if self._own_context:
            self._ctx.term()

    def _flush_outbox(self) -> None:
        while True:
            try:
                frames = self._pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self._router.send_multipart(frames, copy=False)

    def _reject(self, raw: Sequence[Any], exc: BridgeError) -> None:
        # The route is the ROUTER's first frame; later frames before the delimiter are the client's to choose.
        identity = bytes(raw[0].buffer if hasattr(raw[0], "buffer") else raw[0])
        msg_id = exc.msg_id or peek_msg_id(raw)
        self._refusals.log(exc)
        error = ErrorReply(code=exc.code, message=str(exc), in_reply_to=msg_id)
        header = self.codec.header(error.msg_type)
        peer_version = getattr(exc, "peer_version", None)
        if peer_version is not None:
            # An older plugin reads only its own version: the refusal goes in it, so that it can show
            # what to do (the error reply's shape is the same in every version).
            header = header.model_copy(update={"protocol_version": peer_version})
        frames = self.codec.serialize(error, identities=[identity], header=header)
        self._router.send_multipart(frames, copy=False)
