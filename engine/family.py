"""The seam every kind of model plugs into: what a model family declares and provides.

A family (ConSinGAN, and later SinGAN, CycleGAN, a SAGAN-style set generator) is one package under
`engine/families/` that builds one `Family`: its tasks (how a model is trained), its training options (a
pydantic model, so the CLI and the daemon validate them the same way), train/resume, load (plain data, no
training code) and its operations (`engine.operations`: what a user does with a model). Everything generic
(model directories, the registry of families, the CLI, the daemon, batch) reads these declarations and
never names a family.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from engine.errors import BadInputError

if TYPE_CHECKING:
    from engine.operations import OperationSpec
    from engine.progress import ProgressFn


MAX_SEED = 2**32 - 1


# Training options several families have. One definition each, because the CLI makes one flag of an
# option that families share and the daemon checks it with each family's own model: they must agree.
def seed_option() -> Any:
    return Field(None, ge=0, le=MAX_SEED, description="training seed (default 0)")


def precision_option() -> Any:
    return Field(None, description="default: bf16 where the hardware runs it natively")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A family's config dataclass as JSON-ready data (model.json, checkpoints): enum fields by value."""
    return {k: (v.value if isinstance(v, enum.Enum) else v) for k, v in dataclasses.asdict(config).items()}


def config_from_dict(cls: type, data: dict, enums: dict[str, type[enum.Enum]]) -> dict[str, Any]:
    """The constructor arguments of config dataclass `cls` in `data`: the fields this version knows (a
    newer engine's extra ones are dropped), enum fields from their values."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return {k: (enums[k](v) if k in enums else v) for k, v in data.items() if k in fields}


class DataKind(str, enum.Enum):
    """What a task trains on."""

    IMAGE = "image"  # one image (single-image GANs)
    FOLDERS = "folders"  # two folders of unpaired images, domain A and domain B
    IMAGES = "images"  # one folder of images (a small set)


@dataclass(frozen=True)
class Task:
    name: str  # `--mode NAME`
    label: str
    data: DataKind = DataKind.IMAGE


@dataclass(frozen=True)
class TrainData:
    """What a training run learns from, as the task's DataKind says."""

    image: np.ndarray | None = None  # H x W x 3 float32 in [0, 1]
    folders: tuple[Path, ...] = ()


@dataclass(frozen=True)
class TrainRun:
    """Everything a family's `train` gets; it writes a model directory at `out_dir` and returns it."""

    task: str
    data: TrainData
    options: BaseModel  # an instance of the family's `options` model, validated
    out_dir: Path
    device: Any  # torch.device
    progress: ProgressFn | None = None
    cancel: threading.Event | None = None


@dataclass(frozen=True)
class Resolved:
    """A task's training options with every default filled in, as far as they decide the weights."""

    preset: str | None  # the preset they came from, for listings
    settings: dict[str, Any]  # all that shapes the weights (JSON): the training key
    seed: int | None = None  # the training seed, for a family that has one (a retrain takes the next one)


@dataclass
class Loaded:
    """A stored model ready to apply: the family's own loaded model and its inference runner."""

    family: Family
    task: str
    path: Path
    model: Any
    runner: Any = None  # what the family's operations run (an onnxruntime session, a torch module, ...)
    runner_info: dict[str, str] = field(default_factory=dict)  # for --json results and logs
    # Kept loaded in the daemon, beside the artist's editor: the runner gives back the memory each run
    # grew by (onnxruntime's arena), rather than holding it until the next.
    resident: bool = False


@dataclass(frozen=True)
class Family:
    name: str  # `--family NAME`, and `family` in model.json
    label: str
    format_version: int  # of the family's part of model.json; newer ones are refused on load
    tasks: tuple[Task, ...]
    options: type[BaseModel]  # training options (`preset` among them, where the family has presets)
    presets: tuple[str, ...]
    train: Callable[[TrainRun], Path]
    resume: Callable[[Path, Any, ProgressFn | None, threading.Event | None], Path]
    # (model directory, its model.json, device) -> Loaded, without a runner yet
    load: Callable[[Path, dict, Any], Loaded]
    # Give a loaded model the inference runner of a backend ("onnxruntime", "torch"): sets loaded.runner
    prepare: Callable[[Loaded, str], None]
    operations: tuple[OperationSpec, ...] = ()
    # The model's task and size for listings, from its model.json alone (no weights loaded): "task", and
    # where the family has them "width", "height" (px) and "stages" (one "WxH" each).
    describe: Callable[[dict], dict[str, Any]] = lambda meta: {}
    # (task, options, device) -> Resolved; None: the options as given, with their seed and preset fields.
    resolve: Callable[[str, BaseModel, Any], Resolved] | None = None
    # Fine-tune a stored model on one image into a new model directory:
    # (base model dir, image, out dir, device, iterations, progress, cancel) -> out dir. None: not offered.
    finetune: Callable[..., Path] | None = None
    finetune_tasks: tuple[str, ...] = ()  # the tasks whose models `finetune` takes
    backends: tuple[str, ...] = ("onnxruntime", "torch")  # what `prepare` takes; the first is the default

    def backend(self, asked: str | None) -> str:
        """The backend to run this family's models with: the one asked for (refused in one line when the
        family has no such runner), or the family's default."""
        if asked is None:
            return self.backends[0]
        if asked not in self.backends:
            raise BadInputError(
                f"{self.label} models run with --backend {' or '.join(self.backends)}, not {asked}"
            )
        return asked

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def task_named(self, name: str | None, word: str = "task") -> Task:
        """The task `name` (None: the first), refused in one line naming the family's tasks."""
        try:
            return self.task(name or self.tasks[0].name)
        except KeyError:
            names = ", ".join(t.name for t in self.tasks)
            raise BadInputError(f"{self.label} has no {word} {name}: use one of {names}") from None

    def checked_options(self, given: dict[str, Any], flag: Callable[[str], str] = str) -> BaseModel:
        """The family's options model from plain values, refused in one line naming the option as
        `flag(name)` says (the CLI: --name-with-dashes)."""
        import pydantic

        foreign = sorted(set(given) - set(self.options.model_fields))
        if foreign:
            raise BadInputError(f"{flag(foreign[0])} is not a training option of {self.label}")
        try:
            return self.options.model_validate(given)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            name = flag(str(error["loc"][0])) if error["loc"] else "an option"
            raise BadInputError(f"{name}: {error['msg']}") from None

    def resolved(self, task: str, options: BaseModel, device: Any) -> Resolved:
        if self.resolve is not None:
            return self.resolve(task, options, device)
        values = options.model_dump(mode="json")
        settings = {"family": self.name, "task": task, "options": values}
        return Resolved(values.get("preset"), settings, values.get("seed"))


def image_folder(folder: Path, name: str) -> Path:
    """A training folder, refused in one line (naming it as `name`) when it is not a folder or holds no
    image."""
    from engine.imageio import image_files

    if not folder.is_dir():
        raise BadInputError(f"{name} {folder} is not a folder of images")
    try:
        found = image_files(folder)
    except OSError as exc:
        raise BadInputError(f"cannot read {name} {folder} ({exc.strerror}): check its permissions") from None
    if not found:
        raise BadInputError(f"{name} {folder} has no images (PNG, JPEG, TIFF, WebP, ...)")
    return folder
