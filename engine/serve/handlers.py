"""One function per request type. Every input is checked here, on the loop thread, before any work starts.

Quick requests are answered at once (ping, status, models, jobs) or on the quick lane (inference with a stored
model, which replies with a `result` directly); long work becomes a journaled job: an `ack` now, then progress
events and a `result` or `error` for each subscriber. `run_job` is the work of every job type.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from editor_bridge import frames
from editor_bridge.errors import BridgeError, ImageError, InvalidRequest
from editor_bridge.protocol import (
    AckReply,
    BitDepth,
    CancelRequest,
    Content,
    DaemonStatus,
    DeleteModelRequest,
    EditRequest,
    ErrorCode,
    ErrorReply,
    ExportOnnxRequest,
    FinetuneRequest,
    HarmonizeRequest,
    ImageDescriptor,
    InspectModelRequest,
    JobInfo,
    JobState,
    JobStatusRequest,
    ListModelsRequest,
    Mode,
    ModelInfoReply,
    ModelListReply,
    OkReply,
    PingRequest,
    PongReply,
    RenameModelRequest,
    ResultReply,
    SampleRequest,
    SelectionRequest,
    ShutdownRequest,
    StatusRequest,
    TrainOptions,
    TrainRequest,
)
from editor_bridge.server import BridgeServer, Request
from engine.errors import IncompatibleModelError
from engine.families.consingan import apply, training
from engine.families.consingan.config import ModelConfig, Precision, TrainConfig, training_configs
from engine.families.consingan.store import (
    CHECKPOINT_DIR,
    MODEL_JSON,
    TrainedModel,
    load_model,
    load_training_image,
)
from engine.imageio import MAX_PIXELS, Picture
from engine.serve.imaging import crop_picture, frame_from_picture, picture_from_frame, selection_mask
from engine.serve.jobs import QUICK, TRAIN, Job, JobContext, JobManager, error_code, error_message
from engine.serve.registry import Registry, new_model_id, training_key

log = logging.getLogger(__name__)

MAX_SAMPLE_PIXELS = 64_000_000  # n * width * height of one sample request
_READS_A_MODEL = (FinetuneRequest, HarmonizeRequest, EditRequest, SampleRequest, ExportOnnxRequest)
_APPLY_MODES = {HarmonizeRequest: Mode.HARMONIZATION, EditRequest: Mode.EDITING}


def lane_of(request: Content) -> str:
    return (
        TRAIN
        if isinstance(request, TrainRequest | FinetuneRequest | HarmonizeRequest | EditRequest)
        else QUICK
    )


def models_used(request: Content) -> set[str]:
    """The stored models a request reads; none of them may be deleted while it waits or runs."""
    if isinstance(request, TrainRequest):
        return {request.stored_image} if request.stored_image else set()
    if isinstance(request, _READS_A_MODEL):
        return {request.model_id} if request.model_id else set()
    return set()


class ModelInUse(InvalidRequest):
    code = ErrorCode.BUSY


class ModelCache:
    """Loaded models and their inference backends by model id (least recently used dropped first)."""

    def __init__(self, registry: Registry, device: torch.device, backend: str, size: int = 4) -> None:
        self.registry, self.device, self.backend, self.size = registry, device, backend, size
        self._items: OrderedDict[str, tuple[TrainedModel, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str) -> tuple[TrainedModel, Any]:
        with self._lock:
            if model_id in self._items:
                self._items.move_to_end(model_id)
                return self._items[model_id]
        model = load_model(self.registry.path(model_id), self.device)
        backend = make_backend(model, self.backend)
        with self._lock:
            self._items[model_id] = (model, backend)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return model, backend

    def forget(self, model_id: str) -> None:
        with self._lock:
            self._items.pop(model_id, None)


def make_backend(model: TrainedModel, name: str) -> Any:
    from engine.runtime import make_backend as runtime_backend

    return runtime_backend(model, name, release_memory=True)  # the engine runs beside the artist's editor


class Handlers:
    def __init__(
        self,
        server: BridgeServer,
        jobs: JobManager,
        registry: Registry,
        device: torch.device,
        backend: str,
        precision: Precision | None,
        home: Path,
        stop: threading.Event,
        engine_version: str = "",
    ) -> None:
        self.server, self.jobs, self.registry = server, jobs, registry
        self.device, self.home, self.stop, self.engine_version = device, home, stop, engine_version
        self.models = ModelCache(registry, device, backend)
        self.backend, self.precision = backend, precision
        self.started = time.monotonic()
        self._table: dict[type[Content], Callable[[Request], None]] = {
            PingRequest: self.ping,
            StatusRequest: self.status,
            ListModelsRequest: self.list_models,
            InspectModelRequest: self.inspect_model,
            RenameModelRequest: self.rename_model,
            DeleteModelRequest: self.delete_model,
            JobStatusRequest: self.job_status,
            CancelRequest: self.cancel,
            ShutdownRequest: self.shutdown,
            TrainRequest: self.train,
            FinetuneRequest: self.finetune,
            HarmonizeRequest: self.apply,
            EditRequest: self.apply,
            SampleRequest: self.sample,
            ExportOnnxRequest: self.export_onnx,
        }

    def dispatch(self, request: Request) -> None:
        handler = self._table.get(type(request.content))
        if handler is None:
            kind = request.content.msg_type.value
            self.server.reply_error(request, ErrorCode.INVALID_REQUEST, f"{kind} is a reply, not a request")
            return
        try:
            handler(request)
        except Exception as exc:
            if error_code(exc) is ErrorCode.INTERNAL:
                log.exception("%s failed", request.content.msg_type.value)
            self.server.reply_error(request, error_code(exc), error_message(exc))

    # ---- answered at once ----

    def ping(self, req: Request) -> None:
        self.server.reply(req, PongReply(engine_version=self.engine_version, pid=os.getpid()))

    def status(self, req: Request) -> None:
        status = DaemonStatus(
            pid=os.getpid(),
            engine_version=self.engine_version,
            device=str(self.device),
            home=str(self.home),
            uptime_s=time.monotonic() - self.started,
            jobs=self.jobs.active(),
            n_models=len(self.registry),
        )
        self.server.reply(req, status)

    def list_models(self, req: Request) -> None:
        self.server.reply(
            req, ModelListReply(models=self.registry.list(req.content_as(ListModelsRequest).mode))
        )

    def inspect_model(self, req: Request) -> None:
        self.server.reply(
            req, ModelInfoReply(model=self.registry.info(req.content_as(InspectModelRequest).model_id))
        )

    def rename_model(self, req: Request) -> None:
        c = req.content_as(RenameModelRequest)
        info = self.registry.rename(c.model_id, c.name)
        self.server.reply(req, ModelInfoReply(model=info))

    def delete_model(self, req: Request) -> None:
        # Jobs and quick requests are submitted on this (the loop) thread too: none can start using the
        # model between this check and the delete.
        model_id = req.content_as(DeleteModelRequest).model_id
        self.registry.path(model_id)
        for job in self.jobs.unfinished():
            if model_id == job.model_id or model_id in models_used(job.request):
                raise ModelInUse(
                    f"model {model_id} is in use by job {job.job_id} ({job.request.msg_type.value}, "
                    f"{job.state.value}); cancel that job or wait until it ends, then delete the model"
                )
        kinds = self.jobs.held(model_id)
        if kinds:
            raise ModelInUse(
                f"model {model_id} is in use by a {kinds[0]} request being answered; delete it once that "
                "request has its reply"
            )
        self.registry.delete(model_id)
        self.models.forget(model_id)
        self.server.reply(req, OkReply(detail=f"deleted {model_id}"))

    def job_status(self, req: Request) -> None:
        c = req.content_as(JobStatusRequest)
        job = self.jobs.subscribe(c.job_id, req.identities) if c.subscribe else self.jobs.get(c.job_id)
        record = self.jobs.record(c.job_id)
        if job is None and record is None:
            raise _unknown_job(c.job_id)
        if job is not None and job.state is not JobState.DONE:
            self.server.reply(req, job.info())
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
        self.server.reply(req, info)
        if c.subscribe and record.state is JobState.DONE and record.result is not None:
            result = ResultReply.model_validate(record.result)
            buffers = self.jobs.result_buffers(record.job_id, len(result.images))
            self.server.reply(req, result, buffers)

    def cancel(self, req: Request) -> None:
        job_id = req.content_as(CancelRequest).job_id
        if self.jobs.cancel(job_id):
            self.server.reply(req, OkReply(detail=f"cancelling {job_id}"))
        elif self.jobs.record(job_id) is None:
            raise _unknown_job(job_id)
        else:
            self.server.reply(req, OkReply(detail=f"job {job_id} had already ended"))

    def shutdown(self, req: Request) -> None:
        self.server.reply(req, OkReply(detail="stopping; running training is checkpointed first"))
        self.stop.set()

    # ---- long work ----

    def train(self, req: Request) -> None:
        c = req.content_as(TrainRequest)
        if c.image is not None:
            _check_image(c.image, req.buffers)
        else:
            assert c.stored_image is not None  # the protocol requires one of the two
            self.registry.path(c.stored_image)  # the stored image is a stored model's training image
        self._resolve(c, c.mode)
        self._submit(req, TRAIN, new_model_id())

    def finetune(self, req: Request) -> None:
        c = req.content_as(FinetuneRequest)
        info = self.registry.info(c.model_id)
        if info.mode not in (Mode.HARMONIZATION, Mode.EDITING):
            raise IncompatibleModelError(
                f"model {c.model_id} is a model for {info.mode.value}; only harmonization and editing models "
                "can be fine-tuned"
            )
        _check_image(c.image, req.buffers)
        self._submit(req, TRAIN, new_model_id())

    def apply(self, req: Request) -> None:
        """Harmonize or edit: at once with a stored model, else as a job that trains on the background."""
        c = req.content_as(SelectionRequest)
        mode = _APPLY_MODES[type(c)]
        for desc in (c.image, c.mask, c.background):
            if desc is not None:
                _check_image(desc, req.buffers)
        model_id, reused = c.model_id, False
        if model_id is not None:
            self._check_mode(model_id, mode)
        elif not c.retrain:
            model_id = self.registry.find(self._background_key(c, req.buffers, mode))
            reused = model_id is not None
        if model_id is None or c.finetune_iters:
            self._submit(req, TRAIN, new_model_id())
            return

        def work() -> None:
            self._reply_quick(req, lambda: self._apply_with(model_id, c, req.buffers, reused))

        self.jobs.run_quick(work, holds=(model_id, c.msg_type.value))

    def sample(self, req: Request) -> None:
        c = req.content_as(SampleRequest)
        info = self.registry.info(c.model_id)
        width = c.width or info.width
        height = c.height or info.height
        if c.n * width * height > MAX_SAMPLE_PIXELS:
            raise InvalidRequest(
                f"{c.n} samples of {width}x{height} px are over the {MAX_SAMPLE_PIXELS // 10**6} MP limit of "
                "one request; ask for fewer or smaller samples"
            )

        def run() -> tuple[ResultReply, list]:
            model, backend = self.models.get(c.model_id)
            images = apply.sample(model, c.n, c.height, c.width, c.seed or 0, backend=backend)
            buffers: list = []
            descs = [frames.attach(buffers, np.rint(img * 255).astype(np.uint8), "RGB") for img in images]
            return ResultReply(images=descs, model=self.registry.info(c.model_id)), buffers

        self.jobs.run_quick(lambda: self._reply_quick(req, run), holds=(c.model_id, c.msg_type.value))

    def export_onnx(self, req: Request) -> None:
        self.registry.path(req.content_as(ExportOnnxRequest).model_id)
        self._submit(req, QUICK, None)

    # ---- the work of each job type (on a lane thread) ----

    def run_job(self, job: Job, ctx: JobContext) -> tuple[ResultReply, Sequence[Any]]:
        c = job.request
        if isinstance(c, TrainRequest):
            if c.image is not None:
                rgb = picture_from_frame(frames.from_frame(job.buffers, c.image), c.image).rgb
                key_source = _canonical(job.buffers, c.image)
            else:
                assert c.stored_image is not None
                rgb = load_training_image(self.registry.path(c.stored_image))
                key_source = rgb
            model_id, reused = self._train_or_reuse(job, ctx, c, c.mode, rgb, key_source, c.name)
            return ResultReply(model=self.registry.info(model_id), reused_model=reused), []
        if isinstance(c, FinetuneRequest):
            return self._finetune(job, ctx, c), []
        if isinstance(c, HarmonizeRequest | EditRequest):
            mode = _APPLY_MODES[type(c)]
            if c.model_id is not None:
                model_id, reused = c.model_id, True
            else:
                bg = c.background
                assert bg is not None
                rgb = picture_from_frame(frames.from_frame(job.buffers, bg), bg).rgb
                key_source = _canonical(job.buffers, bg)
                options = c.train or TrainOptions()
                model_id, reused = self._train_or_reuse(
                    job, ctx, options, mode, rgb, key_source, None, c.retrain
                )
            if c.finetune_iters:
                model_id, reused = self._finetune_for(job, ctx, model_id, c), False
            return self._apply_with(model_id, c, job.buffers, reused)
        if isinstance(c, ExportOnnxRequest):
            return self._export(c), []
        raise InvalidRequest(f"{c.msg_type.value} is not a job")

    def _train_or_reuse(
        self,
        job: Job,
        ctx: JobContext,
        options: TrainOptions,
        mode: Mode,
        rgb: np.ndarray,
        key_source: np.ndarray,
        name: str | None,
        retrain: bool = False,
    ) -> tuple[str, bool]:
        preset_name, model_cfg, train_cfg = self._resolve(options, mode)
        key = training_key(key_source, model_cfg, train_cfg)
        if retrain and job.model_id is not None and self.registry.has(job.model_id):
            return job.model_id, False  # retrained before a crash or a stop: not a third time
        if retrain:
            # Another seed than every model stored under this key; the new model is stored under the same
            # key and, being the newest, is what the next request with these settings finds.
            used = self.registry.seeds(key)
            if used:
                seed = max(used) + 1
                log.info("job %s retrains with seed %d (stored: %s)", job.job_id, seed, sorted(used))
                train_cfg = dataclasses.replace(train_cfg, seed=seed)
        else:
            existing = self.registry.find(key)
            if existing is not None:
                log.info("job %s reuses model %s (same image and settings)", job.job_id, existing)
                job.model_id = existing  # from now on the model is in use: `delete_model` refuses it
                return existing, True
        out = self._train_into(
            job,
            ctx,
            "training",
            lambda out: training.train(rgb, model_cfg, train_cfg, out, self.device, ctx.report, ctx.cancel),
        )
        self._prepare_backend(out)
        model_id = job.model_id or new_model_id()
        default_name = f"{mode.value} {time.strftime('%Y-%m-%d %H:%M')}"
        self.registry.add(
            out, model_id=model_id, name=name or default_name, preset=preset_name, training_key=key
        )
        return model_id, False

    def _finetune(self, job: Job, ctx: JobContext, c: FinetuneRequest) -> ResultReply:
        out = self._finetune_into(job, ctx, c.model_id, c.image, c.iters or 500, "model")
        return ResultReply(model=self.registry.info(out))

    def _finetune_for(self, job: Job, ctx: JobContext, model_id: str, c: SelectionRequest) -> str:
        """A harmonize/edit with finetune_iters: fine-tune `model_id` on the request's image first. Until
        then the job's model is the base, so that it cannot be deleted meanwhile."""
        job.model_id = model_id
        assert c.finetune_iters is not None
        return self._finetune_into(job, ctx, model_id, c.image, c.finetune_iters, "finetuned", new_model_id())

    def _finetune_into(
        self,
        job: Job,
        ctx: JobContext,
        base_id: str,
        image: ImageDescriptor,
        iters: int,
        folder: str,
        model_id: str | None = None,
    ) -> str:
        """Fine-tune a stored model on an attached image into a new stored model (parent: the base, no
        training key); returns its id (`model_id`, else the job's)."""
        parent = self.registry.info(base_id)

        def start(out: Path) -> None:
            naive = picture_from_frame(frames.from_frame(job.buffers, image), image).rgb
            base = self.registry.path(base_id)
            training.finetune(base, naive, out, self.device, iters, ctx.report, ctx.cancel)

        out = self._train_into(job, ctx, "fine-tuning", start, folder)
        self._prepare_backend(out)
        info = self.registry.add(
            out,
            model_id=model_id or job.model_id or new_model_id(),
            name=f"{parent.name} (fine-tuned)"[:200],
            preset=parent.preset.value if parent.preset else None,
            training_key=None,
            parent=base_id,
        )
        return info.model_id

    def _train_into(
        self, job: Job, ctx: JobContext, what: str, start: Callable[[Path], object], folder: str = "model"
    ) -> Path:
        """Train into the job's `folder` with `start`, or finish what a crash or a stop left there."""
        out = ctx.work_dir / folder
        if (out / MODEL_JSON).is_file():
            pass  # finished before a crash, not yet registered
        elif (out / CHECKPOINT_DIR / "state.pt").is_file():
            log.info("job %s resumes %s from its checkpoint", job.job_id, what)
            training.resume(out, self.device, ctx.report, ctx.cancel)
        else:
            shutil.rmtree(out, ignore_errors=True)
            start(out)
        return out

    def _export(self, c: ExportOnnxRequest) -> ResultReply:
        from engine.families.consingan.onnx_export import export
        from engine.runtime import ensure_sampler

        path = self.registry.path(c.model_id)
        model = load_model(path, "cpu")
        out = export(model, path / "sampler_fp16.onnx", fp16=True) if c.fp16 else ensure_sampler(model)
        return ResultReply(model=self.registry.info(c.model_id), path=str(out))

    def _prepare_backend(self, model_dir: Path) -> None:
        # Export the sampler now, in the training job, so the first harmonization is quick.
        if self.backend == "onnxruntime":
            from engine.runtime import ensure_sampler

            ensure_sampler(load_model(model_dir, "cpu"))

    def _apply_with(
        self, model_id: str, c: SelectionRequest, buffers: Sequence[Any], reused: bool
    ) -> tuple[ResultReply, list]:
        model, backend = self.models.get(model_id)
        picture = picture_from_frame(frames.from_frame(buffers, c.image), c.image)
        mask = selection_mask(frames.from_frame(buffers, c.mask), c.image.bbox or c.mask.bbox)
        result: Picture = apply.apply_to_selection(
            model, picture, mask, c.seed or 0, backend=backend, color_match=c.color_match
        )
        bbox = c.image.bbox
        if c.crop_to_bbox:
            assert bbox is not None  # the protocol requires a bbox with crop_to_bbox
            result = crop_picture(result, bbox)
            bbox = None
        out: list = []
        desc = frames.attach(out, frame_from_picture(result, c.image), c.image.channel_order, bbox)
        return ResultReply(images=[desc], model=self.registry.info(model_id), reused_model=reused), out

    # ---- helpers ----

    def _reply_quick(self, req: Request, work: Callable[[], tuple[ResultReply, Sequence[Any]]]) -> None:
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

    def _submit(self, req: Request, lane: str, model_id: str | None) -> None:
        job, position = self.jobs.submit(req.content, req.buffers, req.identities, lane, model_id)
        self.server.reply(req, AckReply(job_id=job.job_id, position=max(0, position)))

    def _check_mode(self, model_id: str, mode: Mode) -> None:
        info = self.registry.info(model_id)
        if info.mode is not mode:
            verb = "harmonize" if mode is Mode.HARMONIZATION else "edit"
            raise IncompatibleModelError(
                f"model {model_id} is a model for {info.mode.value}; {verb} needs a model for {mode.value}: "
                "pick another model or train one"
            )

    def _resolve(self, options: TrainOptions, mode: Mode) -> tuple[str, ModelConfig, TrainConfig]:
        return training_configs(
            mode.value,
            self.device,
            options.preset.value if options.preset else None,
            self.precision,
            stages=options.stages,
            iters=options.iters,
            max_size=options.max_size,
            seed=options.seed,
        )

    def _background_key(self, c: SelectionRequest, buffers: Sequence[Any], mode: Mode) -> str:
        assert c.background is not None  # the protocol requires one when no model is named
        _, model_cfg, train_cfg = self._resolve(c.train or TrainOptions(), mode)
        return training_key(_canonical(buffers, c.background), model_cfg, train_cfg)


def _canonical(buffers: Sequence[Any], desc: ImageDescriptor) -> np.ndarray:
    """The pixels a training key is taken over: channel order made canonical, so Krita and GIMP agree."""
    return np.asarray(frames.to_canonical(frames.from_frame(buffers, desc), desc.channel_order)[0])


def _check_image(desc: ImageDescriptor, buffers: Sequence[Any]) -> None:
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


def _unknown_job(job_id: str) -> InvalidRequest:
    exc = InvalidRequest(f"no job {job_id!r} in this engine; `engine status` lists the current jobs")
    exc.code = ErrorCode.UNKNOWN_JOB
    return exc
