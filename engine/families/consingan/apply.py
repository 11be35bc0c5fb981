"""Using a trained model: random samples at any size, and harmonization/editing of a masked region.

Harmonization and editing run the generator at the model's resolution (about 250 px), then carry the
change it made up to the input's full resolution: the full-resolution input plus the upsampled change.
The selection therefore takes on the painting's colours and texture while its own fine detail survives,
and pixels outside the feathered mask are copied from the input untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np
import torch

from engine.device import available_memory
from engine.errors import BadInputError, IncompatibleModelError, ModelDamagedError
from engine.families.consingan.blend import color_match_offset
from engine.families.consingan.modes import Mode, spec
from engine.families.consingan.pyramid import MIN_SIDE, Shape, fit_to_max_size, resize, retarget_shapes
from engine.families.consingan.store import TrainedModel
from engine.families.consingan.training import to_image, to_tensor
from engine.imageio import Picture

MAX_OUTPUT_PIXELS = 64_000_000
# Peak memory of one sample on the CPU, in bytes per output pixel and feature channel: the last stages'
# feature maps and noise all exist at the output's size. Measured 27-34 with either backend at 1-12 MP
# (`python -m bench.sample_memory`; docs/benchmarks.md); this bound keeps a margin over that.
SAMPLE_BYTES_PER_PIXEL_CHANNEL = 38
# A feathered mask whose values span less than this is flat: half an 8-bit level.
_FLAT = 1 / 512


class Backend(Protocol):
    """Runs a model's generator: stage inputs (1 x C x H x W each) -> image tensor in [-1, 1]."""

    def generate(self, inputs: list[torch.Tensor]) -> torch.Tensor: ...


class TorchBackend:
    def __init__(self, model: TrainedModel) -> None:
        self.model = model

    def generate(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return self.model.generator(inputs, self.model.noise_amps)


def _noise_inputs(model: TrainedModel, shapes: list[Shape], rng: torch.Generator) -> list[torch.Tensor]:
    g = model.generator
    return [
        torch.randn(1, *g.noise_shape(k, *s), generator=rng).to(model.device) for k, s in enumerate(shapes)
    ]


def output_shapes(model: TrainedModel, height: int | None, width: int | None) -> list[Shape]:
    if height is None and width is None:
        return list(model.shapes)
    th, tw = model.shapes[-1]
    if height is None:
        assert width is not None
        height = round(th * width / tw)
    if width is None:
        width = round(tw * height / th)
    if height < MIN_SIDE or width < MIN_SIDE:
        raise BadInputError(
            f"output of {width}x{height} px is too small: both sides must be >= {MIN_SIDE} px"
        )
    if height * width > MAX_OUTPUT_PIXELS:
        raise BadInputError(
            f"output of {width}x{height} px is over the {MAX_OUTPUT_PIXELS / 1e6:.0f} MP limit: ask for less"
        )
    return retarget_shapes(model.shapes, height, width)


def sample_memory(model: TrainedModel, height: int, width: int) -> int:
    """About how many bytes sampling one `height` x `width` image takes at its peak on the CPU."""
    return SAMPLE_BYTES_PER_PIXEL_CHANNEL * model.model.nfc * height * width


def check_sample_memory(model: TrainedModel, height: int, width: int) -> None:
    """Refuse a sample that needs more memory than this machine has available, and say what size fits:
    running out of memory on the CPU is not an error Python sees, the system kills the process (the
    engine with it). On a GPU, running out is an error that says what to do (engine.errors)."""
    if model.device.type != "cpu":
        return
    need, available = sample_memory(model, height, width), available_memory()
    if available is None or need <= available:
        return
    scale = (available / need) ** 0.5
    raise BadInputError(
        f"a {width}x{height} sample needs about {_amount(need)} of memory and {_amount(available)} is "
        f"available: sample at most about {int(width * scale)}x{int(height * scale)} (a smaller image), or "
        "free memory by closing other programs"
    )


def _finite(image: np.ndarray, model: TrainedModel) -> np.ndarray:
    """The generator's output, refused when any value is NaN or infinite: written out, those would be
    black pixels and no error."""
    if not np.isfinite(image).all():
        raise ModelDamagedError(
            f"model {model.path or ''} produced non-finite pixels (its weights are damaged): train it again"
        )
    return image


def _amount(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


@torch.no_grad()
def sample(
    model: TrainedModel,
    n: int = 1,
    height: int | None = None,
    width: int | None = None,
    seed: int = 0,
    backend: Backend | None = None,
    on_sample: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """n random images (H x W x 3 float in [0, 1]); any width and height (retargeting).

    `on_sample(i)` is called before the i-th image is generated (a progress bar's hook)."""
    backend = backend or TorchBackend(model)
    if n < 1:
        raise BadInputError(f"--n must be at least 1 (got {n})")
    shapes = output_shapes(model, height, width)
    check_sample_memory(model, *shapes[-1])
    rng = torch.Generator().manual_seed(seed)
    if spec(model.model.mode).conditional:
        # Conditional models sample by reconstructing their training image with fresh noise above stage 0.
        base = model.fixed_noise[0]
        if shapes != list(model.shapes):
            base = to_tensor(resize(to_image(base), shapes[0]), model.device)
    out = []
    for i in range(n):
        if on_sample is not None:
            on_sample(i)
        inputs = _noise_inputs(model, shapes, rng)
        if spec(model.model.mode).conditional:
            inputs[0] = base
        out.append(_finite(to_image(backend.generate(inputs)), model))
    return out


MOTIONS = {"strong": 0, "medium": 1, "weak": 2}  # the first stage whose noise walks (the reference's 0-2)
WALK_PULL = 0.1  # the reference's alpha: each step's pull back towards the reconstruction's noise


@torch.no_grad()
def animate(
    model: TrainedModel,
    frames: int = 100,
    motion: str = "medium",
    momentum: float = 0.9,
    seed: int = 0,
    backend: Backend | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """Frames of a random walk in the generator's noise (ConSinGAN's animation GIFs): at each frame every
    stage's noise is WALK_PULL x the reconstruction's fixed noise + (1 - WALK_PULL) x (the previous frame's
    noise + `momentum` x its last step + (1 - momentum) x new noise). Stages below `motion`'s first
    (strong 0, medium 1, weak 2) keep their fixed noise: the coarser the first walking stage, the more
    the whole scene moves. Frames are H x W x 3 float in [0, 1], at the training image's size."""
    backend = backend or TorchBackend(model)
    if model.model.mode is not Mode.ANIMATION:
        raise IncompatibleModelError(
            f"this is a model for {model.model.mode.value}; animate needs a model trained with "
            "--mode animation"
        )
    if motion not in MOTIONS:
        raise BadInputError(f"motion must be one of {', '.join(MOTIONS)} (got {motion!r})")
    shapes = list(model.shapes)
    first = min(MOTIONS[motion], len(shapes) - 1)
    rng = torch.Generator().manual_seed(seed)
    fixed = [z.to(model.device) for z in model.fixed_noise]
    alpha, beta = WALK_PULL, momentum
    fresh = _noise_inputs(model, shapes, rng)
    before = [0.99 * f + 0.01 * r for f, r in zip(fixed, fresh, strict=True)]  # the reference's start
    older = fixed
    out = []
    for i in range(frames):
        if on_frame is not None:
            on_frame(i)
        fresh = _noise_inputs(model, shapes, rng)
        step = [beta * (b - o) + (1 - beta) * r for b, o, r in zip(before, older, fresh, strict=True)]
        current = [alpha * f + (1 - alpha) * (b + s) for f, b, s in zip(fixed, before, step, strict=True)]
        current = fixed[:first] + current[first:]
        older, before = before, current
        out.append(_finite(to_image(backend.generate(current)), model))
    return out


def feathered_mask(mask: np.ndarray, model_shape: Shape, dilation: int, sigma: float = 5.0) -> np.ndarray:
    """The reference's mask: dilated by a disk, Gaussian-blurred, rescaled to [0, 1].

    Radii are given at model resolution and scaled to the mask's own size. The blur runs on a grid about
    twice as fine as the model's (area-averaged, so thin selections keep weight) to stay fast on large images.
    """
    h, w = mask.shape
    scale = h / model_shape[0]
    binary = (mask > 0.5).astype(np.uint8)
    if not binary.any():
        return np.zeros_like(mask, dtype=np.float32)
    distance = cv2.distanceTransform(1 - binary, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    dilated = (distance <= dilation * scale).astype(np.float32)
    factor = max(1.0, scale / 2)
    small_shape = (max(1, round(h / factor)), max(1, round(w / factor)))
    small = cv2.resize(dilated, small_shape[::-1], interpolation=cv2.INTER_AREA) if factor > 1 else dilated
    blurred = cv2.GaussianBlur(small, (0, 0), sigma * scale / factor)
    soft = cv2.resize(blurred, (w, h), interpolation=cv2.INTER_LINEAR) if factor > 1 else blurred
    lo, hi = float(soft.min()), float(soft.max())
    if hi - lo < _FLAT:
        # The dilated selection covers the whole image: what is left of the blur is float noise from the
        # resampling (about 1e-7), which rescaling would blow up into stripes of 0s and 1s.
        return np.ones_like(mask, dtype=np.float32)
    soft = (soft - lo) / (hi - lo)
    # Below half an 8-bit level the blend is invisible: copy the input exactly there.
    soft[soft < _FLAT] = 0.0
    return soft.astype(np.float32)


@torch.no_grad()
def apply_to_selection(
    model: TrainedModel,
    picture: Picture,
    mask: np.ndarray,
    seed: int = 0,
    backend: Backend | None = None,
    color_match: float | None = None,
    keep_detail: float | None = None,
) -> Picture:
    """Harmonize or edit (by the model's mode) the masked part of a picture, at the picture's full size.

    color_match (0-1; default: the mode's) first moves the selection that share of the way towards its
    surroundings' colours, hue, saturation and contrast first, then lightness
    (engine.families.consingan.blend), at the model's resolution. keep_detail (0-1; default: the mode's)
    is how much of the selection's own fine detail stays on top of the generator's result (`with_detail`).
    """
    backend = backend or TorchBackend(model)
    mode_spec = spec(model.model.mode)
    if not mode_spec.conditional:
        raise IncompatibleModelError(
            f"this is a model for {model.model.mode.value}; harmonize and edit need a model trained with "
            "--mode harmonization or --mode editing"
        )
    if mask.shape != picture.shape:
        raise BadInputError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} px but the image is "
            f"{picture.shape[1]}x{picture.shape[0]} px: they must match"
        )
    color_match = mode_spec.color_match if color_match is None else float(color_match)
    if not 0.0 <= color_match <= 1.0:
        raise BadInputError(f"color match must be between 0 and 1 (got {color_match})")
    keep_detail = mode_spec.keep_detail if keep_detail is None else float(keep_detail)
    if not 0.0 <= keep_detail <= 1.0:
        raise BadInputError(f"keep detail must be between 0 and 1 (got {keep_detail})")
    h, w = picture.shape
    final = fit_to_max_size(h, w, max(model.shapes[-1]))
    shapes = output_shapes(model, *final)
    rng = torch.Generator().manual_seed(seed)
    inputs = _noise_inputs(model, shapes, rng)
    small = resize(picture.rgb, shapes[-1])
    matched = small
    if color_match > 0:
        inside = resize(mask.astype(np.float32), shapes[-1]) > 0.5
        matched = small + color_match_offset(small.clip(0, 1), inside, color_match)
    z0 = to_tensor(resize(matched, shapes[0]).clip(0, 1), model.device)
    if mode_spec.injected_noise:
        z0 = z0 + mode_spec.injected_noise * inputs[0]
    inputs[0] = z0
    generated = _finite(to_image(backend.generate(inputs)), model)
    if keep_detail > 0:
        generated = with_detail(generated, small, keep_detail)
    soft = feathered_mask(mask, shapes[-1], mode_spec.mask_dilation)
    # The change is taken against the input as it was, so it carries the colour match too.
    return carry_change(picture, small, generated, soft)


def with_detail(generated: np.ndarray, before: np.ndarray, amount: float, sigma: float = 1.0) -> np.ndarray:
    """The generator's result with `amount` of the input's fine detail (the input minus its Gaussian blur,
    `sigma` px) added: the change `generated - before` then leaves the input's own strokes in place,
    which the generator redraws as texture of its own but never where they were. The detail is the input's
    as it was, not after the colour match: the match changes the selection but not its surroundings, and
    the step at the selection's edge would come back as a drawn outline."""
    blurred = cv2.GaussianBlur(before, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return generated + amount * (before - blurred)


def carry_change(picture: Picture, before: np.ndarray, after: np.ndarray, soft: np.ndarray) -> Picture:
    """`picture` with the change `after - before`, made at a smaller size, upsampled to its size and added
    where the feathered mask `soft` is above 0, weighted by it; elsewhere the picture exactly."""
    h, w = picture.shape
    change = after - before
    if change.shape[:2] != (h, w):
        change = resize(change, (h, w))
    result = picture.rgb.copy()
    inside = soft > 0
    m = soft[inside][:, None]
    result[inside] = np.clip(picture.rgb[inside] + m * change[inside], 0.0, 1.0)
    return Picture(result, picture.alpha, picture.depth)
