"""A throw-away model family for the tests of the family seam: it "trains" by storing the training image's
mean colour and "applies" by filling the selection with it. Registered with ENGINE_FAMILIES=mean_colour
(this folder on PYTHONPATH), with no change to any other file: the CLI, the daemon, `engine capabilities`,
`engine batch` and the plugins' menus then offer it (tests/test_families.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine import families
from engine.errors import CancelledError
from engine.family import DataKind, Family, Loaded, Task
from engine.files import atomic_write_bytes, write_files
from engine.imageio import Picture, image_files, read_image
from engine.model_dir import CHECKPOINT_DIR, FORMAT, FORMAT_VERSION, MODEL_JSON
from engine.operations import EditorUse, OperationOutput, OperationSpec, Param, ParamType, Returns


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    brightness: float | None = Field(None, ge=0, le=2, description="scale the stored colour by this")


def train(run):
    """Takes the mean, checkpoints it (as a long training would), and stops there when cancelled."""
    if run.data.image is not None:
        pixels = run.data.image.reshape(-1, 3)
    else:  # a set, or the second of two folders (domain B)
        pixels = np.concatenate([read_image(p).rgb.reshape(-1, 3) for p in image_files(run.data.folders[-1])])
    mean = pixels.mean(axis=0) * (run.options.brightness or 1.0)
    state = {"task": run.task, "mean": [float(v) for v in mean]}
    atomic_write_bytes(run.out_dir / CHECKPOINT_DIR / "state.json", json.dumps(state).encode())
    families.mark_checkpoint(run.out_dir, "meancolour")
    if run.cancel is not None and run.cancel.is_set():
        raise CancelledError(f"stopped: continue with `engine train --resume {run.out_dir}`")
    return resume(run.out_dir, run.device, run.progress, run.cancel)


def resume(out_dir, device, progress, cancel):
    state = json.loads((out_dir / CHECKPOINT_DIR / "state.json").read_text())
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": "meancolour",
        "family_format_version": 1,
        "model": state,
        "info": {},
    }
    write_files(out_dir, {MODEL_JSON: json.dumps(meta).encode()})
    shutil.rmtree(out_dir / CHECKPOINT_DIR)
    return out_dir


def load(directory, meta, device):
    return Loaded(FAMILY, meta["model"]["task"], directory, np.array(meta["model"]["mean"], np.float32))


def prepare(loaded, backend):
    loaded.runner_info = {"backend": "numpy"}


def fill(loaded, given):
    rgb = given.picture.rgb.copy()
    inside = given.mask > 0
    rgb[inside] = loaded.model * given.params["strength"] + rgb[inside] * (1 - given.params["strength"])
    return OperationOutput([Picture(rgb, given.picture.alpha, given.picture.depth)])


FAMILY = Family(
    name="meancolour",
    label="Mean colour",
    format_version=1,
    tasks=(
        Task("fill", "Fill with the training image's mean colour"),
        Task("fill-set", "Fill with the mean colour of a folder of images", DataKind.IMAGES),
        Task("fill-pair", "Fill with the mean colour of domain B", DataKind.FOLDERS),
    ),
    options=Options,
    presets=(),
    train=train,
    resume=resume,
    load=load,
    prepare=prepare,
    operations=(
        OperationSpec(
            "fill", "Fill selection", "meancolour", ("fill", "fill-set", "fill-pair"), "fill the selection",
            takes_image=True, takes_mask=True, returns=Returns.LAYER, run=fill, whole_image=True,
            params=(Param("strength", ParamType.FLOAT, "how much", default=1.0, minimum=0, maximum=1),),
            editor=EditorUse("Filled", "fill"),
        ),
    ),
    describe=lambda meta: {"task": meta["model"]["task"]},
)  # fmt: skip
