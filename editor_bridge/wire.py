"""Message framing: `[identities..., <IDS|MSG>, signature, header, parent, metadata, content, buffers...]`.

Sizes are checked before anything is hashed or decoded, the signature before anything is unpacked; every
failure is a typed `BridgeError`, never a crash.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydantic

from editor_bridge import frames
from editor_bridge.errors import (
    BridgeError,
    FrameTooLarge,
    InvalidRequest,
    ProtocolError,
    UnknownMessageType,
    UnsupportedLayout,
)
from editor_bridge.protocol import (
    MAX_BUFFERS,
    PROTOCOL_VERSION,
    Content,
    Header,
    ImageDescriptor,
    MsgType,
    content_type,
    encode_content,
    iter_images,
    pack,
    unpack,
)
from editor_bridge.signing import SIGNATURE_SCHEME, UPDATE_ENGINE, ReplayGuard, Signer, check_version

DELIMITER = b"<IDS|MSG>"
DEFAULT_MAX_FRAME_BYTES = 512 * 2**20  # one buffer: a 8192x8192 RGBA u16 layer fits, with room to spare
MAX_CONTROL_BYTES = 2**20  # header, parent header, metadata, content: small maps, never pixels
MAX_SIGNATURE_BYTES = 256


@dataclass
class Message:
    header: Header
    content: Content
    parent_header: Header | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    buffers: list[memoryview] = field(default_factory=list)
    identities: list[bytes] = field(default_factory=list)

    @property
    def msg_id(self) -> str:
        return self.header.msg_id

    @property
    def parent_id(self) -> str | None:
        return self.parent_header.msg_id if self.parent_header else None

    def image(self, desc: ImageDescriptor) -> np.ndarray:
        """The array behind `desc`, viewing this message's buffer (H x W x C, read-only when received)."""
        return frames.from_frame(self.buffers, desc)


def _view(frame: Any) -> memoryview:
    # zmq.Frame exposes its memory as `.buffer`; bytes, bytearray and memoryview are buffers already.
    try:
        return memoryview(getattr(frame, "buffer", frame)).cast("B")
    except TypeError:
        raise UnsupportedLayout(
            f"a {type(frame).__name__} is not a contiguous buffer; pass arrays through frames.to_frame"
        ) from None


def summarize(exc: pydantic.ValidationError, limit: int = 3) -> str:
    """A one-line account of a validation error: 'field.path: problem; ...'."""
    parts = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _unpack_map(part: memoryview, what: str, msg_id: str | None = None) -> dict[str, Any]:
    try:
        value = unpack(part)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(f"{what} is not valid msgpack ({type(exc).__name__})", msg_id=msg_id) from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a map, not {type(value).__name__}", msg_id=msg_id)
    return value


class WireCodec:
    """Turns content models into signed frames and back, for one key; shared by client and server."""

    def __init__(
        self,
        key: bytes | str,
        *,
        session: str | None = None,
        scheme: str = SIGNATURE_SCHEME,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        replay_guard: ReplayGuard | None = None,
        older_peer: str = UPDATE_ENGINE,
    ) -> None:
        self.signer = Signer(key, scheme)
        self.older_peer = older_peer  # what an older peer is told to do (check_version)
        self.session = session or uuid.uuid4().hex
        self.max_frame_bytes = max_frame_bytes
        self.replay_guard = replay_guard if replay_guard is not None else ReplayGuard()

    def header(self, msg_type: MsgType | str) -> Header:
        return Header.new(msg_type, self.session)

    def serialize(
        self,
        content: Content,
        *,
        parent: Header | None = None,
        metadata: dict[str, Any] | None = None,
        buffers: Sequence[Any] = (),
        identities: Sequence[bytes] = (),
        header: Header | None = None,
    ) -> list[Any]:
        """The frames to send; buffers are passed through as memoryviews, not copied."""
        header = header or self.header(content.msg_type)
        views = [_view(b) for b in buffers]
        if len(views) > MAX_BUFFERS:
            raise FrameTooLarge(
                f"{len(views)} buffers is more than {MAX_BUFFERS}; send fewer images per request"
            )
        for i, view in enumerate(views):
            if view.nbytes > self.max_frame_bytes:
                raise FrameTooLarge(
                    f"buffer {i} is {view.nbytes} bytes, over the {self.max_frame_bytes} byte limit; "
                    "send a smaller layer or raise max_frame_bytes on both sides"
                )
        for desc in iter_images(content):
            frames.check_buffer(desc, views)
        parts = [
            pack(header.model_dump(mode="json")),
            pack(parent.model_dump(mode="json") if parent else {}),
            pack(metadata or {}),
            encode_content(content),
        ]
        signature = self.signer.sign([*parts, *views])
        return [*identities, DELIMITER, signature, *parts, *views]

    def split(self, raw: Sequence[Any]) -> tuple[list[bytes], list[memoryview]]:
        """Identities and the parts after the delimiter; raises on a message without a delimiter."""
        views = [_view(f) for f in raw]
        for i, view in enumerate(views):
            if view.nbytes == len(DELIMITER) and view == DELIMITER:
                return [v.tobytes() for v in views[:i]], views[i + 1 :]
        raise ProtocolError("message has no <IDS|MSG> delimiter; use the editor_bridge framing")

    def deserialize(self, raw: Sequence[Any]) -> Message:
        identities, parts = self.split(raw)
        if len(parts) < 5:
            raise ProtocolError(f"message has {len(parts)} parts after the delimiter, needs at least 5")
        signature, control, buffers = parts[0], parts[1:5], parts[5:]
        self._check_sizes(signature, control, buffers)
        self.signer.verify(signature, parts[1:])

        raw_header = _unpack_map(control[0], "header")
        msg_id = raw_header.get("msg_id") if isinstance(raw_header.get("msg_id"), str) else None
        try:
            check_version(raw_header.get("protocol_version"), self.older_peer)
            header = Header.model_validate(raw_header)
            self.replay_guard.check(signature.tobytes(), header.date)
        except BridgeError as exc:
            exc.msg_id = msg_id
            raise
        except pydantic.ValidationError as exc:
            raise ProtocolError(f"bad header: {summarize(exc)}", msg_id=msg_id) from None

        raw_parent = _unpack_map(control[1], "parent header", msg_id)
        try:
            parent = Header.model_validate(raw_parent) if raw_parent else None
        except pydantic.ValidationError as exc:
            raise ProtocolError(f"bad parent header: {summarize(exc)}", msg_id=msg_id) from None
        metadata = _unpack_map(control[2], "metadata", msg_id)
        content = self._content(header, _unpack_map(control[3], "content", msg_id))
        try:
            for desc in iter_images(content):
                frames.check_buffer(desc, buffers)
        except BridgeError as exc:
            exc.msg_id = msg_id
            raise
        return Message(header, content, parent, metadata, list(buffers), identities)

    def _check_sizes(
        self, signature: memoryview, control: list[memoryview], buffers: list[memoryview]
    ) -> None:
        if signature.nbytes > MAX_SIGNATURE_BYTES:
            raise FrameTooLarge(
                f"signature frame is {signature.nbytes} bytes; it should be a 64-byte hex digest"
            )
        names = ("header", "parent header", "metadata", "content")
        for name, part in zip(names, control, strict=True):
            if part.nbytes > MAX_CONTROL_BYTES:
                raise FrameTooLarge(
                    f"{name} is {part.nbytes} bytes, over {MAX_CONTROL_BYTES}; pixels go in buffers"
                )
        if len(buffers) > MAX_BUFFERS:
            raise FrameTooLarge(f"{len(buffers)} buffers is more than {MAX_BUFFERS}; send fewer images")
        for i, buf in enumerate(buffers):
            if buf.nbytes > self.max_frame_bytes:
                raise FrameTooLarge(
                    f"buffer {i} is {buf.nbytes} bytes, over the engine's {self.max_frame_bytes} byte limit; "
                    "send a smaller layer or selection"
                )

    @staticmethod
    def _content(header: Header, raw: dict[str, Any]) -> Content:
        cls = content_type(header.msg_type)
        if cls is None:
            raise UnknownMessageType(
                f"unknown message type {header.msg_type!r} for protocol {PROTOCOL_VERSION}; "
                "update the plugin and the engine to the same release",
                msg_id=header.msg_id,
            )
        try:
            return cls.model_validate(raw)
        except pydantic.ValidationError as exc:
            raise InvalidRequest(f"{header.msg_type}: {summarize(exc)}", msg_id=header.msg_id) from None
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(f"{header.msg_type}: {exc}", msg_id=header.msg_id) from None


def peek_msg_id(raw: Sequence[Any]) -> str | None:
    """The claimed msg_id of a message that failed to decode, so an error reply can name it; never raises."""
    try:
        views = [_view(f) for f in raw]
        for i, view in enumerate(views):
            if view.nbytes == len(DELIMITER) and view == DELIMITER and len(views) > i + 2:
                header = views[i + 2]
                if header.nbytes <= MAX_CONTROL_BYTES:
                    value = unpack(header)
                    msg_id = value.get("msg_id") if isinstance(value, dict) else None
                    return msg_id[:128] if isinstance(msg_id, str) else None
    except Exception:
        return None
    return None
