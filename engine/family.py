"""The seam every kind of model plugs into: what a model family declares and provides.

A family (ConSinGAN, and later SinGAN, CycleGAN, a SAGAN-style set generator) is one package under
`engine/families/` that builds one `Family`: its tasks (how a model is trained), its training options (a
pydantic model, so the CLI and the daemon validate them the same way), train/resume, load (plain data, no
training code) and its operations (`engine.operations`: what a user does with a model). Everything generic
(model directories, the registry of families, the CLI, the daemon, batch) reads these declarations and
never names a family.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

if TYPE_CHECKING:
    from engine.operations import OperationSpec
    from engine.progress import ProgressFn


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


@dataclass
class Loaded:
    """A stored model ready to apply: the family's own loaded model and its inference runner."""

    family: Family
    task: str
    path: Path
    model: Any
    runner: Any = None  # what the family's operations run (an onnxruntime session, a torch module, ...)
    runner_info: dict[str, str] = field(default_factory=dict)  # for --json results and logs


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
    # The model's task and size for listings, from its model.json alone (no weights loaded).
    describe: Callable[[dict], dict[str, Any]] = lambda meta: {}

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)
