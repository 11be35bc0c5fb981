"""`Client`: what editor plugins and batch tools use to talk to the engine daemon.

One DEALER socket carries replies and a job's progress events. `close()` closes the socket and terminates the
ZeroMQ context right away: editors (Krita) crash at exit when either is left for interpreter shutdown.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from editor_bridge.connection import ConnectionInfo, connection_file_path, is_stale, read_connection_file
from editor_bridge.errors import (
    AuthenticationError,
    BridgeError,
    ClientClosed,
    EngineNotRunning,
    JobCancelled,
    ProtocolError,
    RemoteError,
    RequestTimeout,
    UnsignedMessage,
    UnsupportedVersion,
)
from editor_bridge.protocol import (
    IDEMPOTENT,
    PROTOCOL_VERSION,
    AckReply,
    CancelRequest,
    Content,
    DaemonStatus,
    DeleteModelRequest,
    ErrorCode,
    ErrorReply,
    Header,
    InspectModelRequest,
    JobInfo,
    JobState,
    JobStatusRequest,
    ListModelsRequest,
    ModelInfo,
    ModelInfoReply,
    ModelListReply,
    PingRequest,
    PongReply,
    ProgressEvent,
    RenameModelRequest,
    ResultReply,
    ShutdownRequest,
    StatusRequest,
)
from editor_bridge.signing import present_key
from editor_bridge.wire import DEFAULT_MAX_FRAME_BYTES, MAX_CONTROL_BYTES, Message, WireCodec

log = logging.getLogger(__name__)
_AUTH_FAILED = zmq.EVENT_HANDSHAKE_FAILED_AUTH

ProgressCallback = Callable[[ProgressEvent, "np.ndarray | None"], None]
T = TypeVar("T", bound=Content)
CANCEL_GRACE_S = 10.0  # how long a cancelled job's caller waits for the engine to confirm it stopped
_POLL_S = 0.05  # how often a blocked wait looks at its cancel flag and at close()
_open_clients: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_open_clients() -> None:
    # A safety net only: atexit runs before interpreter teardown, where closing would be too late.
    for client in list(_open_clients):
        client.close()


def _checked_info(path: Path) -> ConnectionInfo:
    info = read_connection_file(path)
    if info.protocol_version != PROTOCOL_VERSION:
        older = info.protocol_version < PROTOCOL_VERSION
        fix = (
            "restart it from the updated engine (`engine stop`, then `engine serve`)"
            if older
            else "reinstall the plugin with `engine plugin install` from that engine"
        )
        raise UnsupportedVersion(
            f"the running engine speaks protocol {info.protocol_version}, this plugin {PROTOCOL_VERSION} "
            f"(the engine is {'older' if older else 'newer'}): {fix}"
        )
    if is_stale(info):
        raise EngineNotRunning(
            f"no engine is running (pid {info.pid} is gone); start one with `engine serve`"
        )
    return info


def _answers(message: Message, msg_ids: set[str]) -> bool:
    content = message.content
    if isinstance(content, ErrorReply) and content.in_reply_to in msg_ids:
        return True
    return message.parent_id in msg_ids


def raise_if_error(message: Message) -> None:
    content = message.content
    if isinstance(content, ErrorReply):
        cls = JobCancelled if content.code is ErrorCode.CANCELLED else RemoteError
        raise cls(content.code, content.message, job_id=content.job_id)


def _expect(message: Message, cls: type[T]) -> T:
    raise_if_error(message)
    if not isinstance(message.content, cls):
        raise ProtocolError(
            f"expected {cls.msg_type.value}, the engine sent {message.content.msg_type.value}"
        )
    return message.content


class Client:
    """A connection to one engine. Not for concurrent use from several threads, except `close()`."""

    def __init__(
        self,
        endpoint: str,
        key: bytes | str,
        *,
        timeout: float = 30.0,
        heartbeat_s: float = 5.0,
        max_reconnects: int = 5,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        connection_file: str | os.PathLike[str] | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.heartbeat_s = heartbeat_s
        self.max_reconnects = max_reconnects
        self._key = key
        self._max_frame_bytes = max_frame_bytes
        self._codec = WireCodec(key, max_frame_bytes=max_frame_bytes)
        self._connection_file = Path(connection_file) if connection_file is not None else None
        self._own_context = context is None
        self._ctx = context if context is not None else zmq.Context()
        self._lock = threading.RLock()  # lets close() from another thread wait for the current poll slice
        self._closed = False
        self._closing = False  # set by close() before it takes the lock: waiting loops then let go of it
        self._socket: zmq.Socket[Any] | None = None
        self._monitor: zmq.Socket[Any] | None = None
        self._poller = zmq.Poller()
        try:
            self._open()
        except zmq.ZMQError:
            if self._own_context:
                self._ctx.term()  # nothing may outlive a failed constructor
            raise
        _open_clients.add(self)

    @classmethod
    def from_connection_file(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Client:
        """Connect to the engine named by the connection file (default: the one under `home`/$ENGINE_HOME)."""
        target = Path(path) if path is not None else connection_file_path(home)
        info = _checked_info(target)
        return cls(info.endpoint, info.key, connection_file=target, **kwargs)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the socket (dropping unsent messages) and terminate the context. Idempotent."""
        # Python's locks are not fair: a loop that polls with the lock held could take it back again and
        # again. The flag makes it stop trying, so close() from another thread gets the lock at once.
        self._closing = True
        with self._lock:
            if self._closed:
                return
            self._closed = True
            _open_clients.discard(self)
            self._drop_socket()
            if self._own_context:
                self._ctx.term()

    def reconnect(self) -> None:
        """Lazy pirate: drop the socket with whatever it holds and open a fresh one.

        With a connection file, it is read again first, so a daemon restarted on a new port or key is found.
        """
        with self._lock:
            self._check_open()
            self._drop_socket()
            if self._connection_file is not None:
                try:
                    info = _checked_info(self._connection_file)
                except UnsupportedVersion:
                    raise  # the engine came back from another release: retrying cannot help, the user can
                except BridgeError as exc:
                    log.info("engine not back yet (%s); retrying at %s", exc, self.endpoint)
                else:
                    if (info.endpoint, info.key) != (self.endpoint, self._key):
                        self.endpoint, self._key = info.endpoint, info.key
                        self._codec = WireCodec(
                            info.key, session=self._codec.session, max_frame_bytes=self._max_frame_bytes
                        )
            self._open()

    # ---- plain requests ----

    def call(
        self,
        request: Content,
        buffers: Sequence[Any] = (),
        *,
        timeout: float | None = None,
        retries: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Message:
        """Send `request` and return the reply; raise RemoteError for an error reply.

        On a timeout the socket is replaced; idempotent requests are then resent (`retries`, default 2).
        Setting `cancel` stops the wait at once with JobCancelled: for requests that start nothing (a ping).
        """
        timeout = self.timeout if timeout is None else timeout
        if retries is None:
            retries = 2 if request.msg_type in IDEMPOTENT else 0
        for _ in range(retries + 1):
            header = self._send(request, buffers)
            reply = self._wait({header.msg_id}, time.monotonic() + timeout, cancel)
            if reply is not None:
                raise_if_error(reply)
                return reply
            log.info("no reply to %s within %g s; reconnecting", request.msg_type.value, timeout)
            self.reconnect()
        raise RequestTimeout(
            f"no reply from the engine at {self.endpoint} within {timeout:g} s ({retries + 1} tries); "
            "is `engine serve` running?"
        )

    def ping(self, timeout: float | None = None, cancel: threading.Event | None = None) -> PongReply:
        return _expect(self.call(PingRequest(), timeout=timeout, cancel=cancel), PongReply)

    def is_alive(self, timeout: float = 1.0) -> bool:
        """Heartbeat: whether the engine answers a ping within `timeout` (one try)."""
        try:
            self.call(PingRequest(), timeout=timeout, retries=0)
        except RequestTimeout:
            return False
        return True

    def status(self) -> DaemonStatus:
        return _expect(self.call(StatusRequest()), DaemonStatus)

    def list_models(self, family: str | None = None, task: str | None = None) -> list[ModelInfo]:
        return _expect(self.call(ListModelsRequest(family=family, task=task)), ModelListReply).models

    def inspect_model(self, model_id: str) -> ModelInfo:
        return _expect(self.call(InspectModelRequest(model_id=model_id)), ModelInfoReply).model

    def rename_model(self, model_id: str, name: str) -> ModelInfo:
        return _expect(self.call(RenameModelRequest(model_id=model_id, name=name)), ModelInfoReply).model

    def delete_model(self, model_id: str) -> None:
        self.call(DeleteModelRequest(model_id=model_id))

    def job_status(self, job_id: str) -> JobInfo:
        return _expect(self.call(JobStatusRequest(job_id=job_id)), JobInfo)

    def cancel(self, job_id: str) -> None:
        self.call(CancelRequest(job_id=job_id))

    def shutdown(self) -> None:
        self.call(ShutdownRequest())

    # ---- jobs ----

    def submit(self, request: Content, buffers: Sequence[Any] = (), *, timeout: float | None = None) -> str:
        """Queue long work and return its job id without waiting for it."""
        return _expect(self.call(request, buffers, timeout=timeout), AckReply).job_id

    def run_job(
        self,
        request: Content,
        buffers: Sequence[Any] = (),
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        on_job: Callable[[str], None] | None = None,
        on_preview: Callable[[Message], None] | None = None,
    ) -> Message:
        """Run long work to the end and return the result message (its images: `message.image(desc)`).

        `on_progress(event, preview)` is called for each progress event; set `cancel` (from any thread) to
        cancel the job, which then raises JobCancelled. `timeout` bounds the whole job (None: no limit).
        `on_job(job_id)` is called once the engine has accepted the job, before it is followed.
        `on_preview(message)` is called with each preview result (ApplyRequest.preview) that comes before
        the job's own result.
        """
        header = self._send(request, buffers)
        deadline = time.monotonic() + self.timeout
        try:
            first = self._wait({header.msg_id}, deadline, cancel)
        except JobCancelled:
            # Cancelled before the engine said whether it took the request (a large upload, a busy engine).
            # Wait a little longer for its job id so the job can be cancelled too, not left running unseen.
            first = self._wait({header.msg_id}, min(deadline, time.monotonic() + CANCEL_GRACE_S))
            if first is None:
                self.reconnect()
                raise JobCancelled(
                    ErrorCode.CANCELLED,
                    f"cancelled before the engine acknowledged {request.msg_type.value}; if it started "
                    "anyway, `engine status` lists it and `engine cancel JOB_ID` stops it",
                ) from None
        if first is None:
            self.reconnect()
            raise RequestTimeout(
                f"the engine did not acknowledge {request.msg_type.value} within {self.timeout:g} s; "
                "check `engine status` before sending it again"
            )
        raise_if_error(first)
        if isinstance(first.content, ResultReply):
            if cancel is not None and cancel.is_set():
                raise JobCancelled(ErrorCode.CANCELLED, "cancelled; the engine's result was dropped")
            return first  # quick work may be answered at once, without a job
        job_id = _expect(first, AckReply).job_id
        if on_job is not None:
            on_job(job_id)
        return self._follow(job_id, {header.msg_id}, on_progress, cancel, timeout, on_preview)

    def wait_job(
        self,
        job_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
        timeout: float | None = None,
        on_preview: Callable[[Message], None] | None = None,
    ) -> Message:
        """Follow a job submitted earlier (or by another client) to its result."""
        header = self._send(JobStatusRequest(job_id=job_id, subscribe=True))
        return self._follow(job_id, {header.msg_id}, on_progress, cancel, timeout, on_preview)

    def _follow(
        self,
        job_id: str,
        sent: set[str],
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
        timeout: float | None,
        on_preview: Callable[[Message], None] | None = None,
    ) -> Message:
        deadline = None if timeout is None else time.monotonic() + timeout
        cancel_ids: set[str] = set()
        cancel_sent = 0.0
        last_heard = time.monotonic()
        ping_id: str | None = None
        ping_at = 0.0
        reconnects = 0
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                raise RequestTimeout(
                    f"job {job_id} did not finish within {timeout:g} s; it keeps running: cancel it or wait"
                )
            if cancel is not None and cancel.is_set():
                if not cancel_ids:
                    cancel_ids.add(self._send(CancelRequest(job_id=job_id)).msg_id)
                    cancel_sent = time.monotonic()
                elif time.monotonic() - cancel_sent > CANCEL_GRACE_S:
                    # The engine took the cancel but the job has not stopped (a step that cannot be
                    # interrupted): let the caller go; the job ends on its own.
                    raise JobCancelled(
                        ErrorCode.CANCELLED,
                        f"cancelled; the engine is still stopping job {job_id}",
                        job_id=job_id,
                    )
            message = self._next(_POLL_S)
            now = time.monotonic()
            if message is None:
                if now - last_heard < self.heartbeat_s:
                    continue
                if ping_id is None:
                    ping_id, ping_at = self._send(PingRequest()).msg_id, now
                elif now - ping_at > self.heartbeat_s:
                    reconnects += 1
                    if reconnects > self.max_reconnects:
                        raise RequestTimeout(f"lost the engine at {self.endpoint} while running job {job_id}")
                    # The daemon died or restarted: start afresh and ask it to resume streaming this job.
                    self.reconnect()
                    sent.add(self._send(JobStatusRequest(job_id=job_id, subscribe=True)).msg_id)
                    ping_id, last_heard = None, now
                continue
            last_heard, reconnects = now, 0
            content = message.content
            if ping_id is not None and message.parent_id == ping_id:
                ping_id = None
            elif _answers(message, cancel_ids):
                continue  # the cancel's own ok/error; the job's outcome follows separately
            elif getattr(content, "job_id", None) == job_id or _answers(message, sent):
                if isinstance(content, ProgressEvent):
                    self._report(on_progress, message, content)
                elif isinstance(content, ResultReply) and content.preview:
                    if on_preview is not None:
                        on_preview(message)
                elif isinstance(content, ResultReply):
                    return message
                elif isinstance(content, ErrorReply):
                    raise_if_error(message)
                elif isinstance(content, JobInfo) and content.state in (JobState.FAILED, JobState.CANCELLED):
                    cancelled = content.state is JobState.CANCELLED
                    error = content.error or ErrorReply(
                        code=ErrorCode.CANCELLED if cancelled else ErrorCode.JOB_FAILED,
                        message=f"job {job_id} {content.state.value}; see the engine log",
                    )
                    raise (JobCancelled if cancelled else RemoteError)(
                        error.code, error.message, job_id=job_id
                    )

    @staticmethod
    def _report(on_progress: ProgressCallback | None, message: Message, event: ProgressEvent) -> None:
        if on_progress is None:
            return
        preview = None
        if event.preview is not None:
            try:
                preview = message.image(event.preview)
            except BridgeError as exc:
                log.warning("ignoring a bad preview image: %s", exc)
        on_progress(event, preview)

    # ---- socket ----

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise ClientClosed("this client is closed; create a new one")

    def _open(self) -> None:
        socket = self._ctx.socket(zmq.DEALER)
        socket.linger = 0
        socket.sndtimeo = int(self.timeout * 1000)
        socket.setsockopt(zmq.MAXMSGSIZE, 2 * self._max_frame_bytes + MAX_CONTROL_BYTES)
        present_key(socket, self._key)
        # The engine refuses a wrong key in the handshake, without a reply: the monitor tells at once.
        monitor = socket.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        try:
            socket.connect(self.endpoint)
        except zmq.ZMQError:
            monitor.close(linger=0)
            socket.close(linger=0)  # an open socket would block the context's term() forever
            raise
        self._socket, self._monitor = socket, monitor
        self._poller = zmq.Poller()
        self._poller.register(socket, zmq.POLLIN)
        self._poller.register(monitor, zmq.POLLIN)

    def _drop_socket(self) -> None:
        if self._socket is None:
            return
        self._socket.disable_monitor()
        if self._monitor is not None:
            self._monitor.close(linger=0)
        self._socket.close(linger=0)
        self._socket, self._monitor = None, None

    def _send(self, content: Content, buffers: Sequence[Any] = ()) -> Header:
        header = self._codec.header(content.msg_type)
        frames = self._codec.serialize(content, buffers=buffers, header=header)
        with self._lock:
            self._check_open()
            assert self._socket is not None
            try:
                self._socket.send_multipart(frames, copy=False)
            except zmq.Again:
                raise RequestTimeout(
                    f"could not send to the engine at {self.endpoint}; is `engine serve` running?"
                ) from None
        return header

    def _next(self, timeout_s: float) -> Message | None:
        """The next decodable message within `timeout_s`, if any. Undecodable ones are dropped, except a
        signature failure, which means this client has the wrong key."""
        self._check_open()  # before the lock: a close() waiting for it must get it
        with self._lock:
            self._check_open()
            assert self._socket is not None and self._monitor is not None
            ready = dict(self._poller.poll(int(timeout_s * 1000)))
            if self._monitor in ready and recv_monitor_message(self._monitor)["event"] == _AUTH_FAILED:
                raise AuthenticationError(
                    f"the engine at {self.endpoint} refused this client's key; the connection file is out "
                    "of date: reconnect with Client.from_connection_file"
                )
            if self._socket not in ready:
                return None
            raw = self._socket.recv_multipart(copy=False)
        try:
            return self._codec.deserialize(raw)
        except BridgeError as exc:
            if type(exc) in (AuthenticationError, UnsignedMessage):
                raise AuthenticationError(
                    f"the engine's reply fails verification ({exc}); the connection file is out of date: "
                    "reconnect with Client.from_connection_file"
                ) from None
            log.warning("dropped a message from the engine that failed to decode: %s", exc)
            return None

    def _wait(
        self, msg_ids: set[str], deadline: float, cancel: threading.Event | None = None
    ) -> Message | None:
        """The reply to one of `msg_ids`, or None at `deadline`; other messages are dropped. Raises
        JobCancelled as soon as `cancel` is set."""
        while (left := deadline - time.monotonic()) > 0:
            if cancel is not None and cancel.is_set():
                raise JobCancelled(ErrorCode.CANCELLED, "cancelled while waiting for the engine")
            message = self._next(min(left, _POLL_S))
            if message is not None and _answers(message, msg_ids):
                return message
        return None
