"""One filled-in example of every message type, with the buffers it refers to, for the round-trip tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from bridge_fakes import MODEL, NOW

from editor_bridge import frames
from editor_bridge.protocol import (
    AckReply,
    ApplyRequest,
    BBox,
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
    ModelInfoReply,
    ModelListReply,
    MsgType,
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


def layer(h: int = 6, w: int = 5, c: int = 4, dtype: Any = np.uint8) -> np.ndarray:
    return (np.arange(h * w * c) % 251).astype(dtype).reshape(h, w, c)


def samples() -> list[tuple[Content, list[Any]]]:
    """(content, buffers) for every MsgType."""
    out: list[tuple[Content, list[Any]]] = []

    def with_images(build) -> None:
        buffers: list[Any] = []
        out.append((build(buffers), buffers))

    out += [
        (PingRequest(), []),
        (ListModelsRequest(family="consingan", task="editing"), []),
        (InspectModelRequest(model_id="m1"), []),
        (RenameModelRequest(model_id="m1", name="Evening sky"), []),
        (DeleteModelRequest(model_id="m1"), []),
        (
            ApplyRequest(
                operation="sample", model_id="m1", params={"n": 4, "width": 320, "height": 200, "seed": 7}
            ),
            [],
        ),
        (ApplyRequest(operation="export", model_id="m1", params={"fp16": True}), []),
        (TrainRequest(family="cyclegan", task="restyle", folders=["/data/photos", "/data/monet"]), []),
        (JobStatusRequest(job_id="job-1", subscribe=True), []),
        (CancelRequest(job_id="job-1"), []),
        (StatusRequest(), []),
        (ShutdownRequest(), []),
        (PongReply(engine_version="0.1.0", pid=1234, capabilities={"families": [], "operations": []}), []),
        (AckReply(job_id="job-1", position=2), []),
        (OkReply(detail="deleted"), []),
        (ErrorReply(code=ErrorCode.UNKNOWN_MODEL, message="no model 'x'", in_reply_to="abc", job_id="j"), []),
        (ModelInfoReply(model=MODEL), []),
        (ModelListReply(models=[MODEL, MODEL.model_copy(update={"model_id": "m2"})]), []),
        (DaemonStatus(pid=1, device="cuda:0", home="/tmp/h", uptime_s=3.5, n_models=2), []),
    ]
    with_images(
        lambda b: TrainRequest(
            family="consingan",
            task="harmonization",
            options={"preset": "fast", "stages": 5, "iters": 500, "max_size": 250, "seed": 1},
            name="bg",
            image=frames.attach(b, layer(), ChannelOrder.BGRA, BBox(x=1, y=2, w=3, h=4)),
        )
    )
    with_images(
        lambda b: TrainRequest(
            base_model="m1", image=frames.attach(b, layer(c=3), ChannelOrder.RGB), options={"iters": 200}
        )
    )
    for operation in ("harmonize", "edit"):
        with_images(
            lambda b, operation=operation: ApplyRequest(
                operation=operation,
                image=frames.attach(b, layer(dtype=np.uint16), ChannelOrder.RGBA),
                mask=frames.attach(b, layer(c=1)[..., 0], ChannelOrder.GRAY),
                train_if_missing=True,
                background=frames.attach(b, layer(dtype=np.float32), ChannelOrder.RGBA),
                train={"preset": "tiny"},
                params={"seed": 3, "color_match": 0.25},
            )
        )
    with_images(
        lambda b: ProgressEvent(
            job_id="job-1",
            stage=2,
            n_stages=6,
            iteration=100,
            iters=1000,
            losses={"d": 0.25, "g": -1.5, "rec": 0.125},
            eta_s=12.5,
            preview=frames.attach(b, layer(c=3), ChannelOrder.BGR),
        )
    )
    with_images(
        lambda b: ResultReply(
            job_id="job-1",
            images=[
                frames.attach(b, layer(), ChannelOrder.BGRA),
                frames.attach(b, layer(c=2), ChannelOrder.GRAYA),
            ],
            model=MODEL,
            path="/models/m1/model.onnx",
            reused_model=True,
            elapsed_s=1.5,
            seeds=[1236, 7],
        )
    )
    out.append(
        (
            JobInfo(
                job_id="job-1",
                state=JobState.FAILED,
                request_type=MsgType.TRAIN,
                created=NOW,
                progress=ProgressEvent(job_id="job-1", stage=0, n_stages=1, iteration=0, iters=1),
                error=ErrorReply(code=ErrorCode.JOB_FAILED, message="out of memory; try preset tiny"),
                model_id="m1",
            ),
            [],
        )
    )
    return out
