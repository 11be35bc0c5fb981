#!/usr/bin/env python3
"""SinGAN Studio for GIMP 3: Filters > SinGAN Studio > the engine's operations for editors (Harmonize
selection, Edit selection, Generate variation, Re-style layer, Upscale layer, ...), and those that train
on the painting with a new model (Retrain and harmonize selection / Retrain and edit selection).

A thin adapter: it reads the image and the selection into an editor_bridge `Canvas`, lets editor_bridge's
Runner talk to `engine serve`, and writes the result as a new layer inside one undo group. GIMP runs each
plug-in in its own process, so GIMP stays responsive while the engine works; progress goes to GIMP's bar,
whose Cancel button kills this process (editor_bridge.cancel_guard then cancels the engine job).
"""

import os
import sys

_HERE = os.path.dirname(os.path.realpath(__file__))
_VENDOR = os.path.join(_HERE, "vendor")
if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)  # editor_bridge and its wheels, installed by `engine plugin install gimp`

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
import numpy as np  # noqa: E402
from gi.repository import Babl, Gegl, Gimp, GLib, GObject  # noqa: E402

from editor_bridge.cancel_guard import CancelGuard  # noqa: E402
from editor_bridge.plugin_core import (  # noqa: E402
    HIDDEN_LAYER,
    Animation,
    Canvas,
    CanvasError,
    Editor,
    LayerPatch,
    Mnemonics,
    NewImage,
    Operation,
    check_canvas_unchanged,
    check_color_depth,
    find,
    is_result_name,
)
from editor_bridge.plugin_runner import (  # noqa: E402
    COLOR_MATCH_HELP,
    MAX_EDITOR_SEED,
    REFINE_LABEL,
    SEED_HELP,
    Progress,
    Runner,
    Settings,
    artist_message,
    load_menu,
    model_label,
    models_for,
    pick_model,
    start_engine,
)

MASK_FORMAT = "Y u8"  # one byte a pixel (GIMP converts on read)
QUICK_MASK = "Qmask"  # the channel GIMP holds the selection in while Quick Mask is on (no API says so)
# The harmonize procedures' arguments (scripts pass them; the dialog asks for them).
COLOR_MATCH, REFINE = "color-match", "refine"
MODEL = "model"  # an entry that runs a stored model: its id or name ("": the newest), and its choices
SEED = "seed"  # an entry that draws a new image from a stored model: its seed, -1 for a random one
UNAVAILABLE = "python-fu-singan-unavailable"  # the one procedure when the engine's capabilities are unknown


def procedures() -> dict[str, Operation]:
    """The engine's operations for editors, read from its capabilities each time GIMP queries the plug-in
    (at its start): an operation added to the engine appears after GIMP is restarted."""
    return {op.gimp_procedure: op for op in load_menu(Settings.load(_HERE), _HERE)}


def _unavailable() -> str:
    try:
        procedures()
    except CanvasError as exc:
        return str(exc)
    return ""


# ---- image adapters ----


def _rgba(drawable, depth: int) -> str:
    """R,G,B,A of `depth` bits in the drawable's own colour space: the values as stored, whatever the
    image's profile. Plain "R'G'B'A u8" is sRGB, so an Adobe RGB or ProPhoto image would be converted on
    reading (colours outside sRGB clipped) and the result converted back on writing: the engine would
    repaint other colours."""
    space = Babl.format_get_space(drawable.get_format())
    return Babl.get_name(Babl.format_with_space(f"R'G'B'A u{depth}", space))


def _read(drawable, x: int, y: int, w: int, h: int, fmt: str) -> bytes:
    rect = Gegl.Rectangle.new(x, y, w, h)
    return bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.NONE))


def _position_path(image, layer) -> list[int]:
    """Where `layer` sits in the layer tree: its position in each group, from the top level down."""
    path = []
    while layer is not None:
        path.append(image.get_item_position(layer))
        layer = layer.get_parent()
    return path[::-1]


def _layer_at(image, path: list[int]):
    layers = image.get_layers()
    for depth, position in enumerate(path):
        if position >= len(layers):
            return None
        if depth == len(path) - 1:
            return layers[position]
        layers = layers[position].get_children()
    return None


def _layers_above(image, layer) -> list:
    """The layers drawn over `layer`: those above it in its group, and above each enclosing group."""
    above = []
    while layer is not None:
        parent = layer.get_parent()
        siblings = parent.get_children() if parent is not None else image.get_layers()
        above.extend(siblings[: image.get_item_position(layer)])  # GIMP lists the top layer first
        layer = parent
    return above


def _flatten_copy(image, depth: int, hide=()):
    """The visible image as one canvas-sized buffer, from a duplicate so the artist's image is never touched
    (not even hidden and shown again: a Cancel kills this process at any moment). `hide`: layers to leave
    out, found in the duplicate at the same place in the layer tree (a duplicate numbers its layers' tattoos
    afresh, so a tattoo would find another layer there)."""
    copy = image.duplicate()
    try:
        found = [_layer_at(copy, _position_path(image, layer)) for layer in hide]
        if any(c is None or c.get_name() != o.get_name() for c, o in zip(found, hide, strict=True)):
            raise CanvasError("could not find the active layer in a copy of the image; try again")
        for layer in found:
            layer.set_visible(False)
        if not any(layer.get_visible() for layer in copy.get_layers()):
            return None
        merged = copy.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
        return _read(merged, 0, 0, copy.get_width(), copy.get_height(), _rgba(merged, depth))
    finally:
        copy.delete()


def _results(layers, name: str) -> list:
    """The layers this plug-in added as `name` (GIMP makes "name #1" of a second one), at any depth."""
    found = []
    for layer in layers:
        if is_result_name(layer.get_name(), name):
            found.append(layer)
        elif layer.is_group():
            found.extend(_results(layer.get_children(), name))
    return found


def _layer_on_canvas(drawable, width: int, height: int, depth: int) -> bytes:
    """The layer's pixels placed on a full canvas (a layer may be smaller than the canvas or stick out of
    it), with its layer mask applied to its alpha."""
    pixel = 4 * depth // 8  # bytes
    layer = bytearray(width * height * pixel)
    _ok, ox, oy = drawable.get_offsets()
    w, h = drawable.get_width(), drawable.get_height()
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + w, width), min(oy + h, height)
    if x1 > x0 and y1 > y0:
        part = _read(drawable, x0 - ox, y0 - oy, x1 - x0, y1 - y0, _rgba(drawable, depth))
        mask = drawable.get_mask()
        if mask is not None and drawable.get_apply_mask():
            # A layer mask (a cut-out made without erasing) is part of the layer's shape as the artist sees
            # it; the buffer holds the pixels without it.
            shape = np.frombuffer(_read(mask, x0 - ox, y0 - oy, x1 - x0, y1 - y0, MASK_FORMAT), np.uint8)
            pixels = np.frombuffer(part, np.uint8 if depth == 8 else np.uint16).reshape(-1, 4).copy()
            pixels[:, 3] = (pixels[:, 3].astype(np.uint32) * shape // 255).astype(pixels.dtype)
            part = pixels.tobytes()
        row = (x1 - x0) * pixel
        for y in range(y0, y1):
            start = (y * width + x0) * pixel
            layer[start : start + row] = part[(y - y0) * row : (y - y0 + 1) * row]
    return bytes(layer)


def read_canvas(image, drawable, op: Operation | None = None) -> Canvas:
    """The image as the artist sees it, the active layer, the selection and the background.

    `op` None: as for an entry that changes the selection (Harmonize selection). A variation (an entry
    that learns the whole picture, `op.picture`) needs no background; it learns the picture without the
    variations it already added, so that the next one reuses the same model and varies the artist's
    picture, not the previous variation."""
    if image.get_floating_sel() is not None:
        # GIMP keeps a floating selection over every layer: the result would land hidden under the paste.
        raise CanvasError(
            "the pasted object is still a floating selection: make it a layer first (Layer > To New Layer,"
            " or paste with Edit > Paste as > New Layer), then run this again"
        )
    if any(channel.get_name() == QUICK_MASK for channel in image.get_channels()):
        # The selection being painted is in that channel, and the image's selection is empty meanwhile.
        raise CanvasError(
            "Quick Mask is on: turn it off (Select > Toggle Quick Mask, Shift+Q) so that what you painted"
            " becomes the selection, then run this again"
        )
    picture = op is not None and op.picture
    own_pixels = op is not None and op.new_image  # the layer's own pixels: shown or hidden, the same
    item = drawable if not (picture or own_pixels) else None
    while item is not None:  # a hidden layer (or group) is not in the picture the artist sees
        if not item.get_visible():
            raise CanvasError(HIDDEN_LAYER)
        item = item.get_parent()
    depth = check_color_depth(
        Editor.GIMP, image.get_base_type().value_nick, image.get_precision().value_name.replace("GIMP_", "")
    )
    width, height = image.get_width(), image.get_height()
    layer = _layer_on_canvas(drawable, width, height, depth)
    selection = None
    if not Gimp.Selection.is_empty(image):
        selection = _read(image.get_selection(), 0, 0, width, height, MASK_FORMAT)
    if own_pixels:
        composite, background = layer, None  # nothing else is sent
    elif op is not None and op.picture:
        composite = _flatten_copy(image, depth, hide=_results(image.get_layers(), op.layer_name))
        background = None
    else:
        # Layers over the active one (a paper texture, a colour grade) stay over the result, which goes
        # right above the active layer: the engine sees the picture without them, or they would apply twice.
        above = _layers_above(image, drawable)
        composite = _flatten_copy(image, depth, hide=above)
        background = _flatten_copy(image, depth, hide=[drawable, *above])
    if composite is None:
        raise CanvasError("nothing is visible: show the painting's layers")
    return Canvas(
        Editor.GIMP,
        width,
        height,
        composite=composite,
        layer=layer,
        background=background,
        selection=selection,
        name=image.get_name() or "",
        depth=depth,
    )


def add_result_layer(
    image, tattoo: int, canvas: Canvas, patch: LayerPatch, on_top: bool = False, model_kept: bool = False
):
    """A new canvas-sized layer right above the layer with this tattoo, the one the run started from (at
    the top if the artist deleted it meanwhile, or `on_top`: a variation shows the whole picture, so below
    the layers over the active one it would show them twice); one undo group, so one Undo removes it."""
    if not image.is_valid():
        raise CanvasError("the image was closed before the result arrived")
    check_canvas_unchanged((canvas.width, canvas.height), (image.get_width(), image.get_height()), model_kept)
    current = None if on_top else image.get_layer_by_tattoo(tattoo)  # None once the layer left the image
    parent, position = (current.get_parent(), image.get_item_position(current)) if current else (None, 0)
    image.undo_group_start()
    try:
        layer = Gimp.Layer.new(
            image, patch.name, image.get_width(), image.get_height(), Gimp.ImageType.RGBA_IMAGE, 100.0,
            Gimp.LayerMode.NORMAL,
        )  # fmt: skip
        image.insert_layer(layer, parent, position)
        _write(layer, canvas, patch)
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
    return layer


def _write(layer, canvas: Canvas, patch: LayerPatch) -> None:
    """The patch's pixels into its rectangle of `layer`, shown."""
    buffer = layer.get_buffer()
    rect = Gegl.Rectangle.new(patch.x, patch.y, patch.width, patch.height)
    buffer.set(rect, _rgba(layer, canvas.depth), patch.data)
    buffer.flush()
    layer.update(patch.x, patch.y, patch.width, patch.height)


def fill_result_layer(image, layer, canvas: Canvas, patch: LayerPatch, model_kept: bool = False) -> None:
    """Put the final result into the layer that holds its preview: its pixels and name, with the undo stack
    frozen, so the one Undo that removed the preview layer now removes the result (the preview never stays
    behind as a second layer)."""
    check_canvas_unchanged((canvas.width, canvas.height), (image.get_width(), image.get_height()), model_kept)
    image.undo_freeze()
    try:
        _write(layer, canvas, patch)
        layer.set_name(patch.name)
    finally:
        image.undo_thaw()
    Gimp.displays_flush()


def add_animation_image(clip: Animation, profile, show: bool):
    """The clip as a new image, one layer a frame, the first at the bottom, each named with its time
    ("Frame 1 (100ms)") as Filters > Animation > Playback and the GIF and WebP export read it; made at the
    model's size in the painting's colour profile (the engine's values are the painting's), and scaled to
    the painting's size (GIMP's own interpolation). Shown in a window of its own unless a script runs it
    (it finds the image among the open ones). A half-made image is deleted."""
    image = Gimp.Image.new(clip.width, clip.height, Gimp.ImageBaseType.RGB)

    def make() -> None:
        if profile is not None:
            image.set_color_profile(profile)
        ms = max(1, round(1000 / clip.fps))
        for index, data in enumerate(clip.frames):
            _add_layer(image, f"Frame {index + 1} ({ms}ms)", clip.width, clip.height, data, 8)
        if (clip.canvas_width, clip.canvas_height) != (clip.width, clip.height):
            image.scale(clip.canvas_width, clip.canvas_height)

    return _made(image, make, show)


def add_new_image(result: NewImage, painting: dict, show: bool):
    """The picture as a new image of one layer in the painting's precision, colour profile and resolution
    (`painting`, read with the canvas: the painting may be closed or converted by now), written in the
    format its pixels were read in from the painting (a float painting's come back as floats). Shown in a
    window of its own unless a script runs it (it finds the image among the open ones)."""
    image = Gimp.Image.new_with_precision(
        result.width, result.height, Gimp.ImageBaseType.RGB, painting["precision"]
    )

    def make() -> None:
        if painting["profile"] is not None:  # (none: GIMP's built-in one, as the painting's)
            image.set_color_profile(painting["profile"])
        image.set_resolution(*painting["resolution"])
        _add_layer(image, result.layer_name, result.width, result.height, result.data, result.depth)

    return _made(image, make, show)


def _add_layer(image, name: str, width: int, height: int, data: bytes, depth: int):
    """A new layer on top of `image` holding `data` (R, G, B, A of `depth` bits in the image's space)."""
    layer = Gimp.Layer.new(
        image, name, width, height, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
    )
    image.insert_layer(layer, None, 0)
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), _rgba(layer, depth), data)
    buffer.flush()
    return layer


def _made(image, make, show: bool):
    """`image` once `make()` has filled it, with its undo history off meanwhile (a new picture's making is
    not the artist's history), shown in a window of its own if `show`; deleted if `make` fails."""
    try:
        image.undo_disable()
        make()
        image.undo_enable()
    except BaseException:
        image.delete()
        raise
    if show:
        Gimp.Display.new(image)
        Gimp.displays_flush()
    return image


# ---- the procedure ----


def _progress(progress: Progress) -> None:
    Gimp.progress_set_text(progress.text)
    Gimp.progress_update(progress.percent / 100.0)


def _ask_to_start(title: str) -> bool:
    """A Yes/No question; only in interactive runs, where a person is there to answer."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init("singan_studio")
    dialog = Gtk.MessageDialog(
        message_type=Gtk.MessageType.QUESTION, buttons=Gtk.ButtonsType.YES_NO, text=title
    )
    dialog.format_secondary_text("The engine is not running. Start it now?")
    GimpUi.window_set_transient(dialog)  # over the image window, not behind it
    answer = dialog.run()
    dialog.destroy()
    return answer == Gtk.ResponseType.YES


def _ask_options(procedure, config, op: Operation) -> bool:
    """GIMP's own dialog for the procedure's arguments (colour match, refine; Upscale layer's factor and
    strength); False if the artist cancelled. GIMP remembers the values for the next run, and Filters >
    Repeat reuses them without asking."""
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi

    GimpUi.init("singan_studio")
    dialog = GimpUi.ProcedureDialog.new(procedure, config, op.label)
    # (name, step, decimals): the colour match's as a 0-1 ask's; an ask's as its dialog boxes elsewhere
    sliders = [(COLOR_MATCH, 0.05, 2)] if op.ask_color_match else []
    sliders += [(_argument(a.name), a.step, a.decimals) for a in op.asks]
    for name, step, decimals in sliders:
        scale = dialog.get_widget(name, GimpUi.SpinScale.__gtype__)  # a slider, as GIMP's filters have
        scale.set_increments(step, 0.25 if step < 1 else 2.0)
        scale.set_digits(decimals)  # a whole number shows as one (the engine takes no other)
    dialog.fill(None)
    try:
        return bool(dialog.run())
    finally:
        dialog.destroy()


def _argument(name: str) -> str:
    """A parameter's name as a GIMP argument's."""
    return name.replace("_", "-")


def _choice_argument(choice) -> str:
    return _argument(choice.name)


def _ask_model(op: Operation, models, config) -> bool:
    """Which stored model and which options (Re-style layer's direction; Generate from set's seed and best
    of): a dialog listing the engine's models, the ones in the procedure's config first; the answers go
    into the config. False if the artist cancelled."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init("singan_studio")
    dialog = Gtk.Dialog(title=op.label)
    dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
    ok = dialog.add_button("_OK", Gtk.ResponseType.OK)
    grid = Gtk.Grid(row_spacing=6, column_spacing=12, margin=12)
    grid.attach(Gtk.Label(label="Model:", xalign=0), 0, 0, 1, 1)
    model_box = Gtk.ComboBoxText()
    for model in models:
        model_box.append(model.model_id, model_label(model))
    current = pick_model(models, config.get_property(MODEL))
    model_box.set_active_id(current.model_id if current is not None else models[0].model_id)
    grid.attach(model_box, 1, 0, 1, 1)
    boxes = {}
    for row, choice in enumerate(op.choices, start=1):
        grid.attach(Gtk.Label(label=choice.name.replace("_", " ").capitalize() + ":", xalign=0), 0, row, 1, 1)
        box = Gtk.ComboBoxText()
        for option in choice.options:
            box.append(option, option)
        box.set_active_id(config.get_property(_choice_argument(choice)) or choice.default)
        box.set_tooltip_text(choice.help)
        grid.attach(box, 1, row, 1, 1)
        boxes[choice] = box
    seed = None
    if op.new_layer:
        row = len(op.choices) + 1
        grid.attach(Gtk.Label(label="Seed (-1: random):", xalign=0), 0, row, 1, 1)
        seed = Gtk.SpinButton.new_with_range(-1, MAX_EDITOR_SEED, 1)
        seed.set_value(config.get_property(SEED))
        seed.set_tooltip_text(SEED_HELP)
        grid.attach(seed, 1, row, 1, 1)
    numbers = {}
    for row, ask in enumerate(op.asks, start=len(op.choices) + 2):
        grid.attach(Gtk.Label(label=ask.label + ":", xalign=0), 0, row, 1, 1)
        box = Gtk.SpinButton.new_with_range(ask.minimum, ask.maximum, ask.step)
        box.set_digits(ask.decimals)
        box.set_value(config.get_property(_argument(ask.name)))
        box.set_tooltip_text(ask.help)
        grid.attach(box, 1, row, 1, 1)
        numbers[ask] = box
    dialog.get_content_area().add(grid)
    dialog.show_all()
    ok.grab_focus()  # Return presses OK
    GimpUi.window_set_transient(dialog)
    try:
        if dialog.run() != Gtk.ResponseType.OK:
            return False
        config.set_property(MODEL, model_box.get_active_id())
        for choice, box in boxes.items():
            config.set_property(_choice_argument(choice), box.get_active_id())
        if seed is not None:
            config.set_property(SEED, seed.get_value_as_int())
        for ask, box in numbers.items():
            value = box.get_value_as_int() if ask.integer else box.get_value()
            config.set_property(_argument(ask.name), value)
        return True
    finally:
        dialog.destroy()


def run(procedure, run_mode, image, drawables, config, data):
    if procedure.get_name() == UNAVAILABLE:
        return _error(procedure, _unavailable() or "restart GIMP to refresh the SinGAN Studio menu")
    try:
        op = find(list(procedures().values()), procedure.get_name())
    except CanvasError as exc:
        return _error(procedure, str(exc))
    if len(drawables) != 1:
        return _error(procedure, f"{op.label}: select exactly one layer")
    drawable = drawables[0]
    if isinstance(drawable, Gimp.LayerMask):
        # A mask is the active drawable right after it is added, or once its thumbnail is clicked: the
        # artist means its layer, which the mask shapes.
        drawable = Gimp.Layer.from_mask(drawable)
    if not isinstance(drawable, Gimp.Layer):
        return _error(procedure, f"{op.label}: select a layer in the Layers dialog, not a channel")
    settings = Settings.load(_HERE)
    color_match, refine = None, False
    if op.ask_color_match or (op.asks and not op.pick_model):  # a picked model's entry asks with the model
        if run_mode == Gimp.RunMode.INTERACTIVE and not _ask_options(procedure, config, op):
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    if op.ask_color_match:
        color_match = config.get_property(COLOR_MATCH)
        refine = op.can_refine and config.get_property(REFINE)
    values = {a.name: config.get_property(_argument(a.name)) for a in op.asks}
    model_id, choices, seed = None, None, None
    if op.pick_model:
        try:
            models = models_for(settings, op)
        except Exception as exc:  # noqa: BLE001 - no engine, no model: the artist reads what to do
            return _error(procedure, artist_message(exc, op).text)
        if run_mode == Gimp.RunMode.INTERACTIVE and not _ask_model(op, models, config):
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        wanted = config.get_property(MODEL)
        found = pick_model(models, wanted)
        if found is None:
            return _error(procedure, f"{op.label}: the engine has no model {wanted!r}")
        model_id = found.model_id
        choices = {c.name: config.get_property(_choice_argument(c)) for c in op.choices}
        if op.new_layer and config.get_property(SEED) >= 0:
            seed = config.get_property(SEED)
    Gimp.progress_init(f"{op.label}...")
    # GIMP's Cancel kills this process outright; the guard then cancels the engine job we leave behind.
    guard = CancelGuard(settings.home, settings.timeout_s)
    try:
        tattoo = drawable.get_tattoo()  # read now: the layer itself may be deleted while the engine works
        canvas = read_canvas(image, drawable, op)
        painting = None  # for a new image: as the painting is now (it may be closed or converted meanwhile)
        if op.new_image:
            painting = {
                "precision": image.get_precision(),
                "profile": image.get_color_profile(),
                "resolution": image.get_resolution()[-2:],
            }
        shown: list = []  # the preview's layer, once the engine has sent one (engine/preview.py)

        def show_preview(preview: LayerPatch) -> None:
            if image.is_valid():
                layer = add_result_layer(
                    image, tattoo, canvas, preview, on_top=op.picture, model_kept=op.pick_model
                )
                shown[:] = [layer]
                _progress(Progress(0, f"{preview.name} shown. Training for the final result..."))

        runner = Runner(settings, _progress, seed=seed, on_job=guard.watch, on_preview=show_preview)
        try:
            patch = runner.run(
                op, canvas, color_match=color_match, refine=refine, model_id=model_id, choices=choices,
                values=values,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            message = artist_message(exc, op)
            interactive = run_mode == Gimp.RunMode.INTERACTIVE
            if not (
                message.offer_start and settings.engine_command and interactive and _ask_to_start(op.label)
            ):
                raise
            _progress(Progress(0, "Starting the engine..."))
            start_engine(settings)
            patch = runner.run(
                op, canvas, color_match=color_match, refine=refine, model_id=model_id, choices=choices,
                values=values,
            )  # fmt: skip
        if isinstance(patch, NewImage):  # a picture of its own: whether the painting is still open or not
            assert painting is not None
            add_new_image(patch, painting, show=run_mode != Gimp.RunMode.NONINTERACTIVE)
        elif isinstance(patch, Animation):
            profile = image.get_effective_color_profile() if image.is_valid() else None
            add_animation_image(patch, profile, show=run_mode != Gimp.RunMode.NONINTERACTIVE)
        elif shown and image.is_valid() and image.get_layer_by_tattoo(shown[0].get_tattoo()) is not None:
            # the artist kept the preview's layer
            fill_result_layer(image, shown[0], canvas, patch, model_kept=op.pick_model)
        else:
            add_result_layer(image, tattoo, canvas, patch, on_top=op.picture, model_kept=op.pick_model)
    except (CanvasError, Exception) as exc:  # noqa: BLE001 - the artist gets a message, GIMP never a traceback
        return _error(procedure, artist_message(exc, op).text)
    finally:
        guard.close()
        Gimp.progress_end()
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def _error(procedure, text: str):
    return procedure.new_return_values(
        Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error.new_literal(Gimp.PlugIn.error_quark(), text, 0)
    )


class SinganStudio(Gimp.PlugIn):
    def do_set_i18n(self, procname):
        return False

    def do_query_procedures(self):
        try:
            return list(procedures())
        except CanvasError:
            return [UNAVAILABLE]

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        if name == UNAVAILABLE:
            procedure.set_menu_label("Why is this menu empty?")
            procedure.add_menu_path("<Image>/Filters/SinGAN Studio")
            procedure.set_documentation("SinGAN Studio", _unavailable(), name)
            return procedure
        try:
            op = procedures().get(name)
        except CanvasError:
            op = None
        if op is None:
            # A filter GIMP kept from an older install (it asks a plug-in again only when its file changes),
            # or the engine's capabilities unreadable: a bare procedure, whose run says what to do.
            procedure.set_documentation("SinGAN Studio", "Offered by an older SinGAN Studio", name)
            return procedure
        procedure.set_image_types("RGB*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label(op.label)
        procedure.add_menu_path("<Image>/Filters/SinGAN Studio")
        how = "with a stored model you pick" if op.pick_model else "with a model trained on the painting"
        procedure.set_documentation(op.label, f"{op.tooltip or op.label} ({how}; needs `engine serve`)", name)
        procedure.set_attribution("SinGAN Studio", "SinGAN Studio", "2025")
        key = Mnemonics()  # each argument its own Alt key, none of the dialog's buttons' keys
        if op.ask_color_match:
            procedure.add_double_argument(
                COLOR_MATCH,
                key("Colour match"),
                COLOR_MATCH_HELP,
                0.0,
                1.0,
                Settings.load(_HERE).harmonize_color_match,
                GObject.ParamFlags.READWRITE,
            )
        if op.ask_color_match and op.can_refine:
            procedure.add_boolean_argument(
                REFINE,
                key(REFINE_LABEL),
                "Fine-tune the painting's model on this composite before harmonizing (a new model)",
                False,
                GObject.ParamFlags.READWRITE,
            )
        for ask in op.asks:  # a whole number as an int argument: a script passes 4, not 4.0
            add = procedure.add_int_argument if ask.integer else procedure.add_double_argument
            kind = int if ask.integer else float
            add(
                _argument(ask.name), key(ask.label), ask.help, kind(ask.minimum), kind(ask.maximum),
                kind(ask.default), GObject.ParamFlags.READWRITE,
            )  # fmt: skip
        if op.pick_model:
            procedure.add_string_argument(
                MODEL, key("Model"),
                "The stored model's id or name (`engine status` lists them); empty: newest",
                "", GObject.ParamFlags.READWRITE,
            )  # fmt: skip
            for choice in op.choices:
                options = Gimp.Choice.new()
                for index, option in enumerate(choice.options):
                    options.add(option, index, option, choice.help)
                procedure.add_choice_argument(
                    _choice_argument(choice), key(choice.name.replace("_", " ").capitalize()), choice.help,
                    options, choice.default, GObject.ParamFlags.READWRITE,
                )  # fmt: skip
            if op.new_layer:
                procedure.add_int_argument(
                    SEED, key("Seed"), "The image's seed (a model and seed draw one image); -1: random",
                    -1, MAX_EDITOR_SEED, -1, GObject.ParamFlags.READWRITE,
                )  # fmt: skip
        return procedure


if __name__ == "__main__":
    Gimp.main(SinganStudio.__gtype__, sys.argv)
