"""What every request handler shares: the daemon's parts, the loaded-model cache, and the checks of an
incoming image."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from editor_bridge import frames
from editor_bridge.errors import BridgeError, ImageError, InvalidRequest
from editor_bridge.protocol import (
    AckReply,
    ApplyRequest,
    BitDepth,
    Content,
    ErrorCode,
    ImageDescriptor,
    ResultReply,
    TrainRequest,
)
from editor_bridge.server import BridgeServer, Request
from engine import families, operations
from engine.family import Loaded
from engine.imageio import MAX_PIXELS
from engine.operations import Returns
from engine.precision import Precision
from engine.serve.jobs import QUICK, TRAIN, Job, JobManager, error_code, error_message
from engine.serve.registry import Registry

log = logging.getLogger(__name__)


def lane_of(request: Content) -> str:
    """Training waits on the training lane; everything else (an export) on the quick one."""
    if isinstance(request, ApplyRequest) and request.model_id is not None and not request.finetune_iters:
        return QUICK  # an operation with a stored model that is a job at all: one that writes a file
    return TRAIN if isinstance(request, TrainRequest | ApplyRequest) else QUICK


def models_used(request: Content) -> set[str]:
    """The stored models a request reads; none of them may be deleted while it waits or runs."""
    if isinstance(request, TrainRequest):
        return {m for m in (request.stored_image, request.base_model) if m}
    if isinstance(request, ApplyRequest):
        return {request.model_id} if request.model_id else set()
    return set()


class ModelInUse(InvalidRequest):
    code = ErrorCode.BUSY


class ModelCache:
    """Loaded models, each with its inference runner, by model id (least recently used dropped first)."""

    def __init__(self, registry: Registry, device: Any, backend: str, size: int = 4) -> None:
        self.registry, self.device, self.backend, self.size = registry, device, backend, size
        self._items: OrderedDict[str, Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str) -> Loaded:
        with self._lock:
            if model_id in self._items:
                self._items.move_to_end(model_id)
                return self._items[model_id]
        # resident: the engine runs beside the artist's editor
        path = self.registry.path(model_id)
        loaded = families.load(path, self.device, backend=None, resident=True)
        # `engine serve --backend`, where the model's family has that runner; else the family's own
        backend = self.backend if self.backend in loaded.family.backends else loaded.family.backends[0]
        loaded.family.prepare(loaded, backend)
        with self._lock:
            self._items[model_id] = loaded
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return loaded

    def forget(self, model_id: str) -> None:
        with self._lock:
            self._items.pop(model_id, None)


@dataclass
class Context:
    server: BridgeServer
    jobs: JobManager
    registry: Registry
    device: Any  # torch.device
    backend: str
    precision: Precision | None  # `engine serve --precision`; None: each family's own default
    home: Path
    stop: threading.Event
    engine_version: str = ""
    started: float = field(default_factory=time.monotonic)
    models: ModelCache = field(init=False)
    capabilities: dict[str, Any] = field(init=False)  # the families are fixed for the daemon's lifetime

    def __post_init__(self) -> None:
        self.models = ModelCache(self.registry, self.device, self.backend)
        self.capabilities = families.capabilities()

    def submit(self, req: Request, lane: str, model_id: str | None) -> Job:
        job, position = self.jobs.submit(req.content, req.buffers, req.identities, lane, model_id)
        self.server.reply(req, AckReply(job_id=job.job_id, position=max(0, position)))
        return job

    def reply_quick(self, req: Request, work: Callable[[], tuple[ResultReply, Sequence[Any]]]) -> None:
        start = time.monotonic()
        try:
            result, buffers = work()
        except Exception as exc:
            if error_code(exc) is ErrorCode.INTERNAL:
                log.exception("%s failed", req.content.msg_type.value)
            self.server.reply_error(req, error_code(exc), error_message(exc))
            return
        try:
            self.server.reply(req, result.model_copy(update={"elapsed_s": time.monotonic() - start}), buffers)
        except BridgeError as exc:  # e.g. a result over --max-frame-mb: say so rather than stay silent
            log.warning("%s: cannot send the result: %s", req.content.msg_type.value, exc)
            self.server.reply_error(req, error_code(exc), f"the result cannot be sent: {exc}")

    def prepare_backend(self, model_dir: Path) -> None:
        """Give a newly trained model its inference runner now, in the training job (for ConSinGAN with
        onnxruntime: export the sampler), so that its first use is quick."""
        if self.backend == "onnxruntime":
            loaded = families.load(model_dir, "cpu", backend=None)
            if self.backend in loaded.family.backends:
                loaded.family.prepare(loaded, self.backend)


def writes_file(request: ApplyRequest) -> bool:
    """Whether the operation writes a file (an export): a job, not a quick reply."""
    return any(op.returns is Returns.FILE for op in operations.table().get(request.operation, []))


def check_image(desc: ImageDescriptor, buffers: Sequence[Any]) -> None:
    frames.check_buffer(desc, buffers)
    if desc.width * desc.height > MAX_PIXELS:
        raise ImageError(
            f"a {desc.width}x{desc.height} image is over the engine's {MAX_PIXELS // 10**6} MP limit; "
            "send a smaller layer or a crop around the selection"
        )
    if desc.bit_depth is BitDepth.F32 and not np.isfinite(frames.from_frame(buffers, desc)).all():
        raise ImageError(
            f"the {desc.width}x{desc.height} float image has NaN or infinite values; "
            "send values in 0-1 (convert the layer to 8 or 16 bits)"
        )


def canonical(buffers: Sequence[Any], desc: ImageDescriptor) -> np.ndarray:
    """The pixels a training key is taken over: channel order made canonical, so Krita and GIMP agree."""
    return np.asarray(frames.to_canonical(frames.from_frame(buffers, desc), desc.channel_order)[0])


def unknown_job(job_id: str) -> InvalidRequest:
    exc = InvalidRequest(f"no job {job_id!r} in this engine; `engine status` lists the current jobs")
    exc.code = ErrorCode.UNKNOWN_JOB
    return exc
