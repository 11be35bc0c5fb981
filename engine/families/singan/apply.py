"""Running a SinGAN pyramid: the walk from a stage's input up to the finest stage, and what it is used for:
random samples at any size, paint-to-image (a sketch entering at a coarse stage), super-resolution (the
finest stage applied again after each upscaling step) and animation (a random walk in the noise).

Noise is drawn by torch's CPU generator from the seed, so a seed gives the same image on any backend or
device. A runner (onnxruntime on the exported stages, the default, or eager torch) runs one stage:
`runner(stage, noise, previous) -> image`, N x 3 x H x W tensors in [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import BadInputError
from engine.families.singan.config import PAD, SR_STEP, Config, Shape, Task

MAX_UPSCALE = 16.0
MAX_UPSCALED_PIXELS = 200_000_000
# Output tile of an upscaling pass: the stage's 32 or more channels are held for one tile at a time, so a
# pass's memory is a few copies of the 3-channel image, whatever its size (docs/benchmarks.md)
UPSCALE_TILE = 512
ASPECT_TOLERANCE = 0.02  # a sketch's aspect ratio may differ this much (relative) from the model's


@dataclass
class Pyramid:
    """A trained SinGAN: its config, stage shapes (coarsest first), noise amplitudes and stage 0's fixed
    reconstruction noise (1 x 3 x H+2PAD x W+2PAD), and its stage generators (torch, eval)."""

    config: Config
    shapes: list[Shape]
    amps: list[float]
    fixed_noise: torch.Tensor
    generators: list[Any]
    path: Path | None = None

    @property
    def task(self) -> Task:
        return self.config.task


Runner = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def upsample(image: torch.Tensor, shape: Shape) -> torch.Tensor:
    """Bicubic resize (the reference's imresize between stages)."""
    if tuple(image.shape[-2:]) == tuple(shape):
        return image
    return F.interpolate(image, size=tuple(shape), mode="bicubic", align_corners=False)


def downscale(image: torch.Tensor, shape: Shape) -> torch.Tensor:
    """A smaller copy: antialiased bicubic (a = -0.5), as the reference's imresize shrinks. Not torch's
    "area": for a ratio that is not a whole number its averaging windows are uneven and shifted by up to
    half a pixel, so an image shrunk by a stage's 0.79 and enlarged again came back 25.8 dB from itself
    (here 30.7), and a super-resolution stage trained on that learned to undo a shift that real inputs do
    not have (its results came out embossed, edges doubled)."""
    if tuple(image.shape[-2:]) == tuple(shape):
        return image
    return F.interpolate(image, size=tuple(shape), mode="bicubic", align_corners=False, antialias=True)


def draw_noise(rng: torch.Generator, shape: Shape, stage: int, task: Task) -> torch.Tensor:
    """A stage's noise, PAD px larger on each side than the image: drawn at the image's size and padded
    with zeros, or for animation drawn over the border too (the reference's animation_train); one channel
    for all three at the coarsest stage (grey noise), three above, as the reference draws them."""
    h, w = shape
    if task is Task.ANIMATION:
        h, w = h + 2 * PAD, w + 2 * PAD
    noise = torch.randn(1, 1 if stage == 0 else 3, h, w, generator=rng).expand(1, 3, h, w)
    return noise if task is Task.ANIMATION else F.pad(noise, (PAD,) * 4)


def walk(
    run: Runner,
    shapes: Sequence[Shape],
    amps: Sequence[float],
    previous: torch.Tensor,
    noises: Sequence[torch.Tensor],
    start: int = 0,
) -> torch.Tensor:
    """From stage `start` (its input `previous`, at shapes[start]) up to the last stage, each stage's
    output resized to the next one's shape; noises[i] is stage start + i's unscaled noise."""
    image = previous
    for i, stage in enumerate(range(start, len(shapes))):
        image = upsample(image, shapes[stage])
        image = run(stage, amps[stage] * noises[i], image)
    return image


def scaled_shapes(shapes: Sequence[Shape], height: int, width: int) -> list[Shape]:
    """Every stage scaled as the finest one is to height x width (SinGAN samples at any size that way)."""
    th, tw = shapes[-1]
    sh, sw = height / th, width / tw
    return [(max(1, round(h * sh)), max(1, round(w * sw))) for h, w in shapes[:-1]] + [(height, width)]


def to_image(tensor: torch.Tensor) -> np.ndarray:
    return ((tensor[0].detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def to_tensor(image: np.ndarray) -> torch.Tensor:
    chw = np.ascontiguousarray(image[..., :3].transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(chw)[None] * 2 - 1


# ---- what users do with a model ----


def sample(
    model: Pyramid, run: Runner, seed: int, height: int | None = None, width: int | None = None
) -> np.ndarray:
    """A random image (H x W x 3 in [0, 1]) at the training size or any other."""
    shapes = model.shapes
    if height is not None or width is not None:
        th, tw = shapes[-1]
        height = height or max(1, round(width * th / tw))  # type: ignore[operator]
        width = width or max(1, round(height * tw / th))
        shapes = scaled_shapes(shapes, height, width)
    rng = torch.Generator().manual_seed(seed)
    noises = [draw_noise(rng, shape, stage, model.task) for stage, shape in enumerate(shapes)]
    with torch.no_grad():
        return to_image(walk(run, shapes, model.amps, torch.zeros(1, 3, *shapes[0]), noises))


def paint_to_image(
    model: Pyramid, run: Runner, sketch: np.ndarray, start: int | None, seed: int
) -> np.ndarray:
    """The sketch (H x W x 3 in [0, 1], the model's aspect ratio) drawn in the model's texture: resized to
    the stage below `start` and up again (reference paint2image.py), it enters stage `start` in place of the
    image from below, with fresh noise there and above. Returned at the model's training size."""
    n = len(model.shapes)
    start = min(2, n - 1) if start is None else start
    if not 1 <= start <= n - 1:
        raise BadInputError(f"--start-stage must be between 1 and {n - 1} for this model (got {start})")
    th, tw = model.shapes[-1]
    sh, sw = sketch.shape[:2]
    # (the model's sides are rounded: its aspect ratio is the painting's only to within half a pixel a side)
    if abs((sw / sh) / (tw / th) - 1) > ASPECT_TOLERANCE + 0.5 / tw + 0.5 / th:
        raise BadInputError(
            f"the sketch is {sw}x{sh} px but the model's image is {tw}x{th}: draw the sketch at the "
            "painting's aspect ratio"
        )
    x = to_tensor(sketch)
    x = upsample(downscale(x, model.shapes[start - 1]).clamp(-1, 1), model.shapes[start])
    rng = torch.Generator().manual_seed(seed)
    noises = [draw_noise(rng, model.shapes[s], s, model.task) for s in range(start, n)]
    with torch.no_grad():
        return to_image(walk(run, model.shapes, model.amps, x, noises, start))


def upscale_steps(factor: float) -> tuple[int, float]:
    """SinGAN's passes for an upscaling factor: k steps of r with r^k = factor, r near 2^(1/3)."""
    if not 1.0 <= factor <= MAX_UPSCALE:
        raise BadInputError(f"--factor must be between 1 and {MAX_UPSCALE:g} (got {factor:g})")
    steps = max(1, round(math.log(factor) / math.log(SR_STEP))) if factor > 1 else 0
    return steps, factor ** (1 / steps) if steps else 1.0


def upscale(
    model: Pyramid | None, run: Runner | None, image: np.ndarray, factor: float, seed: int,
    on_step: Callable[[int, int], None] | None = None, strength: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """The image made `factor` times larger: k times, a bicubic step of r and the finest stage's pass
    (reference SR.py); the last step lands on round(factor x size) exactly. Each pass keeps `strength` of
    what the stage changes (1: all of it, as the reference; 0: bicubic steps alone, which need no model:
    `model` and `run` may then be None)."""
    if not 0.0 <= strength <= 1.0:
        raise BadInputError(f"--strength must be between 0 and 1 (got {strength:g})")
    if model is None or run is None:
        if strength:
            raise ValueError("upscale needs a model and its runner unless strength is 0")
    elif model.task is not Task.SUPER_RESOLUTION:
        raise BadInputError(
            f"this is a SinGAN model for {model.task.value}; upscale needs one trained with --mode "
            "super_resolution (`engine upscale IMAGE` trains it)"
        )
    steps, r = upscale_steps(factor)
    h, w = image.shape[:2]
    target = (round(h * factor), round(w * factor))
    if target[0] * target[1] > MAX_UPSCALED_PIXELS:
        raise BadInputError(
            f"{w}x{h} px x {factor:g} would be {target[1]}x{target[0]} px, over the "
            f"{MAX_UPSCALED_PIXELS // 1_000_000} megapixels upscale writes: ask for a smaller factor"
        )
    rng = torch.Generator().manual_seed(seed)
    x = to_tensor(image)
    with torch.no_grad():
        for k in range(1, steps + 1):
            if on_step is not None:
                on_step(k - 1, steps)
            shape = target if k == steps else (round(h * r**k), round(w * r**k))
            x = upsample(x, shape)
            if strength and model is not None and run is not None:
                # the first pass with grey noise, as the reference's generator loop draws at its first step
                finest = len(model.shapes) - 1
                noise = model.amps[-1] * draw_noise(rng, shape, finest if k > 1 else 0, model.task)
                x = x + strength * (run_tiled(run, finest, noise, x) - x)
    return to_image(x)


def run_tiled(run: Runner, stage: int, noise: torch.Tensor, x: torch.Tensor, tile: int = UPSCALE_TILE):
    """run(stage, noise, x) tile by tile, the same pixels as in one piece: a stage adds to x what its 5
    unpadded convolutions make of noise + x padded with zeros by PAD, so each output tile needs that sum
    over the tile and PAD px around it; the runner pads its tile with zeros, so the noise given with it
    carries the difference (the real neighbours, or the image's own zero border)."""
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return run(stage, noise, x)
    field = noise + F.pad(x, (PAD,) * 4)  # what the stage sees, over the whole image
    out = torch.empty_like(x)
    for top in range(0, h, tile):
        for left in range(0, w, tile):
            part = x[..., top : top + tile, left : left + tile]
            th, tw = part.shape[-2:]
            seen = field[..., top : top + th + 2 * PAD, left : left + tw + 2 * PAD]
            out[..., top : top + th, left : left + tw] = run(stage, seen - F.pad(part, (PAD,) * 4), part)
    return out


def animate(
    model: Pyramid, run: Runner, frames: int, motion: str, momentum: float, seed: int,
    on_frame: Callable[[int], None] | None = None,
) -> list[np.ndarray]:  # fmt: skip
    """SinGAN's GIFs (reference manipulate.generate_gif): at each stage from the start up, a frame's noise
    is alpha x the reconstruction noise + (1 - alpha) x (the last frame's + its step), its step being
    momentum x the last step + (1 - momentum) x new noise (alpha 0.1), so the clip hovers around the
    training image and moves smoothly. Stages below the start reconstruct the image; strong motion starts at
    the coarsest stage, medium at the second, weak at the third."""
    alpha = 0.1
    start = min({"strong": 0, "medium": 1, "weak": 2}[motion], len(model.shapes) - 1)
    rng = torch.Generator().manual_seed(seed)
    shapes, amps = model.shapes, model.amps
    rec = [model.fixed_noise] + [torch.zeros(1, 3, h + 2 * PAD, w + 2 * PAD) for h, w in shapes[1:]]
    last = [0.95 * rec[s] + 0.05 * draw_noise(rng, shapes[s], s, model.task) for s in range(len(shapes))]
    before = [r.clone() for r in rec]
    out = []
    with torch.no_grad():
        base = walk(run, shapes[:start], amps, torch.zeros(1, 3, *shapes[0]), rec[:start]) if start else None
        for i in range(frames):
            if on_frame is not None:
                on_frame(i)
            for s in range(start, len(shapes)):
                step = momentum * (last[s] - before[s]) + (1 - momentum) * draw_noise(
                    rng, shapes[s], s, model.task
                )
                before[s], last[s] = last[s], alpha * rec[s] + (1 - alpha) * (last[s] + step)
            previous = torch.zeros(1, 3, *shapes[0]) if base is None else base
            out.append(to_image(walk(run, shapes, amps, previous, last[start:], start)))
    return out


# ---- runners ----


class TorchRunner:
    name = "torch"

    def __init__(self, model: Pyramid, device: Any) -> None:
        self.model, self.device = model, device

    def __call__(self, stage: int, noise: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        g = self.model.generators[stage]
        return g(noise.to(self.device), previous.to(self.device)).float().cpu()

    def describe(self) -> dict[str, str]:
        return {"backend": self.name, "provider": str(self.device)}


class OnnxRunner:
    """Each stage's exported graph (`folder`/stage_NN.onnx) on onnxruntime (engine.runtime.GraphRunner),
    exported by `export(stage)` and opened the first time the stage runs (upscaling runs the finest alone)."""

    name = "onnxruntime"

    def __init__(
        self, export: Callable[[int], Path], stages: int, folder: Path, device: str, release_memory=False
    ):
        self.export, self.folder, self.device, self.release_memory = export, folder, device, release_memory
        self.stages: list[Any] = [None] * stages

    def _stage(self, stage: int) -> Any:
        if self.stages[stage] is None:
            from engine.runtime import GraphRunner
            from engine.sampler_file import SINGAN_STAGE_FORMAT

            path = self.export(stage)
            self.stages[stage] = GraphRunner(path, self.device, SINGAN_STAGE_FORMAT, self.release_memory)
        return self.stages[stage]

    def __call__(self, stage: int, noise: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        feed = {
            "noise": np.ascontiguousarray(noise.float().cpu().numpy()),
            "previous": np.ascontiguousarray(previous.float().cpu().numpy()),
        }
        (out,) = self._stage(stage).run(feed)
        return torch.from_numpy(out)

    def describe(self) -> dict[str, str]:
        provider = "CUDAExecutionProvider" if self.device.startswith("cuda") else "CPUExecutionProvider"
        return {"backend": self.name, "provider": provider, "onnx": str(self.folder)}
