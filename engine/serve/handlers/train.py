"""Train requests: a new model of any family on an attached image, a stored model's image or folders on
the engine's machine, or a stored model fine-tuned on an attached image. Also the training that an apply
request runs when no model is stored for its background yet (`train_or_reuse`)."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from editor_bridge.protocol import ImageDescriptor, ResultReply, TrainRequest
from editor_bridge.server import Request
from engine import families
from engine.errors import BadInputError, IncompatibleModelError
from engine.family import DataKind, Family, Task, TrainData, TrainRun, image_folder
from engine.imageio import visible_rgb
from engine.model_dir import MODEL_JSON, TRAINING_IMAGE, load_training_image
from engine.serve.handlers.context import Context, canonical, check_image
from engine.serve.imaging import picture_in
from engine.serve.jobs import TRAIN, Job, JobContext
from engine.serve.registry import new_model_id, training_key

log = logging.getLogger(__name__)

DEFAULT_FINETUNE_ITERS = 500  # the paper's advice for the best fit
_DATA_WORDS = {
    DataKind.IMAGE: "one image (image or stored_image)",
    DataKind.IMAGES: "one folder of images (folders: [DIR])",
    DataKind.FOLDERS: "two folders of images (folders: [DOMAIN_A, DOMAIN_B])",
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """A training request's family, task and options, checked."""

    family: Family
    task: Task
    options: BaseModel


def plan(ctx: Context, family_name: str | None, task: str | None, given: dict[str, Any]) -> Plan:
    family = families.get(family_name or families.DEFAULT)
    checked_task = family.task_named(task)
    given = {k: v for k, v in given.items() if v is not None}
    if ctx.precision is not None and "precision" in family.options.model_fields:
        given.setdefault("precision", ctx.precision.value)  # `engine serve --precision`
    return Plan(family, checked_task, family.checked_options(given))


def accept(ctx: Context, req: Request) -> None:
    c = req.content_as(TrainRequest)
    if c.image is not None:
        check_image(c.image, req.buffers)
    if c.base_model is not None:
        _finetune_plan(ctx, c)
    else:
        p = plan(ctx, c.family, c.task, c.options)
        wanted = {DataKind.IMAGE: 0, DataKind.IMAGES: 1, DataKind.FOLDERS: 2}[p.task.data]
        if len(c.folders) != wanted:
            raise BadInputError(f"{p.family.label} {p.task.name} learns from {_DATA_WORDS[p.task.data]}")
        for i, folder in enumerate(c.folders):
            image_folder(Path(folder), f"folder {i + 1},")
        if c.stored_image is not None and not (ctx.registry.path(c.stored_image) / TRAINING_IMAGE).is_file():
            raise IncompatibleModelError(
                f"model {c.stored_image} was not trained on one image: send the image"
            )
    ctx.submit(req, TRAIN, new_model_id())


def _finetune_plan(ctx: Context, c: TrainRequest) -> tuple[Family, int]:
    assert c.base_model is not None
    info = ctx.registry.info(c.base_model)
    family = families.get(info.family)
    if family.finetune is None or info.task not in family.finetune_tasks:
        can = " and ".join(family.finetune_tasks)
        raise IncompatibleModelError(
            f"model {c.base_model} is a {family.label} model for {info.task}; "
            + (
                f"only {can} models can be fine-tuned"
                if can
                else f"{family.label} models cannot be fine-tuned"
            )
        )
    if set(c.options) - {"iters"}:
        raise BadInputError("fine-tuning takes one option, iters")
    iters = c.options.get("iters", DEFAULT_FINETUNE_ITERS)
    if not isinstance(iters, int) or isinstance(iters, bool) or not 1 <= iters <= 100_000:
        raise BadInputError(f"iters must be a whole number from 1 to 100000 (got {iters!r})")
    return family, iters


def run(ctx: Context, job: Job, jc: JobContext) -> ResultReply:
    c = job.request
    assert isinstance(c, TrainRequest)
    if c.base_model is not None:
        assert c.image is not None
        _, iters = _finetune_plan(ctx, c)
        model_id = finetune_into(ctx, job, jc, c.base_model, c.image, iters, "model")
        return ResultReply(model=ctx.registry.info(model_id))
    p = plan(ctx, c.family, c.task, c.options)
    if c.image is not None:
        rgb = visible_rgb(picture_in(job.buffers, c.image))
        data, key_source = TrainData(image=rgb), canonical(job.buffers, c.image)
    elif c.stored_image is not None:
        rgb = load_training_image(ctx.registry.path(c.stored_image))
        data, key_source = TrainData(image=rgb), rgb
    else:
        data, key_source = TrainData(folders=tuple(Path(f) for f in c.folders)), None
    model_id, reused = train_or_reuse(ctx, job, jc, p, data, key_source, c.name)
    return ResultReply(model=ctx.registry.info(model_id), reused_model=reused)


def train_or_reuse(
    ctx: Context,
    job: Job,
    jc: JobContext,
    p: Plan,
    data: TrainData,
    key_source: np.ndarray | None,
    name: str | None,
    retrain: bool = False,
) -> tuple[str, bool]:
    """The id of the model trained on `data` (trained now, or found stored: same pixels and settings),
    and whether it was found. `key_source`: the pixels the key is taken over (None: folders, never reused,
    since their files can change)."""
    resolved = p.family.resolved(p.task.name, p.options, ctx.device)
    options = p.options
    key = None if key_source is None else training_key(key_source, resolved.settings)
    seed = resolved.seed
    if retrain and job.model_id is not None and ctx.registry.has(job.model_id):
        return job.model_id, False  # retrained before a crash or a stop: not a third time
    if retrain and key is not None:
        # Another seed than every model stored under this key; the new model is stored under the same
        # key and, being the newest, is what the next request with these settings finds.
        used = ctx.registry.seeds(key)
        if used and "seed" in type(options).model_fields:
            seed = max(used) + 1
            log.info("job %s retrains with seed %d (stored: %s)", job.job_id, seed, sorted(used))
            options = options.model_copy(update={"seed": seed})
    elif key is not None:
        existing = ctx.registry.find(key)
        if existing is not None:
            log.info("job %s reuses model %s (same image and settings)", job.job_id, existing)
            job.model_id = existing  # from now on the model is in use: `delete_model` refuses it
            return existing, True

    def start(out: Path) -> object:
        run = TrainRun(p.task.name, data, options, out, ctx.device, jc.report, jc.cancel)
        return p.family.train(run)

    out = train_into(job, jc, ctx, "training", start)
    ctx.prepare_backend(out)
    model_id = job.model_id or new_model_id()
    default_name = f"{p.task.name} {time.strftime('%Y-%m-%d %H:%M')}"
    ctx.registry.add(
        out, model_id=model_id, name=name or default_name, preset=resolved.preset, training_key=key, seed=seed
    )
    return model_id, False


def finetune_into(
    ctx: Context,
    job: Job,
    jc: JobContext,
    base_id: str,
    image: ImageDescriptor,
    iters: int,
    folder: str,
    model_id: str | None = None,
) -> str:
    """Fine-tune a stored model on an attached image into a new stored model (parent: the base, no
    training key); returns its id (`model_id`, else the job's)."""
    parent = ctx.registry.info(base_id)
    family = families.get(parent.family)
    assert family.finetune is not None

    def start(out: Path) -> object:
        naive = picture_in(job.buffers, image).rgb
        base = ctx.registry.path(base_id)
        assert family.finetune is not None
        return family.finetune(base, naive, out, ctx.device, iters, jc.report, jc.cancel)

    out = train_into(job, jc, ctx, "fine-tuning", start, folder)
    ctx.prepare_backend(out)
    info = ctx.registry.add(
        out,
        model_id=model_id or job.model_id or new_model_id(),
        name=f"{parent.name} (fine-tuned)"[:200],
        preset=parent.preset,
        training_key=None,
        parent=base_id,
    )
    return info.model_id


def train_into(
    job: Job, jc: JobContext, ctx: Context, what: str, start: Callable[[Path], object], folder: str = "model"
) -> Path:
    """Train into the job's `folder` with `start`, or finish what a crash or a stop left there."""
    out = jc.work_dir / folder
    if (out / MODEL_JSON).is_file():
        pass  # finished before a crash, not yet registered
    elif families.resumable(out):
        log.info("job %s resumes %s from its checkpoint", job.job_id, what)
        families.resume(out, ctx.device, jc.report, jc.cancel)
    else:
        shutil.rmtree(out, ignore_errors=True)
        start(out)
    return out
