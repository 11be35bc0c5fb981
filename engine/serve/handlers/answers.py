"""Requests answered at once, on the loop thread: ping, status, the stored models, jobs, shutdown."""

from __future__ import annotations

import os
import time

from editor_bridge.protocol import (
    CancelRequest,
    DaemonStatus,
    DeleteModelRequest,
    ErrorReply,
    InspectModelRequest,
    JobInfo,
    JobState,
    JobStatusRequest,
    ListModelsRequest,
    ModelInfoReply,
    ModelListReply,
    OkReply,
    PongReply,
    RenameModelRequest,
    ResultReply,
)
from editor_bridge.server import Request
from engine.serve.handlers.context import Context, ModelInUse, models_used, unknown_job


def ping(ctx: Context, req: Request) -> None:
    pong = PongReply(engine_version=ctx.engine_version, pid=os.getpid(), capabilities=ctx.capabilities)
    ctx.server.reply(req, pong)


def status(ctx: Context, req: Request) -> None:
    reply = DaemonStatus(
        pid=os.getpid(),
        engine_version=ctx.engine_version,
        device=str(ctx.device),
        home=str(ctx.home),
        uptime_s=time.monotonic() - ctx.started,
        jobs=ctx.jobs.active(),
        n_models=len(ctx.registry),
    )
    ctx.server.reply(req, reply)


def list_models(ctx: Context, req: Request) -> None:
    c = req.content_as(ListModelsRequest)
    ctx.server.reply(req, ModelListReply(models=ctx.registry.list(c.family, c.task)))


def inspect_model(ctx: Context, req: Request) -> None:
    info = ctx.registry.info(req.content_as(InspectModelRequest).model_id)
    ctx.server.reply(req, ModelInfoReply(model=info))


def rename_model(ctx: Context, req: Request) -> None:
    c = req.content_as(RenameModelRequest)
    ctx.server.reply(req, ModelInfoReply(model=ctx.registry.rename(c.model_id, c.name)))


def delete_model(ctx: Context, req: Request) -> None:
    # Jobs and quick requests are submitted on this (the loop) thread too: none can start using the
    # model between this check and the delete.
    model_id = req.content_as(DeleteModelRequest).model_id
    ctx.registry.path(model_id)
    for job in ctx.jobs.unfinished():
        if model_id == job.model_id or model_id in models_used(job.request):
            raise ModelInUse(
                f"model {model_id} is in use by job {job.job_id} ({job.request.msg_type.value}, "
                f"{job.state.value}); cancel that job or wait until it ends, then delete the model"
            )
    kinds = ctx.jobs.held(model_id)
    if kinds:
        raise ModelInUse(
            f"model {model_id} is in use by a {kinds[0]} request being answered; delete it once that "
            "request has its reply"
        )
    ctx.registry.delete(model_id)
    ctx.models.forget(model_id)
    ctx.server.reply(req, OkReply(detail=f"deleted {model_id}"))


def job_status(ctx: Context, req: Request) -> None:
    c = req.content_as(JobStatusRequest)
    job = ctx.jobs.subscribe(c.job_id, req.identities) if c.subscribe else ctx.jobs.get(c.job_id)
    record = ctx.jobs.record(c.job_id)
    if job is None and record is None:
        raise unknown_job(c.job_id)
    if job is not None and job.state is not JobState.DONE:
        ctx.server.reply(req, job.info())
        return
    assert record is not None
    error = ErrorReply.model_validate(record.error) if record.error is not None else None
    info = JobInfo(
        job_id=record.job_id,
        state=record.state,
        request_type=record.request_type,
        created=record.created,
        error=error,
        model_id=record.model_id,
    )
    ctx.server.reply(req, info)
    if c.subscribe and record.state is JobState.DONE and record.result is not None:
        result = ResultReply.model_validate(record.result)
        buffers = ctx.jobs.result_buffers(record.job_id, len(result.images))
        ctx.server.reply(req, result, buffers)


def cancel(ctx: Context, req: Request) -> None:
    job_id = req.content_as(CancelRequest).job_id
    if ctx.jobs.cancel(job_id):
        ctx.server.reply(req, OkReply(detail=f"cancelling {job_id}"))
    elif ctx.jobs.record(job_id) is None:
        raise unknown_job(job_id)
    else:
        ctx.server.reply(req, OkReply(detail=f"job {job_id} had already ended"))


def shutdown(ctx: Context, req: Request) -> None:
    ctx.server.reply(req, OkReply(detail="stopping; running training is checkpointed first"))
    ctx.stop.set()
