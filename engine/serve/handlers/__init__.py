"""The daemon's request handlers: every input is checked on the loop thread before any work starts.

answers.py: requests answered at once (ping with the engine's capabilities, status, the stored models,
jobs, shutdown). train.py: training and fine-tuning jobs. apply.py: every operation of every family,
through the operation table (`engine.operations`), answered on the quick lane with a stored model or run as
a job that trains first. context.py: what they share. Long work becomes a journaled job: an `ack` now, then
progress events and a `result` or `error` for each subscriber; `Handlers.run_job` is the work of every job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from editor_bridge.errors import InvalidRequest
from editor_bridge.protocol import (
    ApplyRequest,
    CancelRequest,
    Content,
    DeleteModelRequest,
    ErrorCode,
    InspectModelRequest,
    JobStatusRequest,
    ListModelsRequest,
    PingRequest,
    RenameModelRequest,
    ResultReply,
    ShutdownRequest,
    StatusRequest,
    TrainRequest,
)
from editor_bridge.server import BridgeServer, Request
from engine.precision import Precision
from engine.serve.handlers import answers, apply, train
from engine.serve.handlers.context import Context, lane_of, models_used
from engine.serve.jobs import Job, JobContext, JobManager, error_code, error_message
from engine.serve.registry import Registry

__all__ = ["Handlers", "lane_of", "models_used"]

log = logging.getLogger(__name__)

TABLE: dict[type[Content], Callable[[Context, Request], None]] = {
    PingRequest: answers.ping,
    StatusRequest: answers.status,
    ListModelsRequest: answers.list_models,
    InspectModelRequest: answers.inspect_model,
    RenameModelRequest: answers.rename_model,
    DeleteModelRequest: answers.delete_model,
    JobStatusRequest: answers.job_status,
    CancelRequest: answers.cancel,
    ShutdownRequest: answers.shutdown,
    TrainRequest: train.accept,
    ApplyRequest: apply.accept,
}


class Handlers:
    def __init__(
        self,
        server: BridgeServer,
        jobs: JobManager,
        registry: Registry,
        device: Any,
        backend: str,
        precision: Precision | None,
        home: Path,
        stop: Any,
        engine_version: str = "",
    ) -> None:
        self.ctx = Context(server, jobs, registry, device, backend, precision, home, stop, engine_version)

    def dispatch(self, request: Request) -> None:
        handler = TABLE.get(type(request.content))
        server = self.ctx.server
        if handler is None:
            kind = request.content.msg_type.value
            server.reply_error(request, ErrorCode.INVALID_REQUEST, f"{kind} is a reply, not a request")
            return
        try:
            handler(self.ctx, request)
        except Exception as exc:
            if error_code(exc) is ErrorCode.INTERNAL:
                log.exception("%s failed", request.content.msg_type.value)
            server.reply_error(request, error_code(exc), error_message(exc))

    def run_job(self, job: Job, jc: JobContext) -> tuple[ResultReply, Sequence[Any]]:
        if isinstance(job.request, TrainRequest):
            return train.run(self.ctx, job, jc), []
        if isinstance(job.request, ApplyRequest):
            return apply.run(self.ctx, job, jc)
        raise InvalidRequest(f"{job.request.msg_type.value} is not a job")
