"""SinGAN (Shaham, Dekel and Michaeli, ICCV 2019) as a family: one image's pyramid of generators, each
passing an image up, trained one stage at a time. Generation (random samples at any size), paint-to-image
(a sketch entering at a coarse stage), super-resolution and animation.

config (presets, tasks, the pyramid), networks (a stage's generator and critic), training (stage by stage,
WGAN-GP, checkpoints), store (model directories), apply (the pyramid walk and the tasks, runners) and
onnx_export (a stage as an ONNX graph) are beside this file.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import BadInputError
from engine.families.singan.config import FAMILY_FORMAT_VERSION, MAX_ITERS, MAX_SIDE, NAME
from engine.family import MAX_SEED, Family, Loaded, Resolved, Task, TrainRun, precision_option, seed_option
from engine.operations import (
    NOISE_SEED,
    EditorUse,
    OperationInput,
    OperationOutput,
    OperationSpec,
    Param,
    ParamType,
    Returns,
    animation_params,
    sample_params,
    sample_pixels,
)
from engine.progress import ProgressFn

TASKS = (
    Task("generation", "Generation: new images like the training image, at any size; paint-to-image"),
    Task("animation", "Animation: a clip of the image moving (a random walk in its noise)"),
    Task("super_resolution", "Super-resolution: the image itself made larger (`engine upscale`)"),
)


class Options(BaseModel):
    """SinGAN's training options; unset ones take the preset's value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["paper", "fast", "tiny"] | None = Field(
        None, description="paper (the reference's defaults), fast (for a CPU) or tiny (tests); "
        "default: paper on a GPU, fast on a CPU"
    )  # fmt: skip
    iters: int | None = Field(None, ge=1, le=MAX_ITERS, description="iterations per stage")
    max_size: int | None = Field(
        None,
        ge=16,
        le=MAX_SIDE,
        description="long side of the final stage in px (super_resolution: the side of the window it learns)",
    )
    seed: int | None = seed_option()
    precision: Literal["fp32", "bf16"] | None = precision_option()


def _config(task: str, options: Any, device: Any) -> tuple[str, Any]:
    from engine.families.singan.config import resolve as resolve_config

    o = options
    return resolve_config(
        task, device, o.preset, o.precision, iters=o.iters, max_size=o.max_size, seed=o.seed
    )


def train(run: TrainRun) -> Path:
    from engine.families.singan import training

    if run.data.image is None:
        raise BadInputError("SinGAN trains on one image: give IMAGE")
    _, config = _config(run.task, run.options, run.device)
    return training.train(config, run.data.image, run.out_dir, run.device, run.progress, run.cancel)


def resume(out_dir: Path, device: Any, progress: ProgressFn | None, cancel: threading.Event | None) -> Path:
    from engine.families.singan import training

    return training.resume(out_dir, device, progress, cancel)


def resolve(task: str, options: BaseModel, device: Any) -> Resolved:
    preset, config = _config(task, options, device)
    return Resolved(preset, {"family": NAME, "task": task, "config": config.to_dict()}, config.seed)


def load(directory: Path, meta: dict, device: Any) -> Loaded:
    from engine.families.singan.store import load_model

    model = load_model(directory, meta, device)
    return Loaded(FAMILY, model.task.value, directory, {"pyramid": model, "device": device})


def prepare(loaded: Loaded, backend: str) -> None:
    from engine.families.singan.apply import OnnxRunner, TorchRunner

    model, device = loaded.model["pyramid"], loaded.model["device"]
    if backend == "torch":
        loaded.runner = TorchRunner(model, device)
    else:
        from engine.families.singan.onnx_export import FOLDER

        generators = model.generators
        loaded.runner = OnnxRunner(
            lambda stage: _ensure_export(loaded.path, stage, generators[stage]), len(generators),
            loaded.path / FOLDER, str(device), release_memory=loaded.resident,
        )  # fmt: skip
    loaded.runner_info = loaded.runner.describe()


def _ensure_export(directory: Path, stage: int, generator: Any) -> Path:
    from engine.families.singan import onnx_export
    from engine.runtime import ensure_export
    from engine.sampler_file import SINGAN_STAGE_FORMAT

    return ensure_export(
        onnx_export.source_digest(generator),
        directory / onnx_export.file_name(stage),
        lambda path: onnx_export.export(generator, stage, path),
        SINGAN_STAGE_FORMAT,
    )


def describe(meta: dict) -> dict[str, Any]:
    height, width = meta["stage_shapes"][-1]
    shapes = [f"{w}x{h}" for h, w in meta["stage_shapes"]]
    return {"task": meta["model"]["task"], "width": width, "height": height, "stages": shapes}


# ---- operations ----


def _sample(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.singan.apply import sample
    from engine.imageio import Picture

    p, model = given.params, loaded.model["pyramid"]
    pictures = []
    for i in range(p["n"]):
        if given.on_step is not None:
            given.on_step(f"sample {i + 1} of {p['n']}")
        image = sample(model, loaded.runner, (p["seed"] + i) % (MAX_SEED + 1), p["height"], p["width"])
        pictures.append(Picture(image))
    return OperationOutput(pictures)


def _resized_like(image: Any, picture: Any) -> Any:
    """A result at the model's size as a picture of the input's size (Lanczos up, area down), the input's
    alpha kept."""
    import cv2
    import numpy as np

    from engine.imageio import Picture

    h, w = picture.shape
    if image.shape[:2] != (h, w):
        method = cv2.INTER_AREA if h * w < image.shape[0] * image.shape[1] else cv2.INTER_LANCZOS4
        image = np.clip(cv2.resize(image, (w, h), interpolation=method), 0, 1).astype(np.float32)
    return Picture(np.ascontiguousarray(image), picture.alpha, picture.depth)


def _paint2image(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.singan.apply import paint_to_image

    assert given.picture is not None
    if given.on_step is not None:
        given.on_step("painting")
    p, model = given.params, loaded.model["pyramid"]
    image = paint_to_image(model, loaded.runner, given.picture.rgb, p["start_stage"], p["seed"])
    out = _resized_like(image, given.picture)
    th, tw = model.shapes[-1]
    return OperationOutput([out], {"model_width": tw, "model_height": th})


def _upscale(loaded: Loaded, given: OperationInput) -> OperationOutput:
    return upscale_picture(loaded.model["pyramid"], loaded.runner, given)


def upscale_picture(pyramid, runner, given: OperationInput) -> OperationOutput:
    """The upscale operation on `given`'s picture (alpha enlarged alongside); `pyramid` and `runner` may be
    None at strength 0 (bicubic steps: `engine upscale --strength 0` and the daemon train no model for
    them)."""
    from engine.families.singan.apply import upscale, upscale_steps
    from engine.imageio import Picture, visible_rgb

    assert given.picture is not None
    p, step = given.params, given.on_step
    steps, r = upscale_steps(p["factor"])
    report = None if step is None else lambda k, n: step(f"pass {k + 1} of {n} (x{r:.3f})")
    image = upscale(
        pyramid, runner, visible_rgb(given.picture), p["factor"], p["seed"], report, p["strength"],
    )  # fmt: skip
    alpha = given.picture.alpha
    if alpha is not None:
        import cv2
        import numpy as np

        alpha = cv2.resize(alpha, image.shape[1::-1], interpolation=cv2.INTER_CUBIC)
        if alpha.dtype.kind == "f":  # integer alpha saturates in cv2.resize; float alpha may overshoot
            alpha = np.clip(alpha, 0, 1)
    return OperationOutput(
        [Picture(image, alpha, given.picture.depth)], {"passes": steps, "step": round(r, 4)}
    )


def _upscale_without_model(given: OperationInput) -> OperationOutput:
    """Bicubic steps alone (strength 0), or none (factor 1): what no model changes."""
    return upscale_picture(None, None, dataclasses.replace(given, params={**given.params, "strength": 0.0}))


def _upscale_passes(factor: float) -> int:
    from engine.families.singan.apply import upscale_steps

    return upscale_steps(factor)[0]


def _animate(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.singan.apply import animate
    from engine.imageio import Picture

    p, step = given.params, given.on_step
    frames = animate(
        loaded.model["pyramid"], loaded.runner, p["frames"], p["motion"], p["momentum"], p["seed"],
        on_frame=None if step is None else lambda i: step(f"frame {i + 1} of {p['frames']}"),
    )  # fmt: skip
    return OperationOutput([Picture(f) for f in frames], {"fps": p["fps"]})


def _export(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.singan.onnx_export import export

    assert given.out is not None
    generators = loaded.model["pyramid"].generators
    stage = len(generators) - 1 if given.params["stage"] is None else given.params["stage"]
    if stage >= len(generators):
        raise BadInputError(
            f"--stage must be between 0 and {len(generators) - 1} for this model (got {stage})"
        )
    if given.on_step is not None:
        given.on_step(f"exporting stage {stage} to ONNX and checking the graph")
    path = export(generators[stage], stage, given.out)
    return OperationOutput([], {"onnx": str(path), "stage": stage, "bytes": path.stat().st_size})


_ALL = tuple(t.name for t in TASKS)
OPERATIONS = (
    OperationSpec(
        "sample", "Generate variation", NAME, ("generation", "animation"),
        "write random samples, at any size",
        takes_image=False, takes_mask=False, returns=Returns.NEW_LAYER, run=_sample,
        params=(
            *sample_params(),
            NOISE_SEED,
        ),
        steps=lambda params: params["n"],
        output_pixels=sample_pixels,
    ),
    OperationSpec(
        "paint2image", "Paint to image", NAME, ("generation",),
        "turn a rough colour sketch (flat areas, clip-art) into an image with the model's texture and "
        "detail: the sketch enters the pyramid at a coarse stage, fresh noise above it",
        takes_image=True, takes_mask=False, returns=Returns.LAYER, run=_paint2image,
        editor=EditorUse(
            "Painted", "paint_to_image", pick_model=True, whole_layer=True,
            tooltip="Redraw the active layer (a rough colour sketch, the model's image's proportions) in "
            "the texture of a stored SinGAN generation model",
        ),
        params=(
            Param("start_stage", ParamType.INT, "the stage the sketch enters, 1 (the second coarsest: the "
                  "model redraws most) up to the finest (it only adds fine texture) (default: 2, or the "
                  "finest where the model has fewer)", minimum=1, maximum=64),
            NOISE_SEED,
        ),
    ),
    OperationSpec(
        "upscale", "Upscale layer", NAME, ("super_resolution",),
        "the training image made larger by SinGAN's super-resolution",
        takes_image=True, takes_mask=False, returns=Returns.LAYER, run=_upscale,
        editor=EditorUse(
            "Upscaled", "upscale_layer", new_image=True, ask=("factor", "strength"),
            tooltip="The active layer (or its selected part) as a new image, several times larger: a "
            "SinGAN model learns the layer's own detail (minutes the first time), then adds it at each step",
        ),
        params=(
            Param("factor", ParamType.FLOAT, "how many times larger, 1 to 16 (default: 4)", default=4.0,
                  minimum=1.0, maximum=16.0),
            Param("strength", ParamType.FLOAT, "how much of the detail the model adds each pass is kept, 0 "
                  "(bicubic steps) to 1 (all of it, as SinGAN's paper) (default: 0.75: closer to the "
                  "original than bicubic, still several times sharper; docs/benchmarks.md)", default=0.75,
                  minimum=0.0, maximum=1.0),
            NOISE_SEED,
        ),
        steps=lambda params: _upscale_passes(params["factor"]),
        # the daemon bounds what a request makes: the input's size x factor, each way
        output_pixels=lambda params, size: round((size[0] or 1) * params["factor"])
        * round((size[1] or 1) * params["factor"]),
        model_free=lambda params: params["strength"] == 0 or params["factor"] == 1,
        run_without_model=_upscale_without_model,
    ),
    OperationSpec(
        "animate", "Animate", NAME, ("animation", "generation"),
        "a clip of the training image moving: a random walk in the model's noise (SinGAN's GIFs)",
        takes_image=False, takes_mask=False, returns=Returns.FRAMES, run=_animate,
        params=(
            *animation_params(),
            NOISE_SEED,
        ),
        steps=lambda params: params["frames"],
        output_pixels=lambda params, size: int(params["frames"]) * (size[0] or 1) * (size[1] or 1),
    ),
    OperationSpec(
        "export", "Export to ONNX", NAME, _ALL,
        "export one stage's generator as an ONNX graph (inputs noise and previous, output image)",
        takes_image=False, takes_mask=False, returns=Returns.FILE, run=_export, needs_runner=False,
        out_suffix=".onnx",
        params=(Param("stage", ParamType.INT, "the stage to export, 0 = coarsest (default: the finest)",
                      minimum=0, maximum=64),),
    ),
)  # fmt: skip

FAMILY = Family(
    name=NAME,
    label="SinGAN",
    format_version=FAMILY_FORMAT_VERSION,
    tasks=TASKS,
    options=Options,
    presets=("paper", "fast", "tiny"),
    train=train,
    resume=resume,
    load=load,
    prepare=prepare,
    operations=OPERATIONS,
    describe=describe,
    resolve=resolve,
)
