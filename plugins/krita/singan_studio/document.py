"""Adapters for Krita's document, layer and selection: read a `Canvas`; write a `LayerPatch` as a layer, a
clip as an animated layer, a `NewImage` as a new document."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from krita import Krita
from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtGui import QImage

from editor_bridge.plugin_core import (
    HIDDEN_LAYER,
    Animation,
    Canvas,
    CanvasError,
    Editor,
    LayerPatch,
    NewImage,
    Operation,
    check_canvas_unchanged,
    check_color_depth,
    is_result_name,
)

from . import kra

log = logging.getLogger(__name__)

# Krita's colour space names: (model, depth, profile).
Space = tuple[str, str, str]
FLOAT_DEPTHS = ("F16", "F32")
# The engine's view of a floating-point image: 16-bit integers with the sRGB tone curve (check_color_depth).
SRGB_16: Space = ("RGBA", "U16", "sRGB-elle-V2-srgbtrc.icc")
# An sRGB ICC profile (Qt 5.15's QColorSpace(SRgb).iccProfile(), 459 bytes) for the clip's .kra, whose layer
# Krita will not open without one; the image's own profile is assigned once it is open.
SRGB_ICC = Path(__file__).resolve().parent / "srgb.icc"


@dataclass
class Target:
    """Where the result goes: the document and the layer that was active when the artist chose the action."""

    document: object
    node: object  # the layer the result goes above
    width: int  # the canvas size the result is placed for
    height: int
    space: Space  # the colour space of the canvas's pixels, and so of the result
    image_space: Space  # the document's own (a float one, where `space` is 16-bit sRGB)
    resolution: float  # the document's pixels per inch
    clicked: object = None  # the node the artist had active (the layer, or one of its masks)
    on_top: bool = False  # a variation shows the whole picture: it goes on top of the layer stack
    model_kept: bool = False  # the entry runs a model the artist picked (not one of this picture)


def _space(item) -> Space:
    """The colour space of a document or a node."""
    return (item.colorModel(), item.colorDepth(), item.colorProfile())


def _convert(data: bytes, width: int, height: int, source: Space, target: Space) -> bytes:
    """Pixels stored in `source` as `target`, converted by Krita's own colour engine (as Image > Convert
    Image Color Space does) in a scratch document that is never shown and is closed at once."""
    if source == target:
        return data
    scratch = Krita.instance().createDocument(width, height, "SinGAN Studio conversion", *source, 72.0)
    try:
        node = scratch.createNode("pixels", "paintlayer")
        node.setPixelData(data, 0, 0, width, height)
        scratch.rootNode().addChildNode(node, None)
        scratch.waitForDone()
        if not scratch.setColorSpace(*target):
            raise CanvasError(
                f"Krita could not convert {' '.join(source)} to {' '.join(target)}: convert the image "
                "with Image > Convert Image Color Space... to RGB/Alpha, 16-bit integer/channel"
            )
        scratch.waitForDone()
        return bytes(node.pixelData(0, 0, width, height))
    finally:
        scratch.setModified(False)
        scratch.close()


def read_canvas(document=None, op: Operation | None = None) -> tuple[Canvas, Target]:
    """The active document as the artist sees it, the active layer, the selection and the background.

    `op` None: as for an entry that changes the selection (Harmonize selection). A variation (an entry
    that learns the whole picture, `op.picture`) needs no background (hiding a layer costs two refreshes of
    the whole image); it learns the picture without the variations it already added, so that the next one
    reuses the same model and varies the artist's picture, not the previous variation."""
    document = document if document is not None else Krita.instance().activeDocument()
    if document is None:
        raise CanvasError("open an image first")
    clicked = document.activeNode()
    node = _layer_of(clicked)
    picture = op is not None and op.picture
    own_pixels = op is not None and op.new_image  # the layer's own pixels: shown or hidden, the same
    if not picture and not own_pixels:
        item = node
        while item is not None and item.parentNode() is not None:  # the root has no eye
            if not item.visible():  # a hidden layer (or group) is not in the picture the artist sees
                raise CanvasError(HIDDEN_LAYER)
            item = item.parentNode()
    depth = check_color_depth(Editor.KRITA, document.colorModel(), document.colorDepth())
    # pixelData hands out the values as stored. A float image is converted to what the engine works on
    # (every layer read from its own space); an integer image is sent as stored, in one depth.
    floating = document.colorDepth() in FLOAT_DEPTHS
    space = SRGB_16 if floating else _space(document)
    if not floating and check_color_depth(Editor.KRITA, node.colorModel(), node.colorDepth()) != depth:
        raise CanvasError(
            f"the active layer is {node.colorDepth()} but the image is {document.colorDepth()}: convert the "
            "layer to the image's depth (Layer > Convert > Convert Layer Color Space...)"
        )
    width, height = document.width(), document.height()
    kept = op is not None and op.pick_model  # a picked model: a second run reuses it
    document.waitForDone()
    # A layer's local selection is its selection, as for Krita's own filters.
    selection = _local_selection(clicked, node)
    if selection is None:
        selection = document.selection()
    mask = bytes(selection.pixelData(0, 0, width, height)) if selection is not None else None
    layer = bytes(node.projectionPixelData(0, 0, width, height))
    layer = _convert(layer, width, height, _space(node), space) if floating else layer
    if own_pixels:
        composite, background = layer, None  # (nothing else is sent: no refresh of the image needed)
    elif op is not None and op.picture:
        composite = _projection_without(document, _results(document.rootNode(), op.layer_name), space)
        background = None
    else:
        # Layers over the active one (a paper texture, a colour grade) stay over the result, which goes
        # right above the active layer: the engine sees the picture without them, or they would apply twice.
        above = _layers_above(node)
        composite = _projection_without(document, above, space)
        background = _projection_without(document, [node, *above], space)
    return (
        Canvas(
            Editor.KRITA,
            width,
            height,
            composite=composite,
            layer=layer,
            background=background,
            selection=mask,
            name=document.name() or Path(document.fileName() or "").name,  # (name(): the title, if set)
            depth=depth,
        ),
        Target(
            document,
            node,
            width,
            height,
            space,
            _space(document),
            document.resolution(),
            clicked,
            on_top=picture,
            model_kept=kept,
        ),
    )


LAYER_TYPES = ("paintlayer", "grouplayer", "vectorlayer", "filelayer", "clonelayer")


def _layer_of(node):
    """The layer an action works on: the active layer, or the layer whose mask (transparency, filter,
    transform or local selection mask) the artist clicked in the Layers docker."""
    if node is not None and _is_mask(node):
        parent = node.parentNode()
        # the global selection is a mask of the image itself (a child of the root), not of a layer
        node = parent if parent is not None and parent.parentNode() is not None else None
    if node is None or node.type() not in LAYER_TYPES:
        raise CanvasError("select a layer (the pasted object) in the Layers docker first")
    return node


def _local_selection(clicked, layer):
    """The layer's local selection, or None: the local selection mask the artist clicked, else the layer's
    one visible local selection mask. Krita's filters use a layer's active, visible local selection instead
    of the global one; libkis does not say which mask is active, but a layer's only mask is (a new mask
    is made active). The wrappers of the layer's child list are SelectionMasks (with selection()); the
    active-node wrapper may not be."""
    if clicked is not None and clicked.type() == "selectionmask":
        mask = next((child for child in layer.childNodes() if _same(child, clicked)), None)
    else:
        masks = [c for c in layer.childNodes() if c.type() == "selectionmask" and c.visible()]
        if len(masks) > 1:
            raise CanvasError(
                "the active layer has several local selections: click the one to use in the Layers docker"
            )
        if not masks:
            return None
        mask = masks[0]
    read = getattr(mask, "selection", None)
    if read is None:
        raise CanvasError("this Krita cannot read a local selection: select the object globally instead")
    return read()


def _results(parent, name: str) -> list:
    """The layers this plugin added under `parent` as `name` or `name N` (its unique names), at any depth."""
    found = []
    for child in parent.childNodes():
        if is_result_name(child.name(), name):
            found.append(child)
        else:
            found.extend(_results(child, name))
    return found


def _layers_above(node) -> list:
    """The layers drawn over `node`: those above it in its group, and above each enclosing group (masks,
    such as the global selection's, draw nothing)."""
    above = []
    parent = node.parentNode()
    while parent is not None:
        siblings = parent.childNodes()  # bottom first
        index = next(i for i, child in enumerate(siblings) if _same(child, node))
        above.extend(child for child in siblings[index + 1 :] if not _is_mask(child))
        node, parent = parent, parent.parentNode()
    return above


def _projection_without(document, nodes: list, space: Space) -> bytes:
    """The image as shown with `nodes` hidden, in colour space `space`. Node.setVisible is not an undo
    step, so hiding them for one refresh leaves the artist's undo history as it was."""
    width, height = document.width(), document.height()
    hidden = [node for node in nodes if node.visible()]
    if not hidden:
        pixels = bytes(document.pixelData(0, 0, width, height))
    else:
        for node in hidden:
            node.setVisible(False)
        try:
            document.refreshProjection()
            document.waitForDone()
            pixels = bytes(document.pixelData(0, 0, width, height))
        finally:
            for node in hidden:
                node.setVisible(True)
            document.refreshProjection()
            document.waitForDone()
    return _convert(pixels, width, height, _space(document), space)


def add_result_layer(target: Target, patch: LayerPatch):
    """A new paint layer right above the active one, filled before it is inserted: inserting is Krita's only
    undo step here, so one Undo removes the whole result and the original layer is never written to.

    A variation, a picture of everything visible, goes on top of the layer stack instead: below the layers
    over the active one it would show them twice.

    The artist may have gone on working meanwhile: if that layer was deleted the result goes on top, and it
    becomes the active layer only if the artist is still on that layer (or its mask: their next stroke must
    not land on the result)."""
    document, node = target.document, target.node
    check_canvas_unchanged(
        (target.width, target.height), (document.width(), document.height()), target.model_kept
    )
    parent = node.parentNode()  # None once the layer was deleted
    above = node if parent is not None else None
    if parent is None or target.on_top:
        parent = document.rootNode()
        # the top layer; the global selection's mask stays above it, where Krita keeps it
        layers = [child for child in parent.childNodes() if not _is_mask(child)]
        above = layers[-1] if layers else None
    active = document.activeNode()
    layer = document.createNode(_unique_name(parent, patch.name), "paintlayer")
    # The result's pixels are in the canvas's space; the layer is in the image's (as it is now).
    data = _convert(patch.data, patch.width, patch.height, target.space, _space(layer))
    layer.setPixelData(data, patch.x, patch.y, patch.width, patch.height)
    parent.addChildNode(layer, above)
    if active is None or _same(active, target.clicked or node):
        document.setActiveNode(layer)
    else:
        # The artist moved on to another layer: give it back once Krita has made the new layer active
        # (it does so from a queued signal, after this returns).
        QTimer.singleShot(0, lambda: document.setActiveNode(active))
    return layer


def fill_result_layer(target: Target, layer, patch: LayerPatch) -> None:
    """Put the final result into the layer that holds its preview: its pixels and name. Neither is an undo
    step in Krita, so the one Undo that removed the preview layer now removes the result (the preview
    never stays behind as a second layer)."""
    document = target.document
    check_canvas_unchanged(
        (target.width, target.height), (document.width(), document.height()), target.model_kept
    )
    data = _convert(patch.data, patch.width, patch.height, target.space, _space(layer))
    layer.setPixelData(data, patch.x, patch.y, patch.width, patch.height)
    layer.setName(_unique_name(layer.parentNode(), patch.name, besides=layer))
    document.refreshProjection()


def open_new_image(target: Target, image: NewImage):
    """The picture as a new document in a view of its own, in the source document's colour space and
    resolution, its one paint layer holding the pixels (transparent where they are). Nothing of it is an
    undo step (the layer Krita makes with a document is filled and renamed, not added): closing the
    document is the way back, and the source document is untouched (it may even have been closed)."""
    app = Krita.instance()
    document = app.createDocument(
        image.width, image.height, image.title, *target.image_space, target.resolution
    )
    if document is None:
        raise CanvasError(
            f"Krita could not make a {image.width}x{image.height} image (is memory short?): close other "
            "images, or ask for a smaller factor"
        )
    try:
        layers = [node for node in document.rootNode().childNodes() if node.type() == "paintlayer"]
        if len(layers) != 1:
            raise CanvasError("Krita made the new image without its layer; see Krita's log")
        layer = layers[0]
        data = _convert(image.data, image.width, image.height, target.space, _space(layer))
        layer.setPixelData(data, 0, 0, image.width, image.height)
        layer.setName(image.layer_name)
        layer.setOpacity(255)  # (Krita gives it the opacity of the document's background colour)
        document.refreshProjection()
        document.waitForDone()
        window = app.activeWindow()
        if window is None:
            raise CanvasError("there is no Krita window to show the new image in")
        window.addView(document)
    except BaseException:
        document.setModified(False)
        document.close()
        raise
    return document


@dataclass
class ClipFile:
    """A clip's frames at the canvas's size as a .kra of one animated layer (kra.py) in a temporary folder,
    waiting to be copied into the image (the folder is removed then, or when the image was closed)."""

    clip: Animation
    folder: tempfile.TemporaryDirectory
    path: str
    step: int  # timeline frames per clip frame

    def discard(self) -> None:
        """Remove the folder; if a file in it is still held open, the system's temporary folder keeps it
        (a result is not turned into an error by that)."""
        try:
            self.folder.cleanup()
        except OSError:
            log.warning("could not remove %s", self.folder.name, exc_info=True)


def _bgra(image: QImage, sixteen: bool, opaque: bool) -> np.ndarray:
    """A QImage's pixels as H x W x 4 B, G, R, A (Krita's channel order), uint8 or uint16; `opaque`: alpha
    full (Qt's 16-bit smooth scaling leaves it a step or two below)."""
    image = image.convertToFormat(QImage.Format_RGBA64 if sixteen else QImage.Format_RGBA8888)
    if image.isNull():  # Qt could not allocate it
        raise CanvasError(
            "there is not enough memory for the clip's frames at the canvas's size: close other images, or "
            "make the clip with `engine animate` and import it"
        )
    dtype = np.uint16 if sixteen else np.uint8
    rows = np.frombuffer(image.constBits().asstring(image.sizeInBytes()), dtype)
    rows = rows.reshape(image.height(), -1)[:, : 4 * image.width()]
    bgra = rows.reshape(image.height(), image.width(), 4)[..., [2, 1, 0, 3]]
    if opaque:
        bgra[..., 3] = np.iinfo(dtype).max
    return bgra


def clip_step(document, fps: float) -> int:
    """Timeline frames per clip frame: 1 in an image not yet animated (the clip sets the rate); in one
    animated already the artist's rate stays, and each frame is held as long as the clip's rate asks."""
    if not any(node.animated() for node in _all_nodes(document.rootNode())):
        return 1
    return max(1, round(document.framesPerSecond() / fps))


def write_clip(target: Target, clip: Animation, step: int, on_frame=lambda index: None) -> ClipFile:
    """The clip's frames scaled by Qt from the model's size to the canvas, at the canvas's depth (16-bit
    for a 16-bit or float image), as one animated layer in a .kra, a keyframe every `step` frames
    (clip_step, read on the GUI thread). Runs on the worker thread (QImage needs no GUI): a large canvas
    takes seconds a frame, and Krita stays responsive meanwhile."""
    folder = tempfile.TemporaryDirectory(prefix="singan-clip-")
    sixteen = target.space[1] == "U16"

    def frames():
        for index, data in enumerate(clip.frames):
            on_frame(index)
            pixels = np.frombuffer(data, np.uint8)
            # An opaque frame stays opaque: Qt's smooth scaling would round its alpha to just below full.
            opaque = bool((pixels[3::4] == 255).all())
            if sixteen:  # the engine's 8-bit values, as 16-bit ones (x 257), in the machine's order
                wide = (pixels.astype(np.uint16) * 257).tobytes()
                layout = QImage.Format_RGBX64 if opaque else QImage.Format_RGBA64
                frame = QImage(wide, clip.width, clip.height, 8 * clip.width, layout)
            else:
                layout = QImage.Format_RGBX8888 if opaque else QImage.Format_RGBA8888
                frame = QImage(data, clip.width, clip.height, 4 * clip.width, layout)
            scaled = frame.scaled(target.width, target.height, Qt.IgnoreAspectRatio, Qt.SmoothTransformation)
            yield _bgra(scaled, sixteen, opaque)

    path = str(Path(folder.name) / "clip.kra")
    try:
        kra.write_animated_layer(
            Path(path), frames(), len(clip.frames), width=target.width, height=target.height,
            bits=16 if sixteen else 8, name=clip.name, fps=max(1, round(clip.fps)), step=step,
            icc=SRGB_ICC.read_bytes(),
        )  # fmt: skip
    except OSError as exc:
        folder.cleanup()
        raise CanvasError(
            f"could not write the clip to {folder.name} ({exc.strerror or exc}): is the disk full?"
        ) from None
    except BaseException:
        folder.cleanup()
        raise
    return ClipFile(clip, folder, path, step)


def add_animated_layer(target: Target, written: ClipFile):
    """The clip as a new animated paint layer on top of the layers (under the global selection's mask,
    where Krita keeps it), one keyframe a frame from frame 0 of the timeline, in one undo step: the .kra
    that write_clip made is opened (synchronously, with no view, in batch mode: no dialogs) and its layer
    copied in, keyframes and all. The layer takes the image's colour profile (assigned: the engine's values
    are the image's). Once it is in, the timeline's range covers the clip and its frame rate becomes the
    clip's; in an image animated already the artist's rate stays and each frame is held as long as the
    clip's rate asks. (Neither the range nor the rate is an undo step.)

    Krita's own Import Animation Frames (`Document.importAnimation`) is not used: Krita 5.1's importer
    takes each file's projection without waiting for it, and under load Krita crashed mid-import."""
    document, clip = target.document, written.clip
    try:
        check_canvas_unchanged(
            (target.width, target.height), (document.width(), document.height()), target.model_kept
        )
        document.waitForDone()
        root = document.rootNode()
        animated_before = any(node.animated() for node in _all_nodes(root))
        step = clip_step(document, clip.fps)
        if step != written.step:  # the image became animated (or its rate changed) while the clip was made
            raise CanvasError(
                "the image's animation (its frame rate, or its first animated layer) changed while the clip "
                "was made, so it was not added: run Animate layer again"
            )
        known = {node.uniqueId() for node in root.childNodes()}
        app = Krita.instance()
        batch = app.batchmode()
        app.setBatchmode(True)  # a load problem is logged, not asked about in a dialog
        try:
            scratch = app.openDocument(written.path)
        finally:
            app.setBatchmode(batch)
        if scratch is None:
            raise CanvasError("Krita could not open the clip's file; see Krita's log")
        try:
            scratch.waitForDone()
            layers = [node for node in scratch.rootNode().childNodes() if not _is_mask(node)]
            if len(layers) != 1 or not layers[0].animated():
                raise CanvasError("Krita read the clip's file without its animated layer; see Krita's log")
            source = layers[0]
            if source.colorProfile() != target.space[2]:
                # assigned, not converted: the values are the image's
                if not source.setColorProfile(target.space[2]):
                    raise CanvasError(f"Krita has no colour profile {target.space[2]!r} for the clip's layer")
                scratch.waitForDone()
            if _space(source) != target.image_space:
                # a float image's clip comes as 16-bit sRGB: converted to the image's own space here, in the
                # scratch document, so that the conversion is no undo step of the artist's
                if not source.setColorSpace(*target.image_space):
                    raise CanvasError(
                        f"Krita could not convert the clip's layer to {' '.join(target.image_space)}"
                    )
                scratch.waitForDone()
            top = [node for node in root.childNodes() if not _is_mask(node)]
            added_ok = root.addChildNode(source.duplicate(), top[-1] if top else None)
            document.waitForDone()
        finally:
            scratch.close()
    finally:
        written.discard()
    added = [node for node in root.childNodes() if node.uniqueId() not in known]
    if not added_ok or len(added) != 1 or not added[0].animated():
        raise CanvasError(
            "Krita could not add the clip's layer (see Krita's log); if a part of it was added, Undo "
            "removes it"
        )
    layer = added[0]
    layer.setName(_unique_name(root, clip.name, besides=layer))  # not an undo step in Krita
    end = (len(clip.frames) - 1) * step
    document.setFullClipRangeStartTime(0)
    document.setFullClipRangeEndTime(max(end, document.fullClipRangeEndTime() if animated_before else 0))
    if not animated_before:
        document.setFramesPerSecond(max(1, round(clip.fps)))
    # (The timeline stays at the artist's frame: Document.setCurrentTime would be an undo step of its own.)
    active = document.activeNode()
    if active is None or _same(active, target.clicked or target.node):
        document.setActiveNode(layer)
    else:  # the artist moved on to another layer: give it back once Krita has made the new one active
        QTimer.singleShot(0, lambda: document.setActiveNode(active))
    document.refreshProjection()
    return layer


def _all_nodes(parent) -> list:
    found = []
    for child in parent.childNodes():
        found.append(child)
        found.extend(_all_nodes(child))
    return found


def _is_mask(node) -> bool:
    """A transparency, filter, transform, colorize or (local or global) selection mask: it draws nothing
    of its own and belongs to a layer (the global selection's to the image)."""
    return node.type().endswith("mask")


def _same(a, b) -> bool:
    """Whether two libkis Node wrappers are the same layer (each call returns a new wrapper)."""
    return a is not None and b is not None and a.uniqueId() == b.uniqueId()


def _unique_name(parent, base: str, besides=None) -> str:
    """`base`, or "base 2", "base 3"...: a name no child of `parent` (but `besides`) has."""
    taken = {child.name() for child in parent.childNodes() if not _same(child, besides)}
    if base not in taken:
        return base
    n = 2
    while f"{base} {n}" in taken:
        n += 1
    return f"{base} {n}"
