"""SinGAN's settings, its tasks and presets, and its image pyramid.

`paper` is the public reference's defaults (tamarott/SinGAN, config.py): 5 convolutions of 3x3 per stage,
32 filters growing x2 every 4 stages up to 128, BatchNorm and LeakyReLU 0.2, WGAN-GP with a gradient
penalty weight of 0.1, reconstruction weight (alpha) 10, 3 critic and 3 generator steps per iteration,
Adam 5e-4 with beta1 0.5 in both networks, the rate cut to a tenth at iteration 1600 of 2000, noise amplitude
0.1 x the RMSE of the stage's reconstruction, images fitted to 250 px with a coarsest side of 25 px and
scale factor 0.75 between stages (8-10 stages). Animation trains generation with a coarsest side of 20
(reference animation.py); super-resolution trains with alpha 100 and a coarsest side of 18, at the step
of the upscaling, 2^(1/3) (reference SR.py, calc_init_scale); beyond the reference, its finest stage also
learns the pairs of the stages below it, in random flips and transposes (Config.sr_pairs).

`fast` is sized for a CPU (docs/benchmarks.md, "SinGAN"); `tiny` is for tests.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

from engine.errors import BadInputError
from engine.family import config_from_dict, config_to_dict
from engine.precision import Precision

# The family's name and its model format's version (store.py writes them), here, where nothing imports
# torch: the CLI lists every family at start.
NAME = "singan"
FAMILY_FORMAT_VERSION = 1

MAX_ITERS = 1_000_000
MAX_SIDE = 4096
SR_STEP = 2 ** (1 / 3)  # the upscaling of one super-resolution pass (reference: calc_init_scale's in_scale)
PAD = 5  # zeros around a stage's input: 5 unpadded 3x3 convolutions take 2 x 5 px off (reference: pad_noise)


class Task(str, enum.Enum):
    GENERATION = "generation"
    ANIMATION = "animation"
    SUPER_RESOLUTION = "super_resolution"


@dataclass(frozen=True)
class Config:
    task: Task = Task.GENERATION
    max_size: int = 250  # long side of the finest stage, px
    min_size: int = 25  # short side of the coarsest stage, px
    scale_factor: float = 0.75  # between stages, before it is fitted to the image
    nfc: int = 32  # filters at the coarsest stages (x2 every 4 stages, at most max_nfc)
    max_nfc: int = 128
    iters: int = 2000  # per stage
    lr: float = 5e-4
    beta1: float = 0.5
    lr_drop: float = 0.8  # the rate falls to a tenth at this fraction of a stage (1600 of 2000)
    d_steps: int = 3
    g_steps: int = 3
    gp_weight: float = 0.1
    rec_weight: float = 10.0  # alpha
    noise_amp: float = 0.1  # x the RMSE of the stage's reconstruction before it
    # Super-resolution's finest stage, beyond the reference (docs/benchmarks.md, "Super-resolution"): it
    # also reconstructs the pairs of this many stages below it (the real image one stage down, enlarged ->
    # the real image), each pair in a random one of the square's 8 symmetries (flips and a transpose) when
    # sr_symmetries, so that it learns to sharpen rather than to redraw its one image. 0 and False: the
    # reference's training.
    sr_pairs: int = 0
    sr_symmetries: bool = False
    seed: int = 0
    precision: Precision = Precision.FP32
    checkpoint_every_s: float = 120.0

    def __post_init__(self) -> None:
        if not 16 <= self.max_size <= MAX_SIDE:
            raise BadInputError(f"--max-size must be between 16 and {MAX_SIDE} px (got {self.max_size})")
        if not 1 <= self.iters <= MAX_ITERS:
            raise BadInputError(f"--iters must be between 1 and {MAX_ITERS} (got {self.iters})")
        if not 2 * PAD + 1 <= self.min_size <= self.max_size:  # the critic's 5 unpadded convolutions
            raise BadInputError(f"min_size must be {2 * PAD + 1} px to max_size (got {self.min_size})")
        if not 0 <= self.sr_pairs <= 16:
            raise BadInputError(f"sr_pairs must be between 0 and 16 (got {self.sr_pairs})")
        if not 0.3 <= self.scale_factor < 1:
            raise BadInputError(f"scale_factor must be in [0.3, 1) (got {self.scale_factor})")

    def stage_nfc(self, stage: int) -> int:
        return min(self.nfc * 2 ** (stage // 4), self.max_nfc)

    def to_dict(self) -> dict[str, Any]:
        data = config_to_dict(self)
        # Left out at the reference's values: the settings are part of a kept model's key (serve.registry
        # training_key), and generation and animation models kept before these fields existed are still
        # the models those settings train.
        for name in ("sr_pairs", "sr_symmetries"):
            if not data[name]:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**config_from_dict(cls, data, {"precision": Precision, "task": Task}))


def _paper(task: Task) -> Config:
    if task is Task.ANIMATION:
        return Config(task, min_size=20)
    if task is Task.SUPER_RESOLUTION:
        # max_size: the largest image it learns (at its own size; the reference fits it to 250 px and
        # upscales that)
        # sr_pairs and sr_symmetries: not the reference's, measured (docs/benchmarks.md): without them the
        # upscaled image came out 3-5 dB below bicubic, its edges doubled and its grass streaked
        return Config(
            task, max_size=500, min_size=18, scale_factor=1 / SR_STEP, rec_weight=100.0, sr_pairs=3,
            sr_symmetries=True,
        )  # fmt: skip
    return Config(task)


def _fast(task: Task) -> Config:
    # For a CPU (docs/benchmarks.md, "SinGAN"): the reference's networks at their first width (32 filters,
    # not growing), 300 iterations a stage, a finest stage of 200 px. Super-resolution learns a window of
    # at most 96 px of the image (its most detailed): measured at x4, 25-36% less training time than the
    # whole 143-162 px image, and within 0.1 dB of it or better (docs/benchmarks.md, "Super-resolution").
    size = 96 if task is Task.SUPER_RESOLUTION else 200
    return dataclasses.replace(_paper(task), iters=300, max_nfc=32, max_size=size)


def _tiny(task: Task) -> Config:
    size = 64 if task is Task.SUPER_RESOLUTION else 40
    return dataclasses.replace(
        _paper(task), max_size=size, min_size=16, nfc=8, max_nfc=8, iters=6, d_steps=1, g_steps=1,
        checkpoint_every_s=1e9,
    )  # fmt: skip


PRESETS = {"paper": _paper, "fast": _fast, "tiny": _tiny}


def resolve(
    task: str,
    device: Any,
    preset: str | None = None,
    precision: str | None = None,
    *,
    iters: int | None = None,
    max_size: int | None = None,
    seed: int | None = None,
) -> tuple[str, Config]:
    """The preset (default: `paper` on a GPU, `fast` on a CPU) with the given overrides."""
    name = preset or ("paper" if getattr(device, "type", "cpu") == "cuda" else "fast")
    config = PRESETS[name](Task(task))
    changes: dict[str, Any] = {k: v for k, v in {"iters": iters, "seed": seed}.items() if v is not None}
    if max_size is not None:
        changes.update(max_size=max_size, min_size=min(config.min_size, max_size))
    # fp32 unless asked: the finest stages' noise amplitudes (about 0.01) are a few bf16 steps of the image
    # they are added to, and the reference trains in fp32; the networks are small.
    chosen = Precision(precision) if precision else Precision.FP32
    return name, dataclasses.replace(config, precision=chosen, **changes)


# ---- the pyramid ----

Shape = tuple[int, int]  # (height, width)


def stage_shapes(height: int, width: int, config: Config) -> list[Shape]:
    """The training pyramid, coarsest first, as the reference builds it (adjust_scales2image, and for
    super-resolution adjust_scales2image_SR): the image fitted to max_size, then stages at a factor near
    scale_factor that puts the short side at min_size. Super-resolution learns the image at its own size."""
    c = config
    short, long = min(height, width), max(height, width)
    sr = c.task is Task.SUPER_RESOLUTION
    if sr and long > c.max_size:  # (training.train gives it a crop of the image)
        raise BadInputError(
            f"super-resolution learns an image at its own size, at most {c.max_size} px on the long side "
            f"(this one is {width}x{height})"
        )
    fit = min(c.max_size / long, 1.0)
    final = (math.ceil(height * fit - 1e-9), math.ceil(width * fit - 1e-9))
    if min(final) < c.min_size:
        raise BadInputError(
            f"image of {width}x{height} px is too small or too thin: its short side must be at least "
            f"{c.min_size} px" + (f" once its long side is fitted to {c.max_size} px" if fit < 1 else "")
        )
    log_sf = math.log(c.scale_factor)
    # The reference rounds the stage count up, and down for super-resolution.
    whole = math.floor if sr else math.ceil
    scales = whole(math.log(c.min_size / short) / log_sf - 1e-9) + 1
    stop = max(1, scales - whole(math.log(min(c.max_size, long) / long) / log_sf - 1e-9))
    factor = (c.min_size / min(final)) ** (1 / stop)
    shapes = [
        (math.ceil(final[0] * factor ** (stop - i) - 1e-9), math.ceil(final[1] * factor ** (stop - i) - 1e-9))
        for i in range(stop)
    ]
    return [*shapes, final]
