"""Typed exceptions of the bridge; each carries the `ErrorCode` the server puts in its error reply."""

from __future__ import annotations

from editor_bridge.protocol import ErrorCode


class BridgeError(Exception):
    """Base class. `str(err)` is a short message that says what to do."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, msg_id: str | None = None) -> None:
        super().__init__(message)
        self.msg_id = msg_id  # the offending message's id, when it could be read


class ProtocolError(BridgeError):
    code = ErrorCode.MALFORMED


class FrameTooLarge(ProtocolError):
    code = ErrorCode.FRAME_TOO_LARGE


class UnknownMessageType(ProtocolError):
    code = ErrorCode.UNKNOWN_MSG_TYPE


class InvalidRequest(ProtocolError):
    code = ErrorCode.INVALID_REQUEST


class UnsupportedVersion(ProtocolError):
    code = ErrorCode.UNSUPPORTED_VERSION
    peer_version: int | None = None  # an older peer's version, which its refusal is sent in


class AuthenticationError(BridgeError):
    code = ErrorCode.BAD_SIGNATURE


class UnsignedMessage(AuthenticationError):
    code = ErrorCode.UNSIGNED


class ReplayedMessage(AuthenticationError):
    code = ErrorCode.REPLAYED


class ExpiredMessage(AuthenticationError):
    code = ErrorCode.EXPIRED


class ImageError(BridgeError):
    """A layer or mask does not match its descriptor (byte count, buffer index, bounds, layout)."""

    code = ErrorCode.BAD_IMAGE


class FrameSizeMismatch(ImageError):
    pass


class MissingBuffer(ImageError):
    pass


class BBoxOutOfBounds(ImageError):
    pass


class UnsupportedLayout(ImageError):
    pass


class ConnectionFileError(BridgeError):
    pass


class EngineNotRunning(ConnectionFileError):
    pass


class RequestTimeout(BridgeError):
    pass


class ClientClosed(BridgeError):
    pass


class RemoteError(BridgeError):
    """The engine answered with an error reply; `code` is the engine's code."""

    def __init__(self, code: ErrorCode, message: str, *, job_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.job_id = job_id


class JobCancelled(RemoteError):
    pass
