"""The set generator's settings and presets.

`paper` is the system the issue describes (a small SAGAN that learned new avatar icons from about a hundred
drawn by one artist), with its architecture from the public SAGAN port (heykeetae/Self-Attention-GAN,
sagan_models.py: 64 filters, a 128-value latent, BatchNorm and ReLU in the generator, LeakyReLU 0.1 in the
critic, self-attention after the generator's 3rd and 4th transposed convolutions and between the critic's
3rd/4th and 4th/5th convolutions) and that system's training: hinge loss, Adam (0.0, 0.9) at 1e-4 for the
generator and 4e-4 for the critic, mini-batches of 5. Neither gives a run length for a 100-image set:
`paper` trains 100,000 iterations (ours). What later work adds is off in `paper` and measured one by one
(docs/benchmarks.md, "Set generator"): spectral normalisation in both networks (the SAGAN paper), an
exponential moving average of the generator's weights for sampling, and differentiable augmentation for
the critic (Zhao et al. 2020).

`fast` is sized for a CPU (7000 iterations: about 24 min with the calibration on 2 cores with bf16 kernels,
about 30-40 min without, not measured): the paper's 64 filters, with spectral normalisation and DiffAugment,
which the measurements kept (the reference's recipe collapsed to one face); resize-convolution up-sampling,
because the transposed convolutions drew a checkerboard over a quarter of the faces; and the moving average of
the generator, which made every score worse at 3000 iterations but gave the best distance to the held-out set
at 6000. Its decay was 0.999 until 2026-12-07, then 0.9995 (a half-life of about 1400 iterations
against 700): 8-16% nearer the held-out set at 7000 in each of three runs (two seeds of the round faces, one
of all 128), with about as many broken faces and a little less colour; behind through 5000 iterations, so a
run shortened with `--iters` and the previews during training drew older weights. Since 2026-12-08 the
average's half-life grows with the run (`ema_rampup=0.3`: three tenths of the iterations so far, up to
0.9998's 3500): the same faces at 7000, 3% farther from the held-out set there than 0.9995 (0.071 against
0.069 in two runs), and 29-59% nearer at 1000-3000 iterations: previews and shortened runs draw faces.
Until 2026-12-07 it had 32 filters and 12,000 iterations, as long: the 64-filter networks cost 1.55-1.7x
the time an iteration, and in the same minutes came nearer the held-out set (patch distance 0.074 / 0.103 on
two seeds against 0.130 / 0.118) and drew more readable faces (30 of 64 against 22).
Not taken: mini-batches of 20 (better only after 30 min), batch 5 run to 20,000 iterations (barely better than
12,000), sampling nearer the latent's middle (worse) and LeCam's regulariser at 0.3 (`lecam`: farther from the
held-out set, as many broken samples or more, two seeds). Since 2026-12-07 its generator normalises each image
alone (`g_norm="pixel"`, ProGAN's PixelNorm) instead of with BatchNorm over the mini-batch: fewer broken
samples in each of four runs (two seeds on two sets), nearer the held-out set in three, less colour;
`--best-of` then helps only the eye, on one-subject sets, at the cost of colour (docs/benchmarks.md, "Set
generator"). Models stored before keep BatchNorm. Tried with PixelNorm and not taken (round faces, one seed
each): FastGAN's self-supervised critic (`d_recon` at 1: about as near the held-out set, more smeared faces)
and DiffAugment without its cut-out (farther, about as many broken faces).
Every preset ends training with `calibrate` critic steps against the saved sampler (1000; 3 in `tiny`),
for `engine sample --best-of` (docs/benchmarks.md, "Keeping the best of several samples").
`tiny` is for tests (every option on, so each path runs; LeCam from its second iteration, R1 every other
step, the moving average's ramp; BatchNorm, so that the reference's standing statistics run too: PixelNorm
has tests of its own, as has `d_recon`, off).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine.errors import BadInputError
from engine.family import config_from_dict, config_to_dict
from engine.precision import Precision

# The family's name and its model format's version (store.py writes them), here, where nothing imports
# torch: the CLI lists every family at start.
NAME = "sagan"
FAMILY_FORMAT_VERSION = 1
TASK = "set"

SIZES = (64, 128)
MAX_ITERS = 10_000_000
AUGMENTS = ("color", "translation", "cutout")
UPSAMPLES = ("transposed", "resize")  # the generator's doubling layers (networks.py)
NORMS = ("batch", "pixel")  # the generator's normalisation (networks.py)


@dataclass(frozen=True)
class Config:
    size: int = 64  # px, square
    z_dim: int = 128  # latent values
    g_dim: int = 64  # generator filters at its finest layer (x8 at its coarsest)
    d_dim: int = 64  # critic filters at its finest layer
    iters: int = 100_000
    batch: int = 5
    g_lr: float = 1e-4
    d_lr: float = 4e-4
    beta1: float = 0.0
    beta2: float = 0.9
    spectral_norm: bool = False  # in both networks (SAGAN paper)
    ema: float = 0.0  # decay of the moving average of the generator's weights; 0: sample the last weights
    ema_rampup: float = 0.0  # the average's half-life grows as this fraction of the iterations so far, up to
    # ema's (StyleGAN2-ADA's ema_rampup), so early weights leave it sooner; 0: ema's from the first step
    augment: str = ""  # DiffAugment policy for the critic: comma-separated of AUGMENTS; "": none
    flip: bool = False  # mirror real images at random
    upsample: str = "transposed"  # the generator's doubling layers: "transposed" (reference) or "resize"
    g_norm: str = "batch"  # the generator's normalisation: "batch" (reference) or "pixel" (image by image)
    standing_batches: int = 200  # mini-batches that measure the averaged generator's BatchNorm statistics
    calibrate: int = 1000  # critic steps against the sampler after training, for `sample --best-of`
    lecam: float = 0.0  # weight of the LeCam regularisation of the critic (Tseng et al. 2021); 0: off
    lecam_start: int = 1000  # iterations before it applies (its moving means follow the scores until then)
    d_recon: float = 0.0  # weight of the critic's drawing back of real images (FastGAN's decoder); 0: off
    r1: float = 0.0  # gamma of R1, a penalty on the critic's gradient at the real images (2018); 0: off
    r1_every: int = 16  # critic steps between R1 penalties, each weighted by this (lazy, as in StyleGAN2)
    seed: int = 0
    precision: Precision = Precision.FP32
    checkpoint_every_s: float = 120.0

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise BadInputError(f"--size must be 64 or 128 (got {self.size})")
        for name in ("z_dim", "g_dim", "d_dim", "batch", "standing_batches"):
            if not 1 <= getattr(self, name) <= 4096:
                raise BadInputError(f"{name} must be 1 to 4096 (got {getattr(self, name)})")
        if not 1 <= self.iters <= MAX_ITERS:
            raise BadInputError(f"--iters must be 1 to {MAX_ITERS} (got {self.iters})")
        if not 0 <= self.calibrate <= MAX_ITERS:
            raise BadInputError(f"calibrate must be 0 to {MAX_ITERS} (got {self.calibrate})")
        if not 0.0 <= self.lecam <= 100.0:
            raise BadInputError(f"lecam must be 0 to 100 (got {self.lecam})")
        if not 0.0 <= self.d_recon <= 100.0:
            raise BadInputError(f"d_recon must be 0 to 100 (got {self.d_recon})")
        if not 0.0 <= self.r1 <= 1000.0:
            raise BadInputError(f"r1 must be 0 to 1000 (got {self.r1})")
        if not 1 <= self.r1_every <= 1000:
            raise BadInputError(f"r1_every must be 1 to 1000 (got {self.r1_every})")
        if not 0 <= self.lecam_start <= MAX_ITERS:
            raise BadInputError(f"lecam_start must be 0 to {MAX_ITERS} (got {self.lecam_start})")
        if not 0.0 <= self.ema < 1.0:
            raise BadInputError(f"ema must be in [0, 1) (got {self.ema})")
        if not 0.0 <= self.ema_rampup <= 1.0:
            raise BadInputError(f"ema_rampup must be 0 to 1 (got {self.ema_rampup})")
        if self.ema_rampup and not self.ema:
            raise BadInputError("ema_rampup ramps the moving average up to ema's decay: set ema too")
        if self.upsample not in UPSAMPLES:
            raise BadInputError(f"upsample must be one of {', '.join(UPSAMPLES)} (got {self.upsample!r})")
        if self.g_norm not in NORMS:
            raise BadInputError(f"g_norm must be one of {', '.join(NORMS)} (got {self.g_norm!r})")
        unknown = [p for p in self.policy if p not in AUGMENTS]
        if unknown:
            raise BadInputError(f"augment {unknown[0]!r} is not one of {', '.join(AUGMENTS)}")

    @property
    def policy(self) -> tuple[str, ...]:
        return tuple(p for p in self.augment.split(",") if p)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**config_from_dict(cls, data, {"precision": Precision}))


PRESETS = {
    "paper": Config(),
    "fast": Config(
        iters=7000, spectral_norm=True, ema=0.9998, ema_rampup=0.3, augment="color,translation,cutout",
        flip=True, upsample="resize", g_norm="pixel",
    ),
    "tiny": Config(
        z_dim=8, g_dim=4, d_dim=4, iters=3, batch=2, spectral_norm=True, ema=0.9, ema_rampup=0.5,
        augment="color,translation,cutout", flip=True, standing_batches=4, checkpoint_every_s=0.0,
        upsample="resize", calibrate=3, lecam=0.3, lecam_start=1, r1=1.0, r1_every=2,
    ),
}  # fmt: skip


def resolve(
    device: Any,
    preset: str | None = None,
    precision: str | None = None,
    *,
    size: int | None = None,
    iters: int | None = None,
    seed: int | None = None,
) -> tuple[str, Config]:
    """The preset (default: `paper` on a GPU, `fast` on a CPU) with the given overrides."""
    from engine.device import default_precision

    name = preset or ("paper" if getattr(device, "type", "cpu") == "cuda" else "fast")
    config = PRESETS[name]
    changes: dict[str, Any] = {
        k: v for k, v in {"size": size, "iters": iters, "seed": seed}.items() if v is not None
    }
    chosen = Precision(precision) if precision else default_precision(device, config.g_dim)
    return name, dataclasses.replace(config, precision=chosen, **changes)
