"""Apply requests: any operation of any family (`engine capabilities`), dispatched through the operation
table. With a stored model (named, or found for the background), or with parameters that need no model
(upscale at strength 0), it is answered on the quick lane with a `result`; when a model must be trained (or
fine-tuned) first, or the operation writes a file, it becomes a job."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from editor_bridge import frames
from editor_bridge.protocol import MAX_BUFFERS, ApplyRequest, JobState, ResultReply
from editor_bridge.server import Request
from engine import families, operations
from engine.errors import BadInputError, EngineError, IncompatibleModelError
from engine.family import DataKind, Family, TrainData
from engine.imageio import Picture, to_array, visible_rgb
from engine.operations import OperationInput, OperationOutput, OperationSpec, ParamType, Returns
from engine.serve.handlers import train
from engine.serve.handlers.context import Context, canonical, check_image, writes_file
from engine.serve.imaging import crop_picture, frame_from_picture, picture_in, selection_mask
from engine.serve.jobs import QUICK, TRAIN, Job, JobContext
from engine.serve.registry import new_model_id, training_key

MAX_OUTPUT_PIXELS = 64_000_000  # of the new images one request makes (n samples of width x height)
PREVIEWED = ("harmonize",)  # operations with a training-free preview (ApplyRequest.preview)

log = logging.getLogger(__name__)


def _specs(name: str) -> list[OperationSpec]:
    specs = operations.table().get(name)
    if not specs:
        raise BadInputError(
            f"this engine has no operation {name!r}: use one of {', '.join(sorted(operations.table()))}"
        )
    return specs


def _spec(family: str, task: str, name: str, what: str) -> OperationSpec:
    """The operation `name` as `family` does it for a model of `task`, refused (one line) otherwise."""
    for op in _specs(name):
        if op.family == family:
            if task not in op.tasks:
                raise IncompatibleModelError(
                    f"{what} is a model for {task}; {name} needs a model for {' or '.join(op.tasks)}: pick "
                    "another model or train one"
                )
            return op
    raise IncompatibleModelError(f"{what} is a {families.get(family).label} model, which cannot {name}")


def _training_plan(ctx: Context, c: ApplyRequest) -> tuple[train.Plan, OperationSpec]:
    """The model to train on the background for this operation: its family (the request's, or the only one
    with the operation) and the operation's first task."""
    specs = _specs(c.operation)
    if c.family is None and len(specs) > 1:
        names = ", ".join(op.family for op in specs)
        raise BadInputError(f"{c.operation} is an operation of several families ({names}): give family")
    op = specs[0] if c.family is None else next((o for o in specs if o.family == c.family), None)
    if op is None:
        raise BadInputError(f"the {c.family} family has no operation {c.operation}")
    p = train.plan(ctx, op.family, op.tasks[0], c.train)
    if p.task.data is not DataKind.IMAGE:
        raise BadInputError(
            f"{p.family.label} {p.task.name} learns from folders, not from a background: train it first "
            "(`engine train`), then apply it with its model id"
        )
    return p, op


def _check_finetune(family: Family, task: str, c: ApplyRequest) -> None:
    if c.finetune_iters and (family.finetune is None or task not in family.finetune_tasks):
        raise IncompatibleModelError(
            f"a {family.label} model for {task} cannot be fine-tuned: give no finetune_iters"
        )


def accept(ctx: Context, req: Request) -> None:
    c = req.content_as(ApplyRequest)
    _specs(c.operation)  # an unknown operation is the first thing to hear about
    for desc in (c.image, c.mask, c.background):
        if desc is not None:
            check_image(desc, req.buffers)
    model_id, reused, plan = c.model_id, False, None
    if model_id is not None:
        info = ctx.registry.info(model_id)
        op = _spec(info.family, info.task, c.operation, f"model {model_id}")
        size = (info.width, info.height)
        family, task = families.get(info.family), info.task
    else:
        plan, op = _training_plan(ctx, c)
        size = (None, None)
        family, task = plan.family, plan.task.name
    params = op.check_params(c.params)
    model_free = op.model_free(params)
    if plan is not None and not c.retrain and not model_free:
        assert c.background is not None  # the protocol requires one when no model is named
        resolved = plan.family.resolved(plan.task.name, plan.options, ctx.device)
        model_id = ctx.registry.find(training_key(canonical(req.buffers, c.background), resolved.settings))
        reused = model_id is not None
    _check_inputs(op, c, params, size)
    _check_finetune(family, task, c)
    if c.model_id is None and model_free and not c.finetune_iters:
        # nothing to learn for these parameters (upscale at strength 0): answered at once, no model
        # (nor a retrained one: no model would change the result)
        ctx.jobs.run_quick(lambda: ctx.reply_quick(req, lambda: apply_without_model(op, c, req.buffers)))
    elif model_id is None or c.finetune_iters:
        job = ctx.submit(req, TRAIN, new_model_id())
        if c.preview and op.name in PREVIEWED:
            ctx.jobs.run_quick(lambda: send_preview(ctx, job))
    elif writes_file(c) or op.returns is Returns.FRAMES:  # a file, or a clip (seconds): a job, not a reply
        ctx.submit(req, QUICK, None)
    else:
        found = model_id

        def work() -> tuple[ResultReply, list]:
            return apply_with(ctx, found, c, req.buffers, reused)

        ctx.jobs.run_quick(lambda: ctx.reply_quick(req, work), holds=(found, c.operation))


def _check_inputs(
    op: OperationSpec, c: ApplyRequest, params: dict[str, Any], size: tuple[int | None, int | None]
) -> None:
    if op.takes_image and c.image is None:
        raise BadInputError(f"{op.name} works on an image: send image")
    if op.takes_mask and c.mask is None:
        raise BadInputError(f"{op.name} works on a selection: send mask")
    count = params.get("frames" if op.returns is Returns.FRAMES else "n")
    if count is not None and count > MAX_BUFFERS:
        raise BadInputError(
            f"{op.name}: {count} images is more than one reply carries ({MAX_BUFFERS}); ask for at most "
            f"{MAX_BUFFERS} (`engine {op.name}` on the command line makes more)"
        )
    if op.output_pixels is not None:  # a model not trained yet has no size: the parameters' own then
        if op.takes_image and c.image is not None:  # (upscale: the image sent, not the model's crop)
            size = (c.image.width, c.image.height)
        pixels = op.output_pixels(params, size)
        if pixels > MAX_OUTPUT_PIXELS:
            raise BadInputError(
                f"{op.name}: {pixels / 1e6:.0f} MP of new images is over the {MAX_OUTPUT_PIXELS // 10**6} MP "
                "limit of one request; ask for fewer or smaller images"
            )


def run(ctx: Context, job: Job, jc: JobContext) -> tuple[ResultReply, Sequence[Any]]:
    c = job.request
    assert isinstance(c, ApplyRequest)
    if c.model_id is not None:
        model_id, reused = c.model_id, True
    else:
        p, _ = _training_plan(ctx, c)
        bg = c.background
        assert bg is not None
        rgb = visible_rgb(picture_in(job.buffers, bg))  # (a transparent part's stored colours filled)
        data, key_source = TrainData(image=rgb), canonical(job.buffers, bg)
        model_id, reused = train.train_or_reuse(ctx, job, jc, p, data, key_source, None, c.retrain)
    if c.finetune_iters:
        assert c.image is not None  # the protocol requires one with finetune_iters
        job.model_id = model_id  # until the fine-tuned model exists, the base must not be deleted
        model_id = train.finetune_into(
            ctx, job, jc, model_id, c.image, c.finetune_iters, "finetuned", new_model_id()
        )
        reused = False
    return apply_with(ctx, model_id, c, job.buffers, reused)


def apply_with(
    ctx: Context, model_id: str, c: ApplyRequest, buffers: Sequence[Any], reused: bool
) -> tuple[ResultReply, list]:
    """Run the operation with a stored model; its pictures as frames (a LAYER result in the input's own
    channel order and depth), or the file it wrote."""
    info = ctx.registry.info(model_id)
    op = _spec(info.family, info.task, c.operation, f"model {model_id}")
    if op.needs_runner:
        loaded = ctx.models.get(model_id)
    else:
        loaded = families.load(ctx.registry.path(model_id), "cpu", backend=None)
    given = _given(op, c, buffers)
    if op.returns is Returns.FILE:
        given.out = ctx.registry.path(model_id) / _file_name(op, given.params)
    output = op.run(loaded, given)
    reply = ResultReply(model=info, reused_model=reused)
    if op.returns is Returns.FILE:
        return reply.model_copy(update={"path": str(given.out)}), []
    return _reply_with(reply, op, output, c)


def apply_without_model(
    op: OperationSpec, c: ApplyRequest, buffers: Sequence[Any]
) -> tuple[ResultReply, list]:
    """Run an operation whose parameters need no model (OperationSpec.model_free): no model in the reply."""
    assert op.run_without_model is not None
    return _reply_with(ResultReply(), op, op.run_without_model(_given(op, c, buffers)), c)


def _given(op: OperationSpec, c: ApplyRequest, buffers: Sequence[Any]) -> OperationInput:
    given = OperationInput(params=op.check_params(c.params))
    if c.image is not None:
        given.picture = picture_in(buffers, c.image)
    if c.mask is not None:
        assert c.image is not None
        given.mask = selection_mask(frames.from_frame(buffers, c.mask), c.image.bbox or c.mask.bbox)
    return given


def _reply_with(
    reply: ResultReply, op: OperationSpec, output: OperationOutput, c: ApplyRequest
) -> tuple[ResultReply, list]:
    """`reply` with the output's pictures as frames: a LAYER result in the input's own channel order and
    depth, others as RGB(A); and the seeds that draw them again, where the operation names them."""
    reply = reply.model_copy(update={"seeds": [int(s) for s in output.info.get("seeds", [])]})
    if op.returns is Returns.LAYER:
        return _layer_reply(reply, output.pictures[0], c)
    out: list = []
    descs = []
    for picture in output.pictures:
        order = "RGB" if picture.alpha is None else "RGBA"
        descs.append(frames.attach(out, to_array(picture, order), order))
    return reply.model_copy(update={"images": descs}), out


def _layer_reply(reply: ResultReply, result: Picture, c: ApplyRequest) -> tuple[ResultReply, list]:
    """The reply with `result` as its layer: in the input's channel order and depth, cropped to the
    selection's bounding box when the request asks."""
    assert c.image is not None
    out: list = []
    bbox = c.image.bbox
    if c.crop_to_bbox:
        assert bbox is not None  # the protocol requires a bbox with crop_to_bbox
        result, bbox = crop_picture(result, bbox), None
    desc = frames.attach(out, frame_from_picture(result, c.image), c.image.channel_order, bbox)
    return reply.model_copy(update={"images": [desc]}), out


def send_preview(ctx: Context, job: Job) -> None:
    """Harmonize the job's selection without a model (engine.preview) and send it to the job's subscribers
    as a preview result, unless the job has ended meanwhile. A preview that fails is logged and not sent:
    the job's own result still comes."""
    from engine.preview import harmonize_preview

    c = job.request
    assert isinstance(c, ApplyRequest) and c.image is not None and c.mask is not None
    if job.state not in (JobState.QUEUED, JobState.RUNNING):
        return
    try:
        buffers = job.buffers
        picture = picture_in(buffers, c.image)
        mask = selection_mask(frames.from_frame(buffers, c.mask), c.image.bbox or c.mask.bbox)
        background = None
        if c.background is not None and c.background != c.image:  # the painting without the paste
            background = picture_in(buffers, c.background)
            if background.shape != picture.shape:
                background = None
        result = harmonize_preview(picture, mask, background)
        reply, out = _layer_reply(ResultReply(job_id=job.job_id, preview=True), result, c)
    except EngineError as exc:  # a selection the preview cannot work on (the whole picture, say)
        log.info("job %s: no preview: %s", job.job_id, exc)
        return
    except Exception:  # noqa: BLE001 - the training goes on and its result is what the request is for
        log.exception("job %s: no preview", job.job_id)
        return
    if job.state in (JobState.QUEUED, JobState.RUNNING):
        ctx.jobs.broadcast(job, reply, out)


def _file_name(op: OperationSpec, params: dict[str, Any]) -> Path:
    """`export.onnx`, `export-fp16.onnx`, `export-b2a.onnx`: the operation, its switches that are on and
    its choices that are not the default."""
    choices = {p.name: p.default for p in op.params if p.type is ParamType.CHOICE}
    parts = [name for name, value in sorted(params.items()) if value is True]
    parts += [str(params[name]) for name, default in sorted(choices.items()) if params.get(name) != default]
    return Path(op.name + "".join(f"-{part}" for part in parts) + op.out_suffix)
