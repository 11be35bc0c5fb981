"""Adapters for Krita's document, layer and selection: read a `Canvas`; write a `LayerPatch` as a layer."""

from __future__ import annotations

from dataclasses import dataclass

from krita import Krita

from editor_bridge.plugin_core import Canvas, CanvasError, Editor, LayerPatch, check_color_depth


@dataclass
class Target:
    """Where the result goes: the document and the layer that was active when the artist chose the action."""

    document: object
    node: object


def read_canvas(document=None) -> tuple[Canvas, Target]:
    """The active document as the artist sees it, the active layer, the selection and the background."""
    document = document if document is not None else Krita.instance().activeDocument()
    if document is None:
        raise CanvasError("open an image first")
    node = document.activeNode()
    if node is None or node.type() not in (
        "paintlayer",
        "grouplayer",
        "vectorlayer",
        "filelayer",
        "clonelayer",
    ):
        raise CanvasError("select a layer (the pasted object) in the Layers docker first")
    check_color_depth(Editor.KRITA, document.colorModel(), document.colorDepth())
    check_color_depth(Editor.KRITA, node.colorModel(), node.colorDepth())
    width, height = document.width(), document.height()
    document.waitForDone()
    composite = bytes(document.pixelData(0, 0, width, height))
    layer = bytes(node.projectionPixelData(0, 0, width, height))
    selection = document.selection()
    mask = bytes(selection.pixelData(0, 0, width, height)) if selection is not None else None
    return (
        Canvas(
            Editor.KRITA,
            width,
            height,
            composite=composite,
            layer=layer,
            background=_background(document, node, width, height),
            selection=mask,
            name=document.name() or "",
        ),
        Target(document, node),
    )


def _background(document, node, width: int, height: int) -> bytes | None:
    """The projection without the active layer. Node.setVisible is not an undo step, so hiding the layer for
    one refresh leaves the artist's undo history as it was."""
    if not node.visible():
        return bytes(document.pixelData(0, 0, width, height))
    node.setVisible(False)
    try:
        document.refreshProjection()
        document.waitForDone()
        return bytes(document.pixelData(0, 0, width, height))
    finally:
        node.setVisible(True)
        document.refreshProjection()
        document.waitForDone()


def add_result_layer(target: Target, patch: LayerPatch):
    """A new paint layer right above the active one, filled before it is inserted: inserting is Krita's only
    undo step here, so one Undo removes the whole result and the original layer is never written to."""
    document, node = target.document, target.node
    layer = document.createNode(_unique_name(node.parentNode(), patch.name), "paintlayer")
    layer.setPixelData(patch.data, patch.x, patch.y, patch.width, patch.height)
    node.parentNode().addChildNode(layer, node)
    document.setActiveNode(layer)
    document.refreshProjection()
    document.waitForDone()
    return layer


def _unique_name(parent, base: str) -> str:
    taken = {child.name() for child in parent.childNodes()}
    if base not in taken:
        return base
    n = 2
    while f"{base} {n}" in taken:
        n += 1
    return f"{base} {n}"
