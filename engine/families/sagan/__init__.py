"""A generator trained on a small set of images (SAGAN-style; Zhang, Goodfellow, Metaxas and Odena 2019):
from about a hundred icons, emoji or portraits in one style, new ones in that style.

config (presets; `paper` is the system the family reproduces), networks (generator, critic, self-attention),
data (the set, fitted to a square), augment (DiffAugment), training (hinge loss, two time-scale Adam,
moving average, checkpoints), store (model directories), sample (seeds, runners, pictures) and
onnx_export (the generator as an ONNX graph: a latent in, an image out) are beside this file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from engine.errors import BadInputError
from engine.families.sagan.config import FAMILY_FORMAT_VERSION, MAX_ITERS, NAME, SIZES, TASK
from engine.family import (
    MAX_SEED,
    DataKind,
    Family,
    Loaded,
    Resolved,
    Task,
    TrainRun,
    precision_option,
    seed_option,
)
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

MAX_SIDE = 8192  # an output side, px (resampled from the generator's own size)
DRAW_BLOCK = 256  # images drawn at a time, only the pictures kept then held (64 MB at 128 px with alpha)


class Options(BaseModel):
    """The set generator's training options; unset ones take the preset's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["paper", "fast", "tiny"] | None = Field(
        None, description="paper (the reference system), fast (for a CPU) or tiny (tests); default: paper "
        "on a GPU, fast on a CPU"
    )  # fmt: skip
    size: int | None = Field(None, ge=64, le=128, multiple_of=64, description="image side: 64 or 128 px")
    iters: int | None = Field(None, ge=1, le=MAX_ITERS, description="training iterations")
    seed: int | None = seed_option()
    precision: Literal["fp32", "bf16"] | None = precision_option()

    @field_validator("size", mode="before")  # before the bounds, which would say "a multiple of 64"
    @classmethod
    def _one_of_the_sizes(cls, size: Any) -> Any:
        if isinstance(size, int) and size not in SIZES:
            raise PydanticCustomError("size", "must be 64 or 128 (got {size})", {"size": size})
        return size


def _config(options: Any, device: Any) -> tuple[str, Any]:
    from engine.families.sagan.config import resolve as resolve_config

    o = options
    return resolve_config(device, o.preset, o.precision, size=o.size, iters=o.iters, seed=o.seed)


def train(run: TrainRun) -> Path:
    from engine.families.sagan import training

    if len(run.data.folders) != 1:
        raise BadInputError("the set generator learns from one folder of images: give --images DIR")
    _, config = _config(run.options, run.device)
    return training.train(config, run.data.folders[0], run.out_dir, run.device, run.progress, run.cancel)


def resume(out_dir: Path, device: Any, progress: ProgressFn | None, cancel: threading.Event | None) -> Path:
    from engine.families.sagan import training

    return training.resume(out_dir, device, progress, cancel)


def resolve(task: str, options: BaseModel, device: Any) -> Resolved:
    preset, config = _config(options, device)
    return Resolved(preset, {"family": NAME, "task": task, "config": config.to_dict()}, config.seed)


def load(directory: Path, meta: dict, device: Any) -> Loaded:
    from engine.families.sagan.store import load_generator

    config, generator = load_generator(directory, meta, device)
    model = {"config": config, "generator": generator, "device": device}
    return Loaded(FAMILY, TASK, directory, model)


def critic(loaded: Loaded) -> Any:
    """The model's stored critic (None where it keeps none), read at the first `--best-of` and kept with the
    model: drawing seeds as they are never reads it (about 10 MB at 64 filters)."""
    from engine.families.sagan.store import load_critic

    model = loaded.model
    if "critic" not in model:
        channels = model["generator"].channels
        model["critic"] = load_critic(loaded.path, model["config"], channels, model["device"])
    return model["critic"]


def prepare(loaded: Loaded, backend: str) -> None:
    from engine.families.sagan.sample import OnnxRunner, TorchRunner

    config, generator, device = (loaded.model[k] for k in ("config", "generator", "device"))
    if backend == "torch":
        loaded.runner = TorchRunner(generator, device)
    else:
        path = _ensure_export(loaded.path, config, generator)
        loaded.runner = OnnxRunner(path, str(device), release_memory=loaded.resident)
    loaded.runner_info = loaded.runner.describe()


def _ensure_export(directory: Path, config: Any, generator: Any) -> Path:
    from engine.families.sagan import onnx_export
    from engine.runtime import ensure_export
    from engine.sampler_file import SET_GENERATOR_FORMAT

    return ensure_export(
        onnx_export.source_digest(generator),
        directory / onnx_export.FILE_NAME,
        lambda path: onnx_export.export(config, generator, path),
        SET_GENERATOR_FORMAT,
    )


def describe(meta: dict) -> dict[str, Any]:
    size = meta["model"]["size"]
    return {"task": meta["model"]["task"], "width": size, "height": size}


# ---- operations ----


def _pictures(
    loaded: Loaded, latent_of: Callable[[int], Any], count: int, p: dict[str, Any], best_of: int = 1
) -> tuple[list, list[int]]:
    """The pictures of latents 0..count-1 (`latent_of(i)`), each the best of a group of `best_of` (the
    model's critic judges; 1: every latent's), and the indices of the latents kept. Drawn in blocks of whole
    groups, about DRAW_BLOCK images, each block's kept images resampled before the next is drawn: only the
    pictures are held."""
    import numpy as np

    from engine.families.sagan.sample import generate

    pictures: list = []
    kept: list[int] = []
    step = max(1, DRAW_BLOCK // best_of) * best_of
    for start in range(0, count, step):
        latents = np.stack([latent_of(i) for i in range(start, min(count, start + step))])
        images = generate(loaded.runner, latents)
        groups = range(0, len(images), best_of)
        picks = [i + _best(loaded, images[i : i + best_of]) for i in groups] if best_of > 1 else list(groups)
        pictures += _resampled([images[i] for i in picks], p)
        kept += [start + i for i in picks]
    return pictures, kept


def _resampled(images: Any, p: dict[str, Any]) -> list:
    from engine.families.sagan.sample import to_picture

    width, height = p["width"] or p["height"], p["height"] or p["width"]  # one side alone: a square
    return [to_picture(image, width, height) for image in images]


def _sample(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.sagan.sample import latent

    p, config = given.params, loaded.model["config"]
    n, best_of = p["n"], p["best_of"]
    if best_of > 1 and critic(loaded) is None:
        raise BadInputError(
            f"{loaded.path} keeps no critic (trained before 2026-12-07), so it cannot rank samples: set "
            "best of to 1 (--best-of 1), or train the model again"
        )
    seeds = [(p["seed"] + i) % (MAX_SEED + 1) for i in range(n * best_of)]  # image i: the i-th M of them
    if given.on_step is not None:
        each = f", each the best of {best_of}" if best_of > 1 else ""
        given.on_step(f"drawing {n} image{'s' * (n > 1)}{each}")
    pictures, kept = _pictures(loaded, lambda i: latent(seeds[i], config.z_dim), len(seeds), p, best_of)
    return OperationOutput(pictures, {"seeds": [seeds[i] for i in kept]})


def _best(loaded: Loaded, group: Any) -> int:
    """Which of a group's images the model's critic scores highest, the group scored alone
    (engine.families.sagan.sample.critic_scores), so each group's choice is its own."""
    import numpy as np

    from engine.families.sagan.sample import critic_scores

    return int(np.argmax(critic_scores(critic(loaded), group, loaded.model["config"].policy)))


def _interpolate(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.sagan.sample import latent, slerp

    p, z_dim = given.params, loaded.model["config"].z_dim
    a, b = latent(p["from_seed"], z_dim), latent(p["to_seed"], z_dim)
    n = p["frames"]
    if given.on_step is not None:
        given.on_step(f"drawing {n} frames from seed {p['from_seed']} to seed {p['to_seed']}")
    pictures, _ = _pictures(loaded, lambda i: slerp(a, b, i / max(1, n - 1)), n, p)
    return OperationOutput(pictures, {"fps": p["fps"]})


def _export(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.sagan.onnx_export import export

    assert given.out is not None
    if given.on_step is not None:
        given.on_step("exporting the generator to ONNX and checking the graph")
    path = export(loaded.model["config"], loaded.model["generator"], given.out)
    return OperationOutput([], {"onnx": str(path), "bytes": path.stat().st_size})


def _pixels(count: str) -> Any:
    def pixels(params: dict[str, Any], size: tuple[int | None, int | None]) -> int:
        side = params["width"] or params["height"] or size[0] or 64
        return int(params[count]) * int(params["width"] or side) * int(params["height"] or side)

    return pixels


def _side(name: str) -> Param:
    what = f"output {name} in px (default: the model's size, or the other side's: a square; resampled)"
    return Param(name, ParamType.INT, what, minimum=1, maximum=MAX_SIDE)


def _seed(name: str, what: str) -> Param:
    return Param(name, ParamType.INT, what, default=0, minimum=0, maximum=MAX_SEED)


OPERATIONS = (
    OperationSpec(
        "sample", "Generate from set", NAME, (TASK,),
        "draw new images in the set's style (seed S, S+1, ...: each image its own seed)",
        takes_image=False, takes_mask=False, returns=Returns.NEW_LAYER, run=_sample,
        params=(
            Param("n", ParamType.INT, "number of samples (default: 1)", default=1, minimum=1, maximum=10_000),
            _side("width"), _side("height"),
            _seed("seed", "the first sample's seed, 0 to 2^32-1 (sample i has seed + i; with --best-of M, "
                  "the best of seed + i*M to seed + i*M + M-1)"),
            Param("best_of", ParamType.INT, "draw this many seeds for each image and keep the one the "
                  "model's critic rates most like the set (default: 1, every seed kept; on `fast` models it "
                  "drew fewer smears but fewer colours on one set, more torn shapes on another: look at the "
                  "sheet; docs/benchmarks.md)",
                  default=1, minimum=1, maximum=64),
        ),
        output_pixels=_pixels("n"),
        editor=EditorUse(
            "Generated", "generate", pick_model=True, ask=("best_of",),
            tooltip="Add a new layer drawn by a stored set-generator model (its seed in the layer's name), "
            "as large as fits the selection, or the canvas",
        ),
    ),
    OperationSpec(
        "interpolate", "Interpolate between seeds", NAME, (TASK,),
        "frames morphing one seed's image into another's (along the great circle between their latents)",
        takes_image=False, takes_mask=False, returns=Returns.FRAMES, run=_interpolate,
        params=(
            _seed("from_seed", "the first frame's seed"), _seed("to_seed", "the last frame's seed"),
            Param("frames", ParamType.INT, "number of frames, both ends included (default: 24)", default=24,
                  minimum=2, maximum=10_000),
            Param("fps", ParamType.FLOAT, "frames per second of an animated file (default: 12)", default=12.0,
                  minimum=0.1, maximum=100.0),
            _side("width"), _side("height"),
        ),
        output_pixels=_pixels("frames"),
    ),
    OperationSpec(
        "export", "Export to ONNX", NAME, (TASK,),
        "export the generator as an ONNX graph (input: latent, N x z_dim standard normal; output: image in "
        "[-1, 1], alpha premultiplied where the set had it)",
        takes_image=False, takes_mask=False, returns=Returns.FILE, run=_export, needs_runner=False,
        out_suffix=".onnx",
    ),
)  # fmt: skip

FAMILY = Family(
    name=NAME,
    label="Set generator (SAGAN)",
    format_version=FAMILY_FORMAT_VERSION,
    tasks=(Task(TASK, "Generate from set: new images in the style of a folder of images", DataKind.IMAGES),),
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
