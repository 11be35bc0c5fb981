"""What the Krita and GIMP plugins share, editor-free: editor bytes -> requests, and results -> layer bytes.

A plugin reads the editor into a `Canvas` (raw bytes in the editor's own channel order), asks this module for
the request, and writes the `LayerPatch` it gets back. Keeping this here means every rule about selections,
backgrounds and result placement is tested without Krita or GIMP.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from editor_bridge import frames
from editor_bridge.errors import BridgeError, ImageError
from editor_bridge.protocol import ApplyRequest, BBox, BitDepth, ChannelOrder, ImageDescriptor, ResultReply
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


@dataclass(frozen=True)
class Choice:
    """A choice parameter an entry asks for before each run (a re-style's direction)."""

    name: str  # the operation's parameter
    help: str
    options: tuple[str, ...]
    default: str


@dataclass(frozen=True)
class Ask:
    """A number parameter an entry asks for before each run (Upscale layer's factor)."""

    name: str  # the operation's parameter
    help: str
    integer: bool
    minimum: float
    maximum: float
    default: float

    @property
    def label(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @property
    def step(self) -> float:
        """A dialog box's step: 1 for a whole number or a wide range, else 0.05."""
        return 1.0 if self.integer or self.maximum - self.minimum > 4 else 0.05

    @property
    def decimals(self) -> int:
        """The decimals a dialog box shows."""
        return 0 if self.integer else 2

    def check(self, value: object) -> float | int:
        """The value as the engine takes it; a CanvasError naming the field otherwise."""
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (self.minimum <= value <= self.maximum)
        ):
            raise CanvasError(f"{self.label} must be a number from {self.minimum:g} to {self.maximum:g}")
        if self.integer and value != int(value):
            raise CanvasError(f"{self.label} must be a whole number (got {value:g})")
        return int(value) if self.integer else float(value)


@dataclass(frozen=True)
class Operation:
    """One menu entry: an engine operation as the plugins offer it, built from the engine's capabilities
    (`engine capabilities --json`; `menu`), so an operation added to the engine appears without a new plugin.

    The model it needs is trained on the picture when none is stored for it yet: on what lies beneath the
    active layer, or (`picture`) on the picture as the artist sees it, the result then on top."""

    name: str  # the engine's operation
    family: str
    label: str  # the menu entry; no label is the start of another (GIMP's action search picks by prefix)
    layer_name: str  # the new layer's name
    action: str  # Krita's action singan_<action>, GIMP's procedure python-fu-singan-<action>
    new_layer: bool = False  # it makes a new picture (a sample) rather than changing the selection
    frames: bool = False  # it makes a clip (new_layer too): the editors write an animation (`Animation`)
    fps: float = 10.0  # a clip's frame rate: the engine's default for the operation
    picture: bool = False
    object_on_layer: bool = False  # the selection must touch the active layer's object (a pasted one)
    ask_color_match: bool = False  # ask the colour match (and whether to refine) before each run
    can_refine: bool = False  # the engine can fine-tune the model on this picture first
    params: frozenset[str] = frozenset()  # the operation's parameters
    retrain: bool = False  # train a new model even when one is stored for this picture
    tooltip: str = ""
    # The artist picks a stored model (of `family` and one of `tasks`) and the `choices` before each run;
    # the entry works on the active layer's own pixels, or the selected part of them.
    pick_model: bool = False
    tasks: tuple[str, ...] = ()
    choices: tuple[Choice, ...] = ()
    whole_layer: bool = False  # a picked model's entry that takes the whole layer (Paint to image)
    # The result is a picture of its own size (Upscale layer): a new document (Krita) or image (GIMP), made
    # from the active layer's own pixels (the selected part of them), which the model learns.
    new_image: bool = False
    asks: tuple[Ask, ...] = ()  # numbers asked before each run

    @property
    def krita_action(self) -> str:
        return "singan_" + self.action.replace("-", "_")

    @property
    def gimp_procedure(self) -> str:
        # (GIMP's action search leaves out names ending in -set: no action id may end in _set)
        return "python-fu-singan-" + self.action.replace("_", "-")


_RETURNS = {"layer": False, "new_layer": True, "frames": True}  # what the plugins write: makes a new picture?


def menu(capabilities: dict[str, Any]) -> list[Operation]:
    """The plugins' menu entries, in the engine's order: each operation it offers to editors, and after
    those that retrain, a "Retrain and ..." entry. Entries of several families that would share a label or
    an action (the same operation, offered alike) are labelled with their family's."""
    ops = [op for op in capabilities.get("operations", []) if op.get("editor") and op["returns"] in _RETURNS]
    labels = [op["label"] for op in ops]
    actions = [op["editor"]["action"] for op in ops]
    families = {f["name"]: f for f in capabilities.get("families", [])}
    entries: list[Operation] = []
    retrains: list[Operation] = []
    for op in ops:
        editor = op["editor"]
        family = families.get(op["family"], {})
        label, action = op["label"], editor["action"]
        if labels.count(label) > 1 or actions.count(action) > 1:
            label, action = f"{label} ({family.get('label', op['family'])})", f"{op['family']}-{action}"
        entry = Operation(
            name=op["name"],
            family=op["family"],
            label=label,
            layer_name=editor["layer_name"],
            action=action,
            new_layer=_RETURNS[op["returns"]],
            frames=op["returns"] == "frames",
            fps=float(next((p["default"] for p in op["params"] if p["name"] == "fps"), None) or 10.0),
            picture=editor["picture"],
            object_on_layer=editor["object_on_layer"],
            ask_color_match=editor["ask_color_match"],
            can_refine=bool(set(op["tasks"]) & set(family.get("finetune_tasks", []))),
            params=frozenset(p["name"] for p in op["params"]),
            tooltip=editor.get("tooltip") or op["help"],
            pick_model=bool(editor.get("pick_model")),
            whole_layer=bool(editor.get("whole_layer")),
            tasks=tuple(op["tasks"]),
            choices=tuple(
                Choice(p["name"], p["help"], tuple(p["choices"]), p["default"])
                for p in op["params"]
                if p["type"] == "choice" and editor.get("pick_model")
            ),
            new_image=bool(editor.get("new_image")),
            asks=tuple(
                Ask(p["name"], p["help"], p["type"] == "int", p["minimum"], p["maximum"], p["default"])
                for name in editor.get("ask", [])
                for p in op["params"]
                if p["name"] == name
            ),
        )
        entries.append(entry)
        if editor["retrain"]:
            retrain_label = "Retrain and " + label[:1].lower() + label[1:]
            tooltip = "Train a new model of the painting (another seed), then the same; later runs use it"
            retrains.append(
                replace(entry, label=retrain_label, action=f"retrain-{action}", retrain=True, tooltip=tooltip)
            )
    return entries + retrains


KRITA_MENU = ("singan_studio_menu", "SinGAN Studio")  # Tools > Scripts > SinGAN Studio: the entries' submenu


def krita_action_file(entries: list[Operation]) -> str:
    """Krita's .action file for the entries (texts and tooltips, in its actions folder beside pykrita),
    written by `engine plugin install` from the engine's capabilities."""
    from xml.etree import ElementTree as ET

    root = ET.Element("ActionCollection", version="2", name="Scripts")
    group = ET.SubElement(root, "Actions", category="Scripts")
    ET.SubElement(group, "text").text = "SinGAN Studio"
    rows = [(*KRITA_MENU, "Tools trained on the painting: " + ", ".join(e.label for e in entries), "")]
    rows += [(e.krita_action, e.label, e.tooltip, e.layer_name) for e in entries]
    for name, text, tooltip, icon_text in rows:
        action = ET.SubElement(group, "Action", name=name)
        for tag, value in (
            ("icon", ""), ("text", text), ("whatsThis", ""), ("toolTip", tooltip),
            ("iconText", icon_text or text), ("activationFlags", "10000"), ("activationConditions", "0"),
            ("shortcut", ""), ("isCheckable", "false"), ("statusTip", ""),
        ):  # fmt: skip
            ET.SubElement(action, tag).text = value
    ET.indent(root, "    ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# The keys GIMP's procedure dialog gives its own buttons: _OK, _Cancel, _Reset, _Load Saved Settings,
# _Save Settings, _Help (libgimp/gimpproceduredialog.c)
GIMP_DIALOG_KEYS = frozenset("ocrlsh")


class Mnemonics:
    """Each argument label of one GIMP procedure with its own Alt key: an underscore before the first letter
    of a word, or failing that any letter, that no dialog button and no label before it uses (GIMP logs a
    duplicate mnemonic, and Alt+C, Alt+R or Alt+S then reaches only one of "_Colour match" and "_Cancel",
    "_Refine" and "_Reset", "_Strength" and "_Save Settings"). Underscores in the label are doubled (GTK
    reads one as the key's mark). A label with no free letter gets no key (GIMP logs that too)."""

    def __init__(self, taken: frozenset[str] = GIMP_DIALOG_KEYS) -> None:
        self.taken = set(taken)

    def __call__(self, label: str) -> str:
        label = label.replace("_", "__")
        starts = [m.start() for m in re.finditer(r"\b[^\W\d_]", label)]
        rest = [i for i, ch in enumerate(label) if ch.isalpha() and i not in starts]
        for i in starts + rest:
            if label[i].lower() not in self.taken:
                self.taken.add(label[i].lower())
                return label[:i] + "_" + label[i:]
        return label


def find(entries: list[Operation], action: str) -> Operation:
    """The entry with this action id; a one-line error when the engine no longer offers it."""
    for entry in entries:
        if action in (entry.action, entry.krita_action, entry.gimp_procedure):
            return entry
    raise CanvasError(
        f"the engine no longer offers {action!r}: restart the editor to refresh the plugin's menu (GIMP: run "
        "`engine plugin install gimp` again first)"
    )


def check_canvas_unchanged(before: tuple[int, int], now: tuple[int, int], model_kept: bool = False) -> None:
    """Refuse to place a result on a canvas (width, height) resized or cropped while the engine worked: the
    result would land in the wrong place. `model_kept`: the entry ran a model the artist picked
    (`Operation.pick_model`), which a second run reuses; any other entry's model learned the picture, and
    the resized picture is another one, which trains a model of its own."""
    if before != now:
        again = (
            "Run it again (the model is kept, so it takes seconds)"
            if model_kept
            else "Run it again: the resized picture trains a model of its own (minutes)"
        )
        raise CanvasError(
            f"the canvas changed size while the engine worked ({before[0]}x{before[1]} to "
            f"{now[0]}x{now[1]}), so the result would land in the wrong place; it was not added. {again}"
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


CONTEXT = 64  # px of the layer around the region that a picked model's entry also sends (the model sees it)


def picked_model_job(
    op: Operation,
    canvas: Canvas,
    model_id: str,
    choices: dict[str, str],
    seed: int | None = None,
    values: dict[str, float] | None = None,
) -> Job:
    """The request for an entry that runs a stored model the artist picked: on the active layer's own
    pixels, the selected part of them (else the layer's opaque part) with CONTEXT px around it, the result
    limited to that region (the whole layer for a `whole_layer` entry: a sketch to redraw); or, for an
    entry that makes a new picture (Generate from set), one image of `seed` as the largest square that
    fits the selection's bounds (else the canvas), centred in them. values: the numbers the entry asked
    for (`Operation.asks`: Generate from set's best of); those not given take the engine's defaults."""
    unknown = sorted(set(choices) - {c.name for c in op.choices})
    if unknown:
        raise CanvasError(f"{op.label} has no choice {unknown[0]!r}")
    params: dict[str, Any] = {c.name: choices.get(c.name, c.default) for c in op.choices}
    params.update(_asked(op, values))
    if op.new_layer:
        bounds = (
            mask_bbox(canvas.mask())
            if canvas.selection is not None
            else BBox(x=0, y=0, w=canvas.width, h=canvas.height)
        )
        side = min(bounds.w, bounds.h)
        square = BBox(
            x=bounds.x + (bounds.w - side) // 2, y=bounds.y + (bounds.h - side) // 2, w=side, h=side
        )
        params.update(n=1, width=side, height=side, seed=seed)
        request = ApplyRequest(
            operation=op.name,
            family=op.family,
            model_id=model_id,
            params={k: v for k, v in params.items() if k in op.params and v is not None},
        )
        return Job(request, [], square)
    if op.whole_layer:
        region = BBox(x=0, y=0, w=canvas.width, h=canvas.height)
    else:
        region = mask_bbox(canvas.mask())
    x0, y0 = max(0, region.x - CONTEXT), max(0, region.y - CONTEXT)
    x1 = min(canvas.width, region.x + region.w + CONTEXT)
    y1 = min(canvas.height, region.y + region.h + CONTEXT)
    pixels = canvas.pixels(canvas.layer)[y0:y1, x0:x1]
    inner = BBox(x=region.x - x0, y=region.y - y0, w=region.w, h=region.h)
    buffers: list[Any] = []
    image = frames.attach(buffers, np.ascontiguousarray(pixels), canvas.channel_order, inner)
    request = ApplyRequest(
        operation=op.name, family=op.family, model_id=model_id, image=image, params=params, crop_to_bbox=True
    )
    return Job(request, buffers, region)


def _asked(op: Operation, values: dict[str, float] | None) -> dict[str, float | int]:
    """The numbers given for the entry's asks, checked; a CanvasError for one it does not ask for."""
    unknown = sorted(set(values or {}) - {a.name for a in op.asks})
    if unknown:
        raise CanvasError(f"{op.label} asks for no {unknown[0]!r}")
    return {a.name: a.check(values[a.name]) for a in op.asks if values and a.name in values}


def apply_job(
    op: Operation,
    canvas: Canvas,
    *,
    preset: str | None = None,
    seed: int | None = None,
    color_match: float | None = None,
    finetune_iters: int | None = None,
    values: dict[str, float] | None = None,
) -> Job:
    """The request for a menu entry: the picture (and selection) it works on, with what the engine trains
    on when no model is stored for this picture yet. color_match: 0-1, or None for the engine's default
    (docs/engine.md). finetune_iters: fine-tune the model on this composite first (a new model; minutes on
    a CPU), or None. values: the numbers the entry asked for (`Operation.asks`); those not given take the
    engine's defaults."""
    buffers: list[Any] = []
    order = canvas.channel_order
    params: dict[str, Any] = {"seed": seed, "color_match": color_match}
    params.update(_asked(op, values))
    if op.new_image:
        return _new_image_job(op, canvas, params, preset)
    if op.new_layer:
        # A new canvas-sized picture, limited to the selection when there is one.
        bbox = (
            mask_bbox(canvas.mask())
            if canvas.selection is not None
            else BBox(x=0, y=0, w=canvas.width, h=canvas.height)
        )
        background = frames.attach(buffers, canvas.pixels(canvas.composite), order)
        params.update(n=1, width=canvas.width, height=canvas.height)
        image = mask_desc = None
    else:
        mask = canvas.mask()
        bbox = mask_bbox(mask)
        if op.object_on_layer:
            check_region_on_layer(canvas, mask)
        image = frames.attach(buffers, canvas.pixels(canvas.composite), order, bbox)
        mask_desc = frames.attach(buffers, mask, ChannelOrder.GRAY, bbox)
        training = canvas.composite if op.picture else canvas.training_image()
        if training is canvas.composite:
            background = image  # the protocol lets both refer to one frame: no second copy on the wire
        else:
            background = frames.attach(buffers, canvas.pixels(training), order)
    request = ApplyRequest(
        operation=op.name,
        family=op.family,
        image=image,
        mask=mask_desc,
        params={k: v for k, v in params.items() if k in op.params and v is not None},
        train_if_missing=True,
        background=background,
        train={"preset": preset} if preset else {},
        retrain=op.retrain,
        finetune_iters=finetune_iters,
        preview=image is not None,  # a training-free result first, where the engine has one (harmonize)
        crop_to_bbox=image is not None,  # the new layer is limited to the selection: only that comes back
    )
    return Job(request, buffers, bbox)


def _limit_alpha(rgba: np.ndarray, mask: np.ndarray) -> None:
    """`rgba`'s alpha (8 or 16 bits) times a 0-255 mask, rounded, in place: soft selection edges stay soft."""
    rgba[..., 3] = (rgba[..., 3].astype(np.uint32) * mask + 127) // 255


def _new_image_job(op: Operation, canvas: Canvas, params: dict[str, Any], preset: str | None) -> Job:
    """An entry whose result is a picture of its own (Upscale layer): the active layer's own pixels, the
    selected part of them (its bounds, the layer's alpha times the selection; with nothing selected, the
    bounds of the layer's visible pixels), which the model learns and the operation enlarges."""
    mask = canvas.mask()
    if not mask.any():
        where = "selection is empty" if canvas.selection is not None else "active layer is empty"
        raise EmptySelection(
            f"the {where}: make the layer to enlarge active, and select a part of it or none"
        )
    box = mask_bbox(mask)
    rows, cols = slice(box.y, box.y + box.h), slice(box.x, box.x + box.w)
    pixels = np.array(canvas.pixels(canvas.layer)[rows, cols])
    if canvas.selection is not None:
        _limit_alpha(pixels, mask[rows, cols])
    if not pixels[..., 3].any():
        raise EmptySelection("the active layer is empty in the selection: make the layer to enlarge active")
    buffers: list[Any] = []
    image = frames.attach(buffers, pixels, canvas.channel_order)
    request = ApplyRequest(
        operation=op.name,
        family=op.family,
        image=image,
        background=image,  # the model learns the picture it enlarges (one frame on the wire)
        params={k: v for k, v in params.items() if k in op.params and v is not None},
        train_if_missing=True,
        train={"preset": preset} if preset else {},
        retrain=op.retrain,
    )
    return Job(request, buffers, box)


@dataclass(frozen=True)
class NewImage:
    """A picture of its own size for a new document (Krita) or image (GIMP): width x height pixels in the
    editor's channel order at the canvas's depth, rows top down; `layer_name` for its one layer, `title`
    for the document."""

    width: int
    height: int
    data: bytes
    depth: int
    layer_name: str
    title: str


def new_image_from_result(op: Operation, canvas: Canvas, job: Job, message: Message) -> NewImage:
    """The engine's picture for a `new_image` entry, checked against the size asked for (the region sent
    times the factor, where the entry has one)."""
    array, desc = result_image(message)
    box = job.bbox
    factor = getattr(job.request, "params", {}).get("factor")
    if factor is None:
        factor = next((a.default for a in op.asks if a.name == "factor"), None)
    if factor is not None and (desc.width, desc.height) != (round(box.w * factor), round(box.h * factor)):
        raise ImageError(
            f"the engine returned a {desc.width}x{desc.height} image for {box.w}x{box.h} times {factor:g}; "
            "update the engine and the plugin together"
        )
    rgba = _to_rgba(array, desc, canvas.depth)
    data = np.ascontiguousarray(frames.from_canonical(rgba, canvas.channel_order)).tobytes()
    times = f" x{factor:g}" if factor is not None else ""
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", canvas.name) or "Layer"
    return NewImage(desc.width, desc.height, data, canvas.depth, op.layer_name + times, f"{stem}{times}")


PREVIEW_SUFFIX = " (preview)"  # the name of a layer that holds a training-free preview (engine/preview.py)


def is_result_name(name: str, base: str) -> bool:
    """Whether a layer is one the plugins added as `base` ("Variation"): the name itself, or the unique
    names the editors make of it (Krita's plugin: "Variation 2"; GIMP: "Variation #1")."""
    return re.fullmatch(re.escape(base) + r"( #?\d+)?", name) is not None


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
    if (op.new_layer or op.pick_model) and canvas.selection is None:
        # A whole-canvas variation keeps the sample's own alpha; a re-styled layer keeps the layer's.
        region_mask = None
    else:
        region_mask = canvas.mask()[box.y : box.y + box.h, box.x : box.x + box.w]
    out = np.array(rgba)  # writable copy: the received frame is read-only
    if region_mask is not None:
        _limit_alpha(out, region_mask)
    editor_bytes = np.ascontiguousarray(frames.from_canonical(out, canvas.channel_order)).tobytes()
    name = op.layer_name
    params = getattr(job.request, "params", {})
    seeds = message.content.seeds if isinstance(message.content, ResultReply) else []
    if not seeds and params.get("seed") is not None and params.get("best_of", 1) == 1:
        seeds = [params["seed"]]  # an operation that names no seeds drew the one asked for
    if op.pick_model and op.new_layer and seeds:
        # a stored model's image: the model and this seed draw it again (with best of, the seed kept)
        name = f"{name} (seed {seeds[0]})"
    return LayerPatch(box.x, box.y, box.w, box.h, editor_bytes, name)


@dataclass(frozen=True)
class Animation:
    """A clip for a new animated layer: frames of width x height as RGBA bytes (8 bits, in that order, rows
    top down), at the model's size; the editors scale them to the canvas (canvas_width x canvas_height)
    and set the timeline to `fps`."""

    width: int
    height: int
    frames: tuple[bytes, ...]
    fps: float
    name: str
    canvas_width: int
    canvas_height: int


def animation_from_result(op: Operation, canvas: Canvas, message: Message) -> Animation:
    """The clip in an engine's reply: each of its images a frame, all of one size."""
    content = message.content
    if not isinstance(content, ResultReply) or len(content.images) < 2:
        raise ImageError(f"{op.label}: the engine's reply holds no clip (under 2 frames); see the engine log")
    first = content.images[0]
    frames_out = []
    for desc in content.images:
        if (desc.width, desc.height) != (first.width, first.height):
            raise ImageError(
                f"{op.label}: the engine's frames differ in size ({first.width}x{first.height} and "
                f"{desc.width}x{desc.height}); update the engine and the plugin together"
            )
        rgba = _to_rgba(message.image(desc), desc, 8)
        frames_out.append(np.ascontiguousarray(rgba).tobytes())
    return Animation(
        first.width, first.height, tuple(frames_out), op.fps, op.layer_name, canvas.width, canvas.height
    )


def preview_patch(op: Operation, canvas: Canvas, job: Job, message: Message) -> LayerPatch:
    """A preview result's layer: as the final one, named as a preview. The plug-ins write it as the result
    layer and put the final pixels and name into that same layer when they come."""
    patch = patch_from_result(op, canvas, job, message)
    return replace(patch, name=patch.name + PREVIEW_SUFFIX)
