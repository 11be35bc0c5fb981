"""The five ConSinGAN tasks as an enum, each mapped to one spec that the rest of the code reads."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Mode(str, enum.Enum):
    GENERATION = "generation"
    RETARGET = "retarget"
    HARMONIZATION = "harmonization"
    EDITING = "editing"
    # Generation whose coarsest stage learns to reconstruct the image from fixed random noise instead of the
    # image itself (the reference's `animation` mode), so a random walk in the noise moves the whole scene.
    ANIMATION = "animation"


class Pyramid(str, enum.Enum):
    # SinGAN's geometric scales (used by ConSinGAN for harmonization only)...
    GEOMETRIC = "geometric"
    # ...and ConSinGAN's rescaling that puts more stages at the fine end.
    RESCALED = "rescaled"


class StageInput(str, enum.Enum):
    """What the coarsest stage sees while training with random inputs."""

    NOISE = "noise"  # unconditional generation: Gaussian noise
    AUGMENTED = "augmented"  # harmonization: colour/noise transforms plus cut-out holes
    SHUFFLED = "shuffled"  # editing: tiles moved around, plus a little noise


@dataclass(frozen=True)
class ModeSpec:
    pyramid: Pyramid
    stage_input: StageInput
    # Generation pads less inside each stage and instead feeds a larger, upsampled map: the reference does
    # this to get more diverse image borders. The other modes zero-pad each stage ("padding mode"), which is
    # what lets retargeting produce any output size.
    border_upsampling: bool
    # Std of the noise added to an injected image (editing) so that the model fills in rough edits.
    injected_noise: float
    # Radius (px at model resolution) by which the user's mask is dilated before feathering.
    mask_dilation: int
    conditional: bool  # the coarsest stage takes an image at apply time
    # Default colour match: how far the selection moves towards its surroundings' colours before the
    # generator runs (blend.color_match_offset; 0 = not at all, 0.5 = their hue, saturation and
    # contrast, 1 = their lightness too, half Poisson's and half the band around the selection's, the
    # mean moved by at most 15 L*). Harmonization: 1, measured in docs/benchmarks.md ("Harmonization
    # against the ring transfer"): the lowest error on both case sets; 0.5 keeps an object's own light.
    # Editing: none, the user's colours are the edit.
    color_match: float = 0.0
    # How much of the input's own fine detail (its difference from a 1 px Gaussian blur at model
    # resolution) is added back to the generator's result before the change is carried to full size
    # (apply.with_detail): the generator redraws texture but not a drawing's own strokes, and the change
    # would otherwise subtract them. Harmonization: measured in docs/benchmarks.md. Editing: none, the
    # rough edit's own edges are what the model is there to redraw.
    keep_detail: float = 0.0


SPECS: dict[Mode, ModeSpec] = {
    Mode.GENERATION: ModeSpec(Pyramid.RESCALED, StageInput.NOISE, True, 0.0, 0, False),
    Mode.RETARGET: ModeSpec(Pyramid.RESCALED, StageInput.NOISE, False, 0.0, 0, False),
    Mode.HARMONIZATION: ModeSpec(
        Pyramid.GEOMETRIC, StageInput.AUGMENTED, False, 0.0, 7, True, color_match=1.0, keep_detail=0.75
    ),
    Mode.EDITING: ModeSpec(Pyramid.RESCALED, StageInput.SHUFFLED, False, 0.1, 20, True),
    Mode.ANIMATION: ModeSpec(Pyramid.RESCALED, StageInput.NOISE, True, 0.0, 0, False),
}


def spec(mode: Mode) -> ModeSpec:
    return SPECS[Mode(mode)]
