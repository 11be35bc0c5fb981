"""CycleGAN (Zhu, Park, Isola and Efros, ICCV 2017) as a family: unpaired translation between two folders of
images (photos and a painter's work, two seasons, ...), trained both ways, applied to pictures of any size.

config (presets; `paper` is the reference's defaults), networks (ResNet generator, PatchGAN critic), data
(multi-scale crops), training (losses, pool, checkpoints), store (model directories) and restyle (tiled
inference at full resolution), onnx_export (a generator as an ONNX graph) and runners (onnxruntime, the
default, or torch) are beside this file. Not built yet: the editors' "Re-style layer" (it needs a model
picker).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import BadInputError
from engine.families.cyclegan.config import FAMILY_FORMAT_VERSION, MAX_CROP, MAX_EPOCHS, NAME, TASK
from engine.family import DataKind, Family, Loaded, Resolved, Task, TrainRun, precision_option, seed_option
from engine.operations import (
    EditorUse,
    OperationInput,
    OperationOutput,
    OperationSpec,
    Param,
    ParamType,
    Returns,
)
from engine.progress import ProgressFn


class Options(BaseModel):
    """CycleGAN's training options; unset ones take the preset's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["paper", "fast", "tiny"] | None = Field(
        None, description="paper (the reference's defaults), fast (for a CPU: about 40 min on 2 cores) or "
        "tiny (tests); default: paper on a GPU, fast on a CPU"
    )  # fmt: skip
    epochs: int | None = Field(
        None, ge=1, le=MAX_EPOCHS, description="epochs at the constant rate, and as many decaying to 0"
    )
    crop: int | None = Field(None, ge=16, le=MAX_CROP, multiple_of=4, description="training crop in px")
    seed: int | None = seed_option()
    precision: Literal["fp32", "bf16"] | None = precision_option()


def _config(options: Any, device: Any) -> tuple[str, Any]:
    from engine.families.cyclegan.config import resolve as resolve_config

    o = options
    return resolve_config(device, o.preset, o.precision, epochs=o.epochs, crop=o.crop, seed=o.seed)


def train(run: TrainRun) -> Path:
    from engine.families.cyclegan import training

    if len(run.data.folders) != 2:
        raise BadInputError("CycleGAN learns from two folders: give --domain-a DIR and --domain-b DIR")
    _, config = _config(run.options, run.device)
    folders = (run.data.folders[0], run.data.folders[1])
    return training.train(config, folders, run.out_dir, run.device, run.progress, run.cancel)


def resume(out_dir: Path, device: Any, progress: ProgressFn | None, cancel: threading.Event | None) -> Path:
    from engine.families.cyclegan import training

    return training.resume(out_dir, device, progress, cancel)


def resolve(task: str, options: BaseModel, device: Any) -> Resolved:
    preset, config = _config(options, device)
    return Resolved(preset, {"family": NAME, "task": task, "config": config.to_dict()}, config.seed)


def load(directory: Path, meta: dict, device: Any) -> Loaded:
    from engine.families.cyclegan.store import load_generators

    config, generators = load_generators(directory, meta, device)
    return Loaded(FAMILY, TASK, directory, {"config": config, "generators": generators, "device": device})


class Runners(dict):
    """Each direction's runner, made on first use: with onnxruntime, that direction's generator is exported
    into the model directory then (unless an export of the same weights is there), so a model used one
    way only is exported once, and a request for the other way does not wait for it."""

    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make
        self.lock = threading.Lock()

    def __missing__(self, direction: str) -> Any:
        with self.lock:  # two requests at once export once
            if direction not in self:
                self[direction] = self.make(direction)
            return dict.__getitem__(self, direction)


def prepare(loaded: Loaded, backend: str) -> None:
    from engine.families.cyclegan.runners import OnnxRunner, TorchRunner

    config, device = loaded.model["config"], loaded.model["device"]
    generators = loaded.model["generators"]

    def make(direction: str) -> Any:
        if direction not in generators:
            raise KeyError(direction)
        if backend == "torch":
            return TorchRunner(generators[direction], device)
        path = _ensure_export(loaded.path, config, generators[direction], direction)
        return OnnxRunner(path, str(device), release_memory=loaded.resident)

    loaded.runner = Runners(make)
    provider = str(device)
    if backend == "onnxruntime":
        from engine.standalone import CPU, CUDA

        provider = CUDA if str(device).startswith("cuda") else CPU
    loaded.runner_info = {"backend": backend, "provider": provider}


def _ensure_export(directory: Path, config: Any, generator: Any, direction: str) -> Path:
    from engine.families.cyclegan import onnx_export
    from engine.runtime import ensure_export
    from engine.sampler_file import RESTYLER_FORMAT

    digest = onnx_export.source_digest(generator, direction, tiles=True)
    return ensure_export(
        digest,
        directory / onnx_export.file_name(direction),
        lambda path: onnx_export.export(config, generator, direction, path, tiles=True),
        RESTYLER_FORMAT,
    )


def describe(meta: dict) -> dict[str, Any]:
    return {"task": meta["model"]["task"]}


# ---- operations ----


def _restyle(loaded: Loaded, given: OperationInput) -> OperationOutput:
    import numpy as np

    from engine.families.cyclegan.restyle import restyle
    from engine.imageio import Picture

    assert given.picture is not None
    p = given.params
    step = given.on_step
    if step is not None:
        step(f"re-styling {p['direction']}")
    picture = given.picture
    rgb = restyle(loaded.runner[p["direction"]], picture.rgb, tile=p["tile"])
    if given.mask is not None and not (given.mask > 0).all():
        inside = (given.mask > 0)[..., None]
        rgb = np.where(inside, rgb, picture.rgb)  # a selection: only it changes
    return OperationOutput([Picture(rgb.astype(np.float32), picture.alpha, picture.depth)])


def _export(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.cyclegan.onnx_export import export

    assert given.out is not None
    direction = given.params["direction"]
    if given.on_step is not None:
        given.on_step(f"exporting the {direction} generator to ONNX and checking the graph")
    path = export(loaded.model["config"], loaded.model["generators"][direction], direction, given.out)
    return OperationOutput([], {"onnx": str(path), "direction": direction, "bytes": path.stat().st_size})


DIRECTION = Param(
    "direction", ParamType.CHOICE, "a2b (domain A to B, the default) or b2a", default="a2b",
    choices=("a2b", "b2a"),
)  # fmt: skip
OPERATIONS = (
    OperationSpec(
        "restyle", "Re-style layer", NAME, (TASK,),
        "re-style an image with a CycleGAN model (domain A to B, or back), at full resolution",
        takes_image=True, takes_mask=False, returns=Returns.LAYER, run=_restyle, whole_image=True,
        editor=EditorUse(
            "Re-styled", "restyle", pick_model=True,
            tooltip="Re-style the active layer (or the selected part of it) with a stored CycleGAN model",
        ),
        params=(
            DIRECTION,
            Param("tile", ParamType.INT, "tile side in px for large images (default: 512; the memory "
                  "needed grows with it, not with the image)", default=512, minimum=64, maximum=4096),
        ),
    ),
    OperationSpec(
        "export", "Export to ONNX", NAME, (TASK,),
        "export one direction's generator as an ONNX graph (any picture size; inputs: image in [-1, 1])",
        takes_image=False, takes_mask=False, returns=Returns.FILE, run=_export, needs_runner=False,
        out_suffix=".onnx", params=(DIRECTION,),
    ),
)  # fmt: skip

FAMILY = Family(
    name=NAME,
    label="CycleGAN",
    format_version=FAMILY_FORMAT_VERSION,
    tasks=(Task(TASK, "Re-style: unpaired translation between two folders of images", DataKind.FOLDERS),),
    options=Options,
    presets=("paper", "fast", "tiny"),
    train=train,
    resume=resume,
    load=load,
    prepare=prepare,
    operations=OPERATIONS,
    describe=describe,
    resolve=resolve,
    backends=("onnxruntime", "torch"),
)
