"""A tiny in-process engine for the bridge tests: a BridgeServer in a thread that runs fake jobs."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from editor_bridge import frames
from editor_bridge.protocol import (
    AckReply,
    ApplyRequest,
    CancelRequest,
    ChannelOrder,
    Content,
    DaemonStatus,
    DeleteModelRequest,
    ErrorCode,
    ErrorReply,
    InspectModelRequest,
    JobInfo,
    JobState,
    JobStatusRequest,
    ListModelsRequest,
    ModelInfo,
    ModelInfoReply,
    ModelListReply,
    OkReply,
    PingRequest,
    PongReply,
    ProgressEvent,
    RenameModelRequest,
    ResultReply,
    ShutdownRequest,
    StatusRequest,
    TrainRequest,
)
from editor_bridge.server import BridgeServer, Request

KEY = "a" * 64
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
MODEL = ModelInfo(
    model_id="m1",
    name="sky",
    family="consingan",
    task="harmonization",
    width=64,
    height=48,
    n_stages=3,
    created=NOW,
)
JOB_TYPES = (TrainRequest, ApplyRequest)
_job_ids = itertools.count(1)


@dataclass
class FakeJob:
    job_id: str
    request: Content
    images: list[np.ndarray]  # copies of the request's images, echoed back as the result
    subscribers: set[tuple[bytes, ...]] = field(default_factory=set)
    cancel: threading.Event = field(default_factory=threading.Event)
    state: JobState = JobState.QUEUED
    thread: threading.Thread | None = None


class FakeEngine:
    """Serves on `endpoint` from its own thread; jobs emit `steps` progress events `step_s` apart.

    `jobs` may be shared with a later FakeEngine to play a daemon that restarts and resumes its jobs.
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:0",
        *,
        key: str = KEY,
        steps: int = 3,
        step_s: float = 0.01,
        max_frame_bytes: int = 64 * 2**20,
        jobs: dict[str, FakeJob] | None = None,
        handler: Callable[[BridgeServer, Request], None] | None = None,
    ) -> None:
        self.key, self.steps, self.step_s = key, steps, step_s
        self.jobs = jobs if jobs is not None else {}
        self._custom_handler = handler
        self._bind, self._max_frame_bytes = endpoint, max_frame_bytes
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.server: BridgeServer | None = None
        self.endpoint = ""

    def __enter__(self) -> FakeEngine:
        self._thread.start()
        assert self._ready.wait(5), "fake engine did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for job in list(self.jobs.values()):
            if job.thread is not None:
                job.thread.join(5)
        self._thread.join(5)

    def _run(self) -> None:
        with BridgeServer(self.key, self._bind, max_frame_bytes=self._max_frame_bytes) as server:
            self.server, self.endpoint = server, server.endpoint
            for job in self.jobs.values():  # "resume" what a previous instance left running
                if job.state in (JobState.QUEUED, JobState.RUNNING):
                    self._start(job)
            self._ready.set()
            custom = self._custom_handler
            handle = self._handle if custom is None else lambda request: custom(server, request)
            server.serve(handle, self._stop, poll_s=0.01)

    def _handle(self, req: Request) -> None:
        server, content = self.server, req.content
        assert server is not None
        if isinstance(content, PingRequest):
            server.reply(req, PongReply(engine_version="fake", pid=os.getpid()))
        elif isinstance(content, StatusRequest):
            server.reply(req, DaemonStatus(pid=os.getpid(), device="cpu", n_models=1))
        elif isinstance(content, ListModelsRequest):
            server.reply(req, ModelListReply(models=[MODEL]))
        elif isinstance(content, InspectModelRequest | RenameModelRequest | DeleteModelRequest):
            if content.model_id != MODEL.model_id:
                server.reply_error(
                    req, ErrorCode.UNKNOWN_MODEL, f"no model {content.model_id!r}; list_models"
                )
            elif isinstance(content, RenameModelRequest):
                server.reply(req, ModelInfoReply(model=MODEL.model_copy(update={"name": content.name})))
            elif isinstance(content, DeleteModelRequest):
                server.reply(req, OkReply())
            else:
                server.reply(req, ModelInfoReply(model=MODEL))
        elif isinstance(content, JOB_TYPES):
            images = [np.array(req.message.image(d)) for d in _request_images(content)]
            job = FakeJob(f"job{next(_job_ids)}", content, images, {req.identities})
            self.jobs[job.job_id] = job
            server.reply(req, AckReply(job_id=job.job_id))
            self._start(job)
        elif isinstance(content, JobStatusRequest | CancelRequest):
            job = self.jobs.get(content.job_id)
            if job is None:
                server.reply_error(
                    req, ErrorCode.UNKNOWN_JOB, f"no job {content.job_id!r}", job_id=content.job_id
                )
            elif isinstance(content, CancelRequest):
                job.cancel.set()
                server.reply(req, OkReply())
            else:
                if content.subscribe:
                    job.subscribers.add(req.identities)
                info = JobInfo(
                    job_id=job.job_id, state=job.state, request_type=job.request.msg_type, created=NOW
                )
                server.reply(req, info)
                if content.subscribe and job.state is JobState.DONE:
                    self._send_result(job, req.header)
        elif isinstance(content, ShutdownRequest):
            server.reply(req, OkReply(detail="bye"))
            self._stop.set()
        else:
            server.reply_error(req, ErrorCode.NOT_IMPLEMENTED, f"{content.msg_type.value} is not a request")

    def _start(self, job: FakeJob) -> None:
        job.thread = threading.Thread(target=self._work, args=(job,), daemon=True)
        job.thread.start()

    def _work(self, job: FakeJob) -> None:
        server = self.server
        assert server is not None
        job.state = JobState.RUNNING
        preview = np.full((4, 4, 3), 7, np.uint8)
        for step in range(self.steps):
            if self._stop.wait(self.step_s):
                return  # the daemon "dies": the job stays RUNNING for the next instance to resume
            if job.cancel.is_set():
                job.state = JobState.CANCELLED
                error = ErrorReply(code=ErrorCode.CANCELLED, message="job cancelled", job_id=job.job_id)
                self._broadcast(job, error)
                return
            buffers: list = []
            event = ProgressEvent(
                job_id=job.job_id,
                stage=step,
                n_stages=self.steps,
                iteration=step + 1,
                iters=self.steps,
                losses={"d": 0.5, "g": 1.25},
                eta_s=(self.steps - step) * self.step_s,
                preview=frames.attach(buffers, preview, ChannelOrder.RGB),
            )
            self._broadcast(job, event, buffers)
        job.state = JobState.DONE
        self._send_result(job)

    def _send_result(self, job: FakeJob, parent=None) -> None:
        buffers: list = []
        images = [frames.attach(buffers, img, _order(img)) for img in job.images]
        self._broadcast(job, ResultReply(job_id=job.job_id, images=images, model=MODEL), buffers)

    def _broadcast(self, job: FakeJob, content: Content, buffers: list | tuple = ()) -> None:
        server = self.server
        assert server is not None
        for identities in list(job.subscribers):
            server.send(identities, content, buffers=buffers)


def _request_images(content: Content) -> list:
    image = getattr(content, "image", None)
    return [image] if image is not None else []


def _order(image: np.ndarray) -> ChannelOrder:
    return {1: ChannelOrder.GRAY, 2: ChannelOrder.GRAYA, 3: ChannelOrder.RGB, 4: ChannelOrder.RGBA}[
        image.shape[2]
    ]


def forge(
    header: dict | None = None,
    content: dict | None = None,
    *,
    key: str = KEY,
    buffers: list | tuple = (),
    signature: bytes | None = None,
    **header_fields,
) -> list[bytes]:
    """Frames of a hand-made message (any header or content, signed with `key`), past WireCodec checks."""
    from editor_bridge.protocol import Header, pack
    from editor_bridge.signing import Signer
    from editor_bridge.wire import DELIMITER

    if header is None:
        header = Header.new("ping", "forger").model_dump(mode="json") | header_fields
    parts = [pack(header), pack({}), pack({}), pack(content if content is not None else {})]
    parts += [bytes(b) for b in buffers]
    sig = Signer(key).sign(parts) if signature is None else signature
    return [DELIMITER, sig, *parts]
