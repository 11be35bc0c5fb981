"""ConSinGAN (Hinz et al. 2021) as a family: single-image generation, retargeting, harmonization and
editing; its options, training, loading and operations.

The algorithm lives beside this file: config (frozen configs and presets), modes (the four tasks' specs),
networks, pyramid, augment, training (training, fine-tuning, checkpoints), store (model directories),
apply (sampling, harmonization and editing), blend (the colour match) and onnx_export (the sampler graph).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import BadInputError
from engine.families.consingan.config import MAX_ITERS, MAX_SIDE, MAX_STAGES
from engine.families.consingan.modes import Mode, spec
from engine.family import Family, Loaded, Resolved, Task, TrainRun, precision_option, seed_option
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

NAME = "consingan"
FORMAT_VERSION = 1  # of the model.json fields below `model`: ModelConfig, TrainConfig, shapes, noise amps

TASKS = (
    Task(Mode.GENERATION.value, "Generation: new images like the training image, at any size"),
    Task(Mode.RETARGET.value, "Retargeting: the training image at another size or aspect ratio"),
    Task(Mode.HARMONIZATION.value, "Harmonization: a pasted object in the painting's style"),
    Task(Mode.EDITING.value, "Editing: rough edits of the painting made to fit it"),
    Task(Mode.ANIMATION.value, "Animation: a looping clip of the image moving (a random walk in its noise)"),
)


class Options(BaseModel):
    """ConSinGAN's training options; unset ones take the preset's value (docs/engine.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["paper", "fast", "tiny"] | None = Field(
        None, description="paper (the reference's defaults), fast (for a CPU) or tiny (tests); "
        "default: paper on a GPU, fast on a CPU"
    )  # fmt: skip
    stages: int | None = Field(None, ge=1, le=MAX_STAGES, description="number of pyramid stages")
    iters: int | None = Field(None, ge=1, le=MAX_ITERS, description="iterations per stage")
    max_size: int | None = Field(None, ge=16, le=MAX_SIDE, description="long side of the final stage in px")
    seed: int | None = seed_option()
    precision: Literal["fp32", "bf16"] | None = precision_option()


def train(run: TrainRun) -> Path:
    from engine.families.consingan import training
    from engine.families.consingan.config import training_configs

    if run.data.image is None:
        raise BadInputError("ConSinGAN trains on one image: give IMAGE")
    o: Any = run.options
    _, model, train_cfg = training_configs(
        run.task, run.device, o.preset, o.precision, stages=o.stages, iters=o.iters, max_size=o.max_size,
        seed=o.seed,
    )  # fmt: skip
    return training.train(run.data.image, model, train_cfg, run.out_dir, run.device, run.progress, run.cancel)


# Settings that do not change the trained weights stay out of the training key.
_KEY_IGNORES = {"checkpoint_every_s"}
# Settings added after models were stored count only when set: at their default, which trains exactly as
# before they existed, the key stays what it was, so stored models are still found.
_KEY_NEW_DEFAULTS = {"recolour_probability": 0.0, "gp_every": 1}


def resolve(task: str, options: BaseModel, device: Any) -> Resolved:
    from engine.families.consingan.config import training_configs

    o: Any = options
    preset, model, train_cfg = training_configs(
        task, device, o.preset, o.precision, stages=o.stages, iters=o.iters, max_size=o.max_size, seed=o.seed
    )
    settings = {
        "model": model.to_dict(),
        "train": {
            k: v
            for k, v in train_cfg.to_dict().items()
            if k not in _KEY_IGNORES and not (k in _KEY_NEW_DEFAULTS and v == _KEY_NEW_DEFAULTS[k])
        },
    }
    return Resolved(preset, settings, train_cfg.seed)


def finetune(
    base: Path, image: Any, out_dir: Path, device: Any, iters: int, progress: Any, cancel: Any
) -> Path:
    from engine.families.consingan import training

    return training.finetune(base, image, out_dir, device, iters, progress, cancel)


def resume(out_dir: Path, device: Any, progress: ProgressFn | None, cancel: threading.Event | None) -> Path:
    from engine.families.consingan import training

    return training.resume(out_dir, device, progress, cancel)


def load(directory: Path, meta: dict, device: Any) -> Loaded:
    from engine.families.consingan.store import load_model

    model = load_model(directory, device)
    return Loaded(FAMILY, model.model.mode.value, directory, model)


def prepare(loaded: Loaded, backend: str) -> None:
    from engine.runtime import describe_backend, make_backend

    loaded.runner = make_backend(loaded.model, backend, release_memory=loaded.resident)
    loaded.runner_info = describe_backend(loaded.runner)


def describe(meta: dict) -> dict[str, Any]:
    height, width = meta["stage_shapes"][-1]
    shapes = [f"{w}x{h}" for h, w in meta["stage_shapes"]]
    return {"task": meta["model"]["mode"], "width": width, "height": height, "stages": shapes}


# ---- operations ----


def _apply(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.consingan import apply

    assert given.picture is not None and given.mask is not None
    if given.on_step is not None:
        given.on_step({"harmonization": "harmonizing", "editing": "editing"}[loaded.task])
    result = apply.apply_to_selection(
        loaded.model, given.picture, given.mask, given.params["seed"], backend=loaded.runner,
        color_match=given.params["color_match"],
    )  # fmt: skip
    return OperationOutput([result])


def _sample(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.consingan import apply
    from engine.imageio import Picture

    p = given.params
    step = given.on_step
    images = apply.sample(
        loaded.model, p["n"], p["height"], p["width"], p["seed"], backend=loaded.runner,
        on_sample=None if step is None else lambda i: step(f"sample {i + 1} of {p['n']}"),
    )  # fmt: skip
    return OperationOutput([Picture(image) for image in images])


def _animate(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.consingan import apply
    from engine.imageio import Picture

    p = given.params
    step = given.on_step
    frames = apply.animate(
        loaded.model, p["frames"], p["motion"], p["momentum"], p["seed"], backend=loaded.runner,
        on_frame=None if step is None else lambda i: step(f"frame {i + 1} of {p['frames']}"),
    )  # fmt: skip
    return OperationOutput([Picture(frame) for frame in frames], {"fps": p["fps"]})


def _export(loaded: Loaded, given: OperationInput) -> OperationOutput:
    from engine.families.consingan.onnx_export import export

    assert given.out is not None
    fp16 = bool(given.params["fp16"])
    if given.on_step is not None:
        given.on_step("exporting to ONNX and checking the graph")
    path = export(loaded.model, given.out, fp16=fp16)
    info = {"onnx": str(path), "precision": "fp16" if fp16 else "fp32", "bytes": path.stat().st_size}
    return OperationOutput([], info)


def color_match_param(default_text: str) -> Param:
    """--color-match, its help naming the default (the plugin installer's names the plugins' own)."""
    return Param(
        "color_match",
        ParamType.FLOAT,
        "move the selection towards its surroundings' colours before the model runs: up to 0.5 their hue, "
        "saturation and contrast (Poisson blending), from 0.5 to 1 their lightness too (half Poisson's, half "
        "the mean of the painting around it); 0 keeps the selection's own colours, 1 lets objects take on "
        f"the scene's light (default: {default_text})",
        minimum=0.0,
        maximum=1.0,
    )


_HARMONIZE_DEFAULT = spec(Mode.HARMONIZATION).color_match
_EDIT_DEFAULT = spec(Mode.EDITING).color_match
OPERATIONS = (
    OperationSpec(
        "harmonize", "Harmonize selection", "consingan", (Mode.HARMONIZATION.value,),
        "harmonize the masked region of an image with a trained model",
        takes_image=True, takes_mask=True, returns=Returns.LAYER, run=_apply,
        params=(NOISE_SEED, color_match_param(f"{_HARMONIZE_DEFAULT:g}")), whole_image=True,
        editor=EditorUse(
            "Harmonized", "harmonize", object_on_layer=True, retrain=True, ask_color_match=True,
            tooltip="Blend the selected object into the painting with a model trained on the background",
        ),
    ),
    OperationSpec(
        "edit", "Edit selection", "consingan", (Mode.EDITING.value,),
        "edit the masked region of an image with a trained model",
        takes_image=True, takes_mask=True, returns=Returns.LAYER, run=_apply,
        params=(NOISE_SEED, color_match_param(f"{_EDIT_DEFAULT:g}")), whole_image=True,
        editor=EditorUse(
            "Edited", "edit", retrain=True,
            tooltip="Re-synthesize the selected region so a rough edit matches the painting",
        ),
    ),
    OperationSpec(
        "sample", "Generate variation", "consingan", tuple(m.value for m in Mode),
        "write random samples, at any size",
        takes_image=False, takes_mask=False, returns=Returns.NEW_LAYER, run=_sample,
        params=(
            *sample_params(),
            NOISE_SEED,
        ),
        steps=lambda params: params["n"],
        output_pixels=sample_pixels,
        editor=EditorUse(
            "Variation", "variation", picture=True,
            tooltip="Add a new layer sampled from a generation model of this picture",
        ),
    ),
    OperationSpec(
        "animate", "Animate layer", "consingan", (Mode.ANIMATION.value,),
        "a clip of the training image moving: a random walk in the model's noise (ConSinGAN's animation)",
        takes_image=False, takes_mask=False, returns=Returns.FRAMES, run=_animate,
        params=(
            *animation_params(),
            NOISE_SEED,
        ),
        steps=lambda params: params["frames"],
        output_pixels=lambda params, size: int(params["frames"]) * (size[0] or 1) * (size[1] or 1),
        editor=EditorUse(
            "Animated", "animate", picture=True,
            tooltip="Add an animated layer: the picture as you see it, moving (a random walk in an animation "
            "model trained on it), one keyframe a frame on the timeline",
        ),
    ),
    OperationSpec(
        "export", "Export to ONNX", "consingan", tuple(m.value for m in Mode),
        "export a model's sampler as one ONNX graph (any output size)",
        takes_image=False, takes_mask=False, returns=Returns.FILE, run=_export, needs_runner=False,
        out_suffix=".onnx",
        params=(Param("fp16", ParamType.BOOL, "fp16 weights and compute, fp32 in and out", default=False),),
    ),
)  # fmt: skip

FAMILY = Family(
    name=NAME,
    label="ConSinGAN",
    format_version=FORMAT_VERSION,
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
    finetune=finetune,
    finetune_tasks=(Mode.HARMONIZATION.value, Mode.EDITING.value),
)
