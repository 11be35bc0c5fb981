"""What the Krita and GIMP plugins share, editor-free: editor bytes -> requests, and results -> layer bytes.

A plugin reads the editor into a `Canvas` (raw bytes in the editor's own channel order), asks this module for
the request, and writes the `LayerPatch` it gets back. Keeping this here means every rule about selections,
backgrounds and result placement is tested without Krita or GIMP.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from editor_bridge import frames
from editor_bridge.errors import BridgeError, ImageError
from editor_bridge.protocol import (
    BBox,
    BitDepth,
    ChannelOrder,
    EditRequest,
    HarmonizeRequest,
    ImageDescriptor,
    Mode,
    Preset,
    ResultReply,
    SampleRequest,
    TrainOptions,
    TrainRequest,
)
from editor_bridge.wire import Message


class CanvasError(BridgeError):
    """The editor's image cannot be sent as it is; the message tells the artist what to change."""


class UnsupportedColorDepth(CanvasError):
    pass


class EmptySelection(CanvasError):
    pass


class Editor(str, enum.Enum):
    KRITA = "krita"
    GIMP = "gimp"

    @property
    def channel_order(self) -> ChannelOrder:
        # Krita's 8-bit RGBA layers are B,G,R,A in memory; GIMP hands out whatever Babl format is asked for.
        return ChannelOrder.BGRA if self is Editor.KRITA else ChannelOrder.RGBA

    @property
    def convert_hint(self) -> str:
        if self is Editor.KRITA:
            return "convert it with Image > Convert Image Color Space... to RGB/Alpha"
        return "convert it with Image > Mode > RGB"


class Operation(str, enum.Enum):
    HARMONIZE = "harmonize"
    EDIT = "edit"
    VARIATION = "variation"
    # The same work with a newly trained model (another seed), which later runs then reuse: the way out
    # when the stored model of a painting paints blotches (docs/artists.md).
    RETRAIN_HARMONIZE = "retrain-harmonize"
    RETRAIN_EDIT = "retrain-edit"

    @property
    def label(self) -> str:
        return _OPERATION_SPECS[self].label

    @property
    def layer_name(self) -> str:
        return _OPERATION_SPECS[self].layer_name

    @property
    def mode(self) -> Mode:
        return _OPERATION_SPECS[self].mode

    @property
    def retrain(self) -> bool:
        return _OPERATION_SPECS[self].retrain


@dataclass(frozen=True)
class _OperationSpec:
    label: str  # the menu entry; no label is the start of another (GIMP's action search picks by prefix)
    layer_name: str  # the new layer's name
    mode: Mode  # the kind of model it needs
    retrain: bool = False  # train a new model even when one is stored for this painting


_OPERATION_SPECS: dict[Operation, _OperationSpec] = {
    Operation.HARMONIZE: _OperationSpec("Harmonize selection", "Harmonized", Mode.HARMONIZATION),
    Operation.EDIT: _OperationSpec("Edit selection", "Edited", Mode.EDITING),
    Operation.VARIATION: _OperationSpec("Generate variation", "Variation", Mode.GENERATION),
    Operation.RETRAIN_HARMONIZE: _OperationSpec(
        "Retrain and harmonize selection", "Harmonized", Mode.HARMONIZATION, retrain=True
    ),
    Operation.RETRAIN_EDIT: _OperationSpec(
        "Retrain and edit selection", "Edited", Mode.EDITING, retrain=True
    ),
}


def check_canvas_unchanged(before: tuple[int, int], now: tuple[int, int]) -> None:
    """Refuse to place a result on a canvas (width, height) resized or cropped while the engine worked: the
    result would land in the wrong place."""
    if before != now:
        raise CanvasError(
            f"the canvas changed size while the engine worked ({before[0]}x{before[1]} to "
            f"{now[0]}x{now[1]}), so the result would land in the wrong place; it was not added. Run it "
            "again (the painting's model is kept, so it takes seconds)"
        )


BITS = (8, 16)  # the integer depths a Canvas carries
# Depths the editor converts to and from 16-bit integers for the engine (Krita: F16, F32; GIMP: half, float,
# double and 32-bit integer precisions, linear or not).
WIDE_DEPTHS = ("F16", "F32", "HALF", "FLOAT", "DOUBLE", "U32")


def check_color_depth(editor: Editor, color_model: str, depth: str) -> int:
    """The bits per channel (8 or 16) of the Canvas for an RGB(A) image at this depth; anything but RGB
    is refused. `depth` is the editor's own name for it (Krita: U8, U16, F16, F32; GIMP: a Gimp.Precision
    name such as U16_NON_LINEAR or FLOAT_LINEAR).

    A floating-point (or 32-bit integer) image travels as 16-bit integers with the sRGB tone curve (GIMP:
    in the image's own primaries; Krita: in sRGB), converted by the editor's colour management both ways:
    the GAN and the colour match work on display-referred values, not linear light. Only the new layer is
    made from them: the artist's layers keep their float values, and inside the selection values over
    white (and, in Krita, colours outside sRGB) come back at the edge of that range."""
    name = depth.upper().removeprefix("PRECISION_")
    bits = next((b for b in BITS if name == f"U{b}" or name.startswith(f"U{b}_")), None)
    if bits is None and any(name == wide or name.startswith(f"{wide}_") for wide in WIDE_DEPTHS):
        bits = 16
    if color_model.upper() not in {"RGBA", "RGB"} or bits is None:
        raise UnsupportedColorDepth(
            f"this image is {color_model} {depth}; the engine works on RGB images: {editor.convert_hint}"
            ", or work on a converted copy"
        )
    return bits


@dataclass(frozen=True)
class Canvas:
    """The editor's state as raw bytes, all canvas-sized, rows top down.

    composite: the image as the editor shows it; background: the same without the active layer (None when it
    could not be read); layer: the active layer's own pixels; selection: 1 byte a pixel, None when nothing is
    selected (then the active layer's opaque pixels are the region). depth: bits per channel of the three
    images (8, or 16 in the machine's byte order); the result comes back at the same depth.
    """

    editor: Editor
    width: int
    height: int
    composite: bytes
    layer: bytes
    background: bytes | None = None
    selection: bytes | None = None
    name: str = ""
    depth: int = 8

    def __post_init__(self) -> None:
        if self.depth not in BITS:
            raise ImageError(f"a canvas holds 8- or 16-bit channels, not {self.depth}-bit")
        size = self.width * self.height
        pixel = 4 * self.depth // 8
        for field_name, per_pixel in (
            ("composite", pixel),
            ("layer", pixel),
            ("background", pixel),
            ("selection", 1),
        ):
            data = getattr(self, field_name)
            if data is not None and len(data) != size * per_pixel:
                raise ImageError(
                    f"{field_name} has {len(data)} bytes, a {self.width}x{self.height} canvas needs "
                    f"{size * per_pixel}; read the whole canvas at {self.depth if per_pixel > 1 else 8} bits"
                )

    @property
    def channel_order(self) -> ChannelOrder:
        return self.editor.channel_order

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.depth == 8 else np.uint16)  # the editors hand out native order

    def pixels(self, data: bytes) -> np.ndarray:
        return np.frombuffer(data, self.dtype).reshape(self.height, self.width, 4)

    def alpha(self, data: bytes) -> np.ndarray:
        """The alpha channel of one of the canvas's images, as 0-255 whatever the depth."""
        alpha = self.pixels(data)[..., 3]
        return alpha if self.depth == 8 else _to_depth(alpha, BitDepth.U16, 8)

    def mask(self) -> np.ndarray:
        """Where the work applies: the selection, else the active layer's alpha (0-255)."""
        if self.selection is not None:
            return np.frombuffer(self.selection, np.uint8).reshape(self.height, self.width)
        return self.alpha(self.layer)

    def training_image(self) -> bytes:
        """The background to learn from; the composite when the active layer has nothing below it, because
        an empty background would teach the model nothing."""
        if self.background is None or not self.pixels(self.background)[..., 3].any():
            return self.composite
        return self.background


HIDDEN_LAYER = "the active layer is hidden: show it (its eye in the Layers panel) or make another one active"


def check_region_on_layer(canvas: Canvas, mask: np.ndarray) -> None:
    """Harmonization blends the active layer's object into the picture. Refuse a selection that misses the
    object entirely (left behind when the pasted layer was moved), and an opaque active layer with nothing
    selected (the whole canvas would be repainted)."""
    alpha = canvas.pixels(canvas.layer)[..., 3]
    if canvas.selection is not None and not alpha[mask > 0].any():
        raise CanvasError(
            "the selection does not touch the active layer (was the layer moved after selecting?): select "
            "the pasted object again, or make the pasted layer active"
        )
    if canvas.selection is None and alpha.all():
        raise CanvasError(
            "nothing is selected and the active layer covers the whole canvas: select the object to "
            "harmonize, or make the pasted layer active"
        )


def mask_bbox(mask: np.ndarray) -> BBox:
    """The bounding box of the nonzero mask pixels; EmptySelection when there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise EmptySelection(
            "nothing to work on: select the object (or make the pasted layer active) and try again"
        )
    return BBox(x=int(cols[0]), y=int(rows[0]), w=int(cols[-1] - cols[0] + 1), h=int(rows[-1] - rows[0] + 1))


@dataclass(frozen=True)
class Job:
    """A request ready to send: its content, its frames, and the region the result will be limited to."""

    request: Any
    buffers: list[Any]
    bbox: BBox


def _train_options(preset: Preset | str | None) -> TrainOptions | None:
    return TrainOptions(preset=Preset(preset)) if preset else None


def apply_job(
    op: Operation,
    canvas: Canvas,
    *,
    preset: Preset | str | None = None,
    seed: int | None = None,
    color_match: float | None = None,
    finetune_iters: int | None = None,
) -> Job:
    """A harmonize or edit request: composite + mask, training on the background if no model exists yet.
    color_match: 0-1, or None for the engine's default (docs/engine.md). finetune_iters: fine-tune the model
    on this composite first (a new model; minutes on a CPU), or None."""
    if op is Operation.VARIATION:
        raise ValueError("variation needs a generation model: use train_job and sample_job")
    mask = canvas.mask()
    bbox = mask_bbox(mask)
    if op.mode is Mode.HARMONIZATION:
        check_region_on_layer(canvas, mask)
    buffers: list[Any] = []
    order = canvas.channel_order
    image = frames.attach(buffers, canvas.pixels(canvas.composite), order, bbox)
    mask_desc = frames.attach(buffers, mask, ChannelOrder.GRAY, bbox)
    training = canvas.training_image()
    if training is canvas.composite:
        background = image  # the protocol lets both refer to one frame: no second copy on the wire
    else:
        background = frames.attach(buffers, canvas.pixels(training), order)
    cls = HarmonizeRequest if op.mode is Mode.HARMONIZATION else EditRequest
    request = cls(
        image=image,
        mask=mask_desc,
        train_if_missing=True,
        background=background,
        train=_train_options(preset),
        seed=seed,
        color_match=color_match,
        retrain=op.retrain,
        finetune_iters=finetune_iters,
        crop_to_bbox=True,  # the new layer is limited to the selection: only that region comes back
    )
    return Job(request, buffers, bbox)


def is_result_name(name: str, base: str) -> bool:
    """Whether a layer is one the plugins added as `base` ("Variation"): the name itself, or the unique
    names the editors make of it (Krita's plugin: "Variation 2"; GIMP: "Variation #1")."""
    return re.fullmatch(re.escape(base) + r"( #?\d+)?", name) is not None


def variation_model_name(canvas: Canvas) -> str:
    """A stable name for the generation model of this picture, so a second variation reuses it."""
    digest = hashlib.sha256(canvas.composite).hexdigest()[:16]
    return f"variation-{canvas.width}x{canvas.height}-{digest}"


def train_job(canvas: Canvas, *, preset: Preset | str | None = None) -> Job:
    """Train a generation model on the picture as the artist sees it (the first half of a variation)."""
    buffers: list[Any] = []
    image = frames.attach(buffers, canvas.pixels(canvas.composite), canvas.channel_order)
    request = TrainRequest(
        mode=Mode.GENERATION,
        name=variation_model_name(canvas),
        image=image,
        preset=Preset(preset) if preset else None,
    )
    return Job(request, buffers, BBox(x=0, y=0, w=canvas.width, h=canvas.height))


def sample_job(canvas: Canvas, model_id: str, *, seed: int | None = None) -> Job:
    """Sample one canvas-sized image; limited to the selection when there is one, else the whole canvas."""
    if canvas.selection is not None:
        bbox = mask_bbox(canvas.mask())
    else:
        bbox = BBox(x=0, y=0, w=canvas.width, h=canvas.height)
    request = SampleRequest(model_id=model_id, n=1, width=canvas.width, height=canvas.height, seed=seed)
    return Job(request, [], bbox)


@dataclass(frozen=True)
class LayerPatch:
    """Bytes for the new layer's rectangle (x, y, w, h) in the editor's channel order; the rest of the new
    layer stays transparent, so the picture outside the selection is exactly what it was."""

    x: int
    y: int
    width: int
    height: int
    data: bytes
    name: str


def _to_depth(array: np.ndarray, bit_depth: BitDepth, depth: int) -> np.ndarray:
    """Integers of `depth` bits (8 or 16) from the protocol's u8, u16 or f32 (0-1) values."""
    top = 255 if depth == 8 else 65535
    if bit_depth is BitDepth.F32:
        scaled = np.rint(np.clip(array, 0.0, 1.0) * top)
    elif bit_depth is BitDepth.U16 and depth == 8:
        scaled = (array.astype(np.uint32) * 255 + 32767) // 65535
    elif bit_depth is BitDepth.U8 and depth == 16:
        scaled = array.astype(np.uint32) * 257
    else:
        scaled = array
    converted: np.ndarray = scaled.astype(np.uint8 if depth == 8 else np.uint16, copy=False)
    return converted


def _to_rgba(array: np.ndarray, desc: ImageDescriptor, depth: int) -> np.ndarray:
    """Any result layout the protocol allows, as H x W x 4 RGBA integers of `depth` bits."""
    array = _to_depth(array, desc.bit_depth, depth)
    canonical, order = frames.to_canonical(array, desc.channel_order)
    h, w = canonical.shape[:2]
    if order is ChannelOrder.GRAY:
        rgb, alpha = np.repeat(canonical.reshape(h, w, 1), 3, axis=2), None
    elif order is ChannelOrder.GRAYA:
        rgb, alpha = np.repeat(canonical[..., :1], 3, axis=2), canonical[..., 1]
    elif order is ChannelOrder.RGB:
        rgb, alpha = canonical, None
    else:
        rgb, alpha = canonical[..., :3], canonical[..., 3]
    out = np.empty((h, w, 4), array.dtype)
    out[..., :3] = rgb
    out[..., 3] = np.iinfo(array.dtype).max if alpha is None else alpha
    return out


def result_image(message: Message) -> tuple[np.ndarray, ImageDescriptor]:
    content = message.content
    if not isinstance(content, ResultReply) or not content.images:
        raise ImageError("the engine's reply holds no image; check the engine log")
    desc = content.images[0]
    return message.image(desc), desc


def patch_from_result(op: Operation, canvas: Canvas, job: Job, message: Message) -> LayerPatch:
    """The new layer's pixels: the result inside the job's region, alpha from the selection (soft edges
    stay soft), nothing outside it."""
    array, desc = result_image(message)
    rgba = _to_rgba(array, desc, canvas.depth)
    box = job.bbox
    if (desc.width, desc.height) == (canvas.width, canvas.height):
        rgba = rgba[box.y : box.y + box.h, box.x : box.x + box.w]
    elif (desc.width, desc.height) != (box.w, box.h):
        raise ImageError(
            f"the engine returned a {desc.width}x{desc.height} image for a {canvas.width}x{canvas.height} "
            "canvas; update the engine and the plugin together"
        )
    if op is Operation.VARIATION and canvas.selection is None:
        region_mask = None  # a whole-canvas variation keeps the sample's own alpha
    else:
        region_mask = canvas.mask()[box.y : box.y + box.h, box.x : box.x + box.w]
    out = np.array(rgba)  # writable copy: the received frame is read-only
    if region_mask is not None:
        out[..., 3] = (out[..., 3].astype(np.uint32) * region_mask + 127) // 255
    editor_bytes = np.ascontiguousarray(frames.from_canonical(out, canvas.channel_order)).tobytes()
    return LayerPatch(box.x, box.y, box.w, box.h, editor_bytes, op.layer_name)
