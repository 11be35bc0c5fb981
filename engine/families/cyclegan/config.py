"""CycleGAN's settings and presets. `paper` is the reference's defaults (junyanz/pytorch-CycleGAN-and-pix2pix,
options/base_options.py and train_options.py): 64 generator and critic filters, 9 residual blocks, a
3-layer PatchGAN, images loaded at 286 px and cropped to 256, 100 epochs at 2e-4 then 100 decaying to 0,
Adam beta1 0.5, a pool of 50 generated images, cycle weight 10, identity weight 0.5 (x 10), batch 1.

`fast` and `tiny` are this engine's: smaller networks and crops, short runs, and crops sampled at several
scales so that a domain of a few large images still gives many different training samples. `fast` is sized
by measurement (docs/benchmarks.md, "CycleGAN re-styling"): 1920 iterations of a 32-filter, 6-block
generator on 128 px crops, about 35-40 minutes on a 2-core CPU; its generators go up by bilinear resize and
convolution, because after so short a run the reference's transposed convolutions leave a checkerboard
over the whole picture. The quality lost against `paper` is not measured: `paper` (200 epochs) takes days
on a CPU, and no GPU was lent to the sessions that built this.
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
NAME = "cyclegan"
FAMILY_FORMAT_VERSION = 1
TASK = "restyle"

MAX_EPOCHS = 10_000
MAX_CROP = 1024


@dataclass(frozen=True)
class Config:
    ngf: int = 64  # generator filters
    ndf: int = 64  # critic filters
    blocks: int = 9  # residual blocks
    critic_layers: int = 3  # 70x70 PatchGAN
    upsample: str = "transpose"  # the generator's way up: "transpose" (the reference) or "resize"
    crop: int = 256  # training crop, px (a multiple of 4)
    # The short side a sampled image is resized to before the crop, as multiples of the crop: one value
    # (the reference: 286 / 256) or a range, drawn from per sample (never past the image's own size).
    scale_min: float = 286 / 256
    scale_max: float = 286 / 256
    epochs: int = 100  # at the constant rate
    decay_epochs: int = 100  # then decaying linearly to 0
    epoch_size: int = 0  # samples per epoch; 0: the larger folder's image count (the reference)
    pool: int = 50  # generated images the critics also see
    lr: float = 2e-4
    beta1: float = 0.5
    cycle_weight: float = 10.0
    identity_weight: float = 0.5  # times cycle_weight
    seed: int = 0
    precision: Precision = Precision.FP32
    checkpoint_every_s: float = 120.0

    def __post_init__(self) -> None:
        for name in ("ngf", "ndf", "blocks", "critic_layers", "epochs", "pool"):
            if not 1 <= getattr(self, name) <= 100_000:
                raise BadInputError(f"{name} must be at least 1 (got {getattr(self, name)})")
        if not 16 <= self.crop <= MAX_CROP or self.crop % 4:
            raise BadInputError(f"the crop must be a multiple of 4, 16 to {MAX_CROP} px (got {self.crop})")
        if self.upsample not in ("transpose", "resize"):
            raise BadInputError(f"upsample must be transpose or resize (got {self.upsample!r})")
        if not 1.0 <= self.scale_min <= self.scale_max:
            raise BadInputError("scale_min must be at least 1 and at most scale_max")

    @property
    def total_epochs(self) -> int:
        return self.epochs + self.decay_epochs

    def lr_factor(self, epoch: int) -> float:
        """The reference's linear rule: 1 for `epochs` epochs, then down to 1/(decay+1) in the last one."""
        return 1.0 - max(0, epoch + 1 - self.epochs) / float(self.decay_epochs + 1)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        return cls(**config_from_dict(cls, data, {"precision": Precision}))


PRESETS = {
    "paper": Config(),
    "fast": Config(
        ngf=32, ndf=32, blocks=6, upsample="resize", crop=128, scale_min=1.0, scale_max=4.0, epochs=5,
        decay_epochs=5, epoch_size=192, checkpoint_every_s=120.0,
    ),
    "tiny": Config(
        ngf=8, ndf=8, blocks=1, upsample="resize", critic_layers=2, crop=32, scale_min=1.0, scale_max=2.0,
        epochs=1, decay_epochs=1, epoch_size=3, pool=4, checkpoint_every_s=0.0,
    ),
}  # fmt: skip


def resolve(
    device: Any,
    preset: str | None = None,
    precision: str | None = None,
    *,
    epochs: int | None = None,
    crop: int | None = None,
    seed: int | None = None,
) -> tuple[str, Config]:
    """The preset (default: `paper` on a GPU, `fast` on a CPU) with the given overrides; `epochs` sets both
    halves, as the reference's --n_epochs and --n_epochs_decay usually are."""
    from engine.device import default_precision

    name = preset or ("paper" if getattr(device, "type", "cpu") == "cuda" else "fast")
    config = PRESETS[name]
    changes: dict[str, Any] = {}
    if epochs is not None:
        changes.update(epochs=epochs, decay_epochs=epochs)
    if crop is not None:
        changes["crop"] = crop
    if seed is not None:
        changes["seed"] = seed
    chosen = Precision(precision) if precision else default_precision(device, config.ngf)
    return name, dataclasses.replace(config, precision=chosen, **changes)
