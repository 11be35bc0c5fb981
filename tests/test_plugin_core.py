"""plugin_core without an editor: Krita and GIMP canvases -> requests, and results -> layer bytes."""

from __future__ import annotations

import numpy as np
import pytest

from editor_bridge import frames
from editor_bridge.errors import ImageError
from editor_bridge.plugin_core import (
    Canvas,
    CanvasError,
    Editor,
    EmptySelection,
    Mnemonics,
    UnsupportedColorDepth,
    animation_from_result,
    apply_job,
    check_canvas_unchanged,
    check_color_depth,
    find,
    mask_bbox,
    menu,
    new_image_from_result,
    patch_from_result,
    picked_model_job,
)
from editor_bridge.protocol import BBox, BitDepth, ChannelOrder, ResultReply
from editor_bridge.wire import Message, WireCodec
from engine import families

ENTRIES = {op.action: op for op in menu(families.capabilities())}
HARMONIZE, EDIT, VARIATION = ENTRIES["harmonize"], ENTRIES["edit"], ENTRIES["variation"]
RESTYLE, GENERATE = ENTRIES["restyle"], ENTRIES["generate"]

W, H = 12, 8


def rgba_to(editor: Editor, rgba: np.ndarray) -> bytes:
    return np.ascontiguousarray(frames.from_canonical(rgba, editor.channel_order)).tobytes()


def make_canvas(editor: Editor = Editor.KRITA, *, selection: bool = True, background: bool = True) -> Canvas:
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    bg[..., 3] = 255
    obj = np.zeros((H, W, 4), np.uint8)
    obj[2:5, 3:7] = (200, 10, 30, 255)  # the pasted object, RGBA
    comp = bg.copy()
    comp[2:5, 3:7] = obj[2:5, 3:7]
    sel = None
    if selection:
        mask = np.zeros((H, W), np.uint8)
        mask[1:6, 2:9] = 255
        mask[1, 2] = 128  # a soft edge
        sel = mask.tobytes()
    return Canvas(
        editor,
        W,
        H,
        composite=rgba_to(editor, comp),
        layer=rgba_to(editor, obj),
        background=rgba_to(editor, bg) if background else None,
        selection=sel,
    )


def roundtrip(content, buffers) -> Message:
    """Through the real codec, as the engine's reply would arrive."""
    codec = WireCodec("k" * 64)
    return codec.deserialize(codec.serialize(content, buffers=buffers))


def echo_result(job, transform=lambda a: a, order=None) -> Message:
    request = job.request
    image = frames.from_frame(job.buffers, request.image)
    buffers: list = []
    desc = frames.attach(buffers, transform(np.array(image)), order or request.image.channel_order)
    return roundtrip(ResultReply(job_id="j1", images=[desc]), buffers)


@pytest.mark.parametrize(
    "editor,order", [(Editor.KRITA, ChannelOrder.BGRA), (Editor.GIMP, ChannelOrder.RGBA)]
)
def test_harmonize_request_carries_editor_bytes_mask_and_background(editor, order):
    canvas = make_canvas(editor)
    job = apply_job(HARMONIZE, canvas, preset="tiny", seed=3)
    req = job.request
    assert req.operation == "harmonize" and req.family == "consingan"
    assert "color_match" not in req.params  # the engine's default
    assert apply_job(HARMONIZE, canvas, color_match=0.75).request.params["color_match"] == 0.75
    assert req.image.channel_order is order and req.background.channel_order is order
    assert req.train_if_missing and req.train == {"preset": "tiny"} and req.params == {"seed": 3}
    assert req.mask.channel_order is ChannelOrder.GRAY
    assert job.bbox == req.image.bbox == req.mask.bbox == BBox(x=2, y=1, w=7, h=5)
    assert req.crop_to_bbox  # only the selection's box comes back: the layer is limited to it anyway
    # the frames are the editor's bytes, untouched
    assert bytes(job.buffers[req.image.buffer_index]) == canvas.composite
    assert bytes(job.buffers[req.background.buffer_index]) == canvas.background
    assert bytes(job.buffers[req.mask.buffer_index]) == canvas.selection
    # and survive the codec as the engine will see them
    msg = roundtrip(req, job.buffers)
    assert msg.image(msg.content.mask).shape == (H, W, 1)


def test_every_gimp_procedure_is_one_gimps_action_search_can_find():
    """GIMP leaves actions named ...-set or ...-accel, context-... and filters-recent-... out of its action
    search ("/") and its history (gimpaction-history.c, gimp_action_history_is_blacklisted_action): Generate
    from set, once python-fu-singan-generate-from-set, was in the Filters menu only."""
    for op in ENTRIES.values():
        name = op.gimp_procedure
        assert not name.endswith(("-set", "-accel")) and not name.startswith(("context-", "filters-recent-"))
    from engine.operations import EditorUse

    with pytest.raises(ValueError, match="'generate_from_set': GIMP's action search hides"):
        EditorUse("Generated", "generate_from_set")


def test_the_menu_is_built_from_the_engines_capabilities():
    assert [(op.label, op.krita_action, op.gimp_procedure, op.layer_name) for op in ENTRIES.values()] == [
        ("Harmonize selection", "singan_harmonize", "python-fu-singan-harmonize", "Harmonized"),
        ("Edit selection", "singan_edit", "python-fu-singan-edit", "Edited"),
        ("Generate variation", "singan_variation", "python-fu-singan-variation", "Variation"),
        ("Generate from set", "singan_generate", "python-fu-singan-generate", "Generated"),
        ("Animate layer", "singan_animate", "python-fu-singan-animate", "Animated"),
        ("Re-style layer", "singan_restyle", "python-fu-singan-restyle", "Re-styled"),
        ("Paint to image", "singan_paint_to_image", "python-fu-singan-paint-to-image", "Painted"),
        ("Upscale layer", "singan_upscale_layer", "python-fu-singan-upscale-layer", "Upscaled"),
        ("Retrain and harmonize selection", "singan_retrain_harmonize", "python-fu-singan-retrain-harmonize",
         "Harmonized"),
        ("Retrain and edit selection", "singan_retrain_edit", "python-fu-singan-retrain-edit", "Edited"),
    ]  # fmt: skip
    assert HARMONIZE.ask_color_match and HARMONIZE.can_refine and HARMONIZE.object_on_layer
    assert not EDIT.ask_color_match and not EDIT.object_on_layer and VARIATION.new_layer and VARIATION.picture
    assert ENTRIES["retrain-edit"].retrain and not EDIT.retrain
    job = apply_job(EDIT, make_canvas())
    assert job.request.operation == "edit" and not job.request.retrain
    assert apply_job(ENTRIES["retrain-edit"], make_canvas()).request.retrain
    assert find(list(ENTRIES.values()), "python-fu-singan-edit") is EDIT
    with pytest.raises(CanvasError, match="no longer offers 'singan_paint': restart the editor"):
        find(list(ENTRIES.values()), "singan_paint")
    # An operation of another family, and one that two families have, labelled with the family's name.
    caps = families.capabilities()
    fill = {
        **caps["operations"][0],
        "name": "fill", "family": "other", "label": "Fill selection",
        "editor": {**caps["operations"][0]["editor"], "action": "fill", "layer_name": "Filled"},
    }  # fmt: skip
    twin = {**caps["operations"][2], "family": "other"}  # the same entry in another family
    other = {"name": "other", "label": "Other", "finetune_tasks": []}
    more = menu({"families": [*caps["families"], other], "operations": [*caps["operations"], fill, twin]})
    labels = [op.label for op in more]
    assert "Fill selection" in labels and "Generate variation (ConSinGAN)" in labels
    assert "Generate variation (Other)" in labels
    filled = next(op for op in more if op.name == "fill")
    assert filled.family == "other" and not filled.can_refine and filled.krita_action == "singan_fill"
    no_editor = next(op for op in caps["operations"] if op["name"] == "export")  # a file: no menu entry
    assert no_editor["editor"] is None and len(menu({**caps, "operations": [no_editor]})) == 0


def test_no_selection_means_the_active_layer():
    canvas = make_canvas(selection=False)
    job = apply_job(HARMONIZE, canvas)
    mask = frames.from_frame(job.buffers, job.request.mask)[..., 0]
    assert job.bbox == BBox(x=3, y=2, w=4, h=3)
    assert set(np.unique(mask)) == {0, 255} and mask[2:5, 3:7].all() and mask.sum() == 12 * 255


def test_missing_or_empty_background_trains_on_the_composite_without_a_second_frame():
    for canvas in (
        make_canvas(background=False),
        Canvas(Editor.GIMP, W, H, make_canvas().composite, make_canvas().layer, bytes(W * H * 4)),
    ):
        job = apply_job(HARMONIZE, canvas)
        assert job.request.background.buffer_index == job.request.image.buffer_index
        assert len(job.buffers) == 2


def test_empty_selection_and_empty_layer_are_refused():
    canvas = make_canvas()
    empty = Canvas(Editor.KRITA, W, H, canvas.composite, canvas.layer, selection=bytes(W * H))
    with pytest.raises(EmptySelection, match="select"):
        apply_job(HARMONIZE, empty)
    with pytest.raises(EmptySelection):
        mask_bbox(np.zeros((3, 3), np.uint8))


def test_wrong_sizes_are_refused():
    with pytest.raises(ImageError, match="composite"):
        Canvas(Editor.KRITA, W, H, b"\0" * 5, b"\0" * (W * H * 4))
    with pytest.raises(ImageError, match="selection"):
        Canvas(Editor.KRITA, W, H, b"\0" * (W * H * 4), b"\0" * (W * H * 4), selection=b"\0")


@pytest.mark.parametrize(
    "editor,model,depth,ok",
    [
        (Editor.KRITA, "RGBA", "U8", 8),
        (Editor.KRITA, "RGBA", "U16", 16),
        # float images travel at 16 bits, converted by the editor
        (Editor.KRITA, "RGBA", "F16", 16),
        (Editor.KRITA, "RGBA", "F32", 16),
        (Editor.KRITA, "CMYKA", "U8", None),
        (Editor.KRITA, "GRAYA", "F32", None),
        (Editor.KRITA, "RGBA", "F64", None),  # no such Krita depth: not guessed at
        (Editor.GIMP, "RGB", "U8_NON_LINEAR", 8),
        (Editor.GIMP, "RGB", "PRECISION_U8_PERCEPTUAL", 8),
        (Editor.GIMP, "RGB", "U16_LINEAR", 16),
        (Editor.GIMP, "RGB", "PRECISION_U16_NON_LINEAR", 16),
        (Editor.GIMP, "RGB", "U32_LINEAR", 16),
        (Editor.GIMP, "RGB", "HALF_LINEAR", 16),
        (Editor.GIMP, "RGB", "PRECISION_FLOAT_NON_LINEAR", 16),
        (Editor.GIMP, "RGB", "DOUBLE_PERCEPTUAL", 16),
        (Editor.GIMP, "RGB", "FLOATING", None),
        (Editor.GIMP, "GRAY", "U8_NON_LINEAR", None),
        (Editor.GIMP, "INDEXED", "U8_NON_LINEAR", None),
    ],
)
def test_color_depth(editor, model, depth, ok):
    if ok:
        assert check_color_depth(editor, model, depth) == ok
    else:
        with pytest.raises(UnsupportedColorDepth, match="the engine works on RGB images") as info:
            check_color_depth(editor, model, depth)
        assert ("Convert Image Color Space" if editor is Editor.KRITA else "Image > Mode > RGB") in str(
            info.value
        )


@pytest.mark.parametrize("editor", list(Editor))
def test_result_limited_to_selection_in_editor_order(editor):
    canvas = make_canvas(editor)
    job = apply_job(HARMONIZE, canvas)
    message = echo_result(job, lambda a: 255 - a)  # inverts alpha too: 0 alpha from the engine must win
    patch = patch_from_result(HARMONIZE, canvas, job, message)
    assert (patch.x, patch.y, patch.width, patch.height, patch.name) == (2, 1, 7, 5, "Harmonized")
    got = np.frombuffer(patch.data, np.uint8).reshape(5, 7, 4)
    comp = np.frombuffer(canvas.composite, np.uint8).reshape(H, W, 4)[1:6, 2:9]
    assert (got[..., :3] == 255 - comp[..., :3]).all()  # channel order preserved both ways
    assert (got[..., 3] == 0).all()  # engine alpha 0 x selection -> transparent

    message = echo_result(job, lambda a: np.concatenate([255 - a[..., :3], a[..., 3:]], axis=2))
    got = np.frombuffer(patch_from_result(HARMONIZE, canvas, job, message).data, np.uint8)
    alpha = got.reshape(5, 7, 4)[..., 3]
    sel = np.frombuffer(canvas.selection, np.uint8).reshape(H, W)[1:6, 2:9]
    assert (alpha == sel).all()  # soft selection edges stay soft


def test_result_in_another_layout_or_cropped_to_the_bbox():
    canvas = make_canvas(Editor.KRITA)
    job = apply_job(HARMONIZE, canvas)
    full = np.full((H, W, 3), (10, 20, 30), np.uint8)
    buffers: list = []
    desc = frames.attach(buffers, full, ChannelOrder.RGB)
    patch = patch_from_result(HARMONIZE, canvas, job, roundtrip(ResultReply(images=[desc]), buffers))
    px = np.frombuffer(patch.data, np.uint8).reshape(5, 7, 4)
    assert tuple(px[2, 2]) == (30, 20, 10, 255)  # BGRA for Krita, alpha from the selection

    crop = np.full((5, 7), 0.5, np.float32)
    buffers = []
    desc = frames.attach(buffers, crop, ChannelOrder.GRAY)
    assert desc.bit_depth is BitDepth.F32
    patch = patch_from_result(HARMONIZE, canvas, job, roundtrip(ResultReply(images=[desc]), buffers))
    assert tuple(np.frombuffer(patch.data, np.uint8)[8:12]) == (128, 128, 128, 255)

    buffers = []
    desc = frames.attach(buffers, np.zeros((3, 3, 3), np.uint8), ChannelOrder.RGB)
    with pytest.raises(ImageError, match="3x3"):
        patch_from_result(HARMONIZE, canvas, job, roundtrip(ResultReply(images=[desc]), buffers))
    with pytest.raises(ImageError, match="no image"):
        patch_from_result(HARMONIZE, canvas, job, roundtrip(ResultReply(), []))


def test_a_clip_comes_as_rgba_frames_of_one_size_whatever_their_layout():
    animate = ENTRIES["animate"]
    assert animate.frames and animate.new_layer and animate.picture and animate.fps == 10.0
    canvas = make_canvas(Editor.KRITA, selection=False)
    buffers: list = []
    rgb = np.full((4, 6, 3), (10, 20, 30), np.uint8)
    bgra16 = np.full((4, 6, 4), (30 * 257, 20 * 257, 10 * 257, 65535), np.uint16)  # 16-bit, BGRA: the same
    descs = [frames.attach(buffers, rgb, ChannelOrder.RGB), frames.attach(buffers, bgra16, ChannelOrder.BGRA)]
    clip = animation_from_result(animate, canvas, roundtrip(ResultReply(images=descs), buffers))
    assert (clip.width, clip.height, clip.canvas_width, clip.canvas_height) == (6, 4, W, H)
    for data in clip.frames:  # RGBA bytes, 8 bits, in that order for both editors
        assert len(data) == 6 * 4 * 4 and tuple(np.frombuffer(data, np.uint8)[:4]) == (10, 20, 30, 255)
    buffers = []
    odd = [frames.attach(buffers, rgb, ChannelOrder.RGB), frames.attach(buffers, rgb[:3], ChannelOrder.RGB)]
    with pytest.raises(ImageError, match="frames differ in size .6x4 and 6x3."):
        animation_from_result(animate, canvas, roundtrip(ResultReply(images=odd), buffers))
    with pytest.raises(ImageError, match="holds no clip"):
        animation_from_result(animate, canvas, roundtrip(ResultReply(images=odd[:1]), buffers[:1]))


def test_u16_result():
    canvas = make_canvas(Editor.GIMP, selection=False)
    job = apply_job(EDIT, canvas)
    buffers: list = []
    desc = frames.attach(buffers, np.full((H, W, 4), 65535, np.uint16), ChannelOrder.RGBA)
    patch = patch_from_result(EDIT, canvas, job, roundtrip(ResultReply(images=[desc]), buffers))
    assert patch.name == "Edited" and set(patch.data) == {255}


def sixteen_bit(canvas: Canvas) -> Canvas:
    """The same canvas at 16 bits (each 8-bit level v becomes v * 257, as an editor's conversion makes it)."""

    def widen(data):
        return None if data is None else (np.frombuffer(data, np.uint8).astype(np.uint16) * 257).tobytes()

    return Canvas(
        canvas.editor, W, H, widen(canvas.composite), widen(canvas.layer), widen(canvas.background),
        canvas.selection, depth=16,
    )  # fmt: skip


@pytest.mark.parametrize("editor", list(Editor))
@pytest.mark.parametrize("selection", [True, False])
def test_16_bit_canvas_goes_out_and_comes_back_at_16_bits(editor, selection):
    canvas8 = make_canvas(editor, selection=selection)
    canvas = sixteen_bit(canvas8)
    job, job8 = apply_job(HARMONIZE, canvas), apply_job(HARMONIZE, canvas8)
    assert job.bbox == job8.bbox  # the same region, from the selection or the 16-bit layer's alpha
    assert job.request.image.bit_depth is BitDepth.U16 and job.request.mask.bit_depth is BitDepth.U8
    sent = frames.from_frame(job.buffers, job.request.image)
    assert (sent == frames.from_frame(job8.buffers, job8.request.image).astype(np.uint16) * 257).all()
    # A 16-bit result keeps its 16 bits (no rounding through 8), in the editor's order, with the
    # region's alpha
    message = echo_result(job, lambda a: np.concatenate([a[..., :3] // 3 + 1, a[..., 3:]], axis=2))
    patch = patch_from_result(HARMONIZE, canvas, job, message)
    b = job.bbox
    got = np.frombuffer(patch.data, np.uint16).reshape(b.h, b.w, 4)
    comp = canvas.pixels(canvas.composite)[b.y : b.y + b.h, b.x : b.x + b.w]
    assert (got[..., :3] == comp[..., :3] // 3 + 1).all()
    patch8 = patch_from_result(HARMONIZE, canvas8, job8, echo_result(job8))
    alpha8 = np.frombuffer(patch8.data, np.uint8).reshape(b.h, b.w, 4)[..., 3]
    assert (np.abs(got[..., 3].astype(int) - alpha8.astype(int) * 257) <= 257).all()
    # 8-bit and float results are widened to the canvas's 16 bits
    for result, expected in ((np.full((b.h, b.w, 3), 128, np.uint8), 128 * 257),
                             (np.full((b.h, b.w, 3), 0.5, np.float32), 32768)):  # fmt: skip
        buffers: list = []
        desc = frames.attach(buffers, result, ChannelOrder.RGB)
        patch = patch_from_result(HARMONIZE, canvas, job, roundtrip(ResultReply(images=[desc]), buffers))
        assert (np.frombuffer(patch.data, np.uint16).reshape(b.h, b.w, 4)[..., :3] == expected).all()


def test_16_bit_canvas_sizes_are_checked():
    with pytest.raises(ImageError, match="read the whole canvas at 16 bits"):
        Canvas(Editor.KRITA, W, H, b"\0" * (W * H * 4), b"\0" * (W * H * 4), depth=16)
    with pytest.raises(ImageError, match="8- or 16-bit"):
        Canvas(Editor.KRITA, W, H, b"\0" * (W * H * 4), b"\0" * (W * H * 4), depth=12)


def test_variation_jobs():
    canvas = make_canvas(Editor.GIMP)
    job = apply_job(VARIATION, canvas, preset="tiny", seed=5)
    req = job.request
    assert (req.operation, req.image, req.mask, req.crop_to_bbox) == ("sample", None, None, False)
    assert req.params == {"n": 1, "width": W, "height": H, "seed": 5} and req.train == {"preset": "tiny"}
    # The model learns the picture as the artist sees it (and is found again by it).
    assert req.train_if_missing and bytes(job.buffers[req.background.buffer_index]) == canvas.composite
    assert job.bbox == BBox(x=2, y=1, w=7, h=5)
    sample = np.full((H, W, 3), 9, np.uint8)
    buffers: list = []
    desc = frames.attach(buffers, sample, ChannelOrder.RGB)
    message = roundtrip(ResultReply(images=[desc]), buffers)
    patch = patch_from_result(VARIATION, canvas, job, message)
    assert (patch.width, patch.height, patch.name) == (7, 5, "Variation")

    whole = make_canvas(Editor.GIMP, selection=False)
    job = apply_job(VARIATION, whole)
    assert job.bbox == BBox(x=0, y=0, w=W, h=H)
    patch = patch_from_result(VARIATION, whole, job, message)
    assert set(np.frombuffer(patch.data, np.uint8).reshape(H, W, 4)[..., 3].ravel()) == {255}


def test_a_result_is_placed_only_on_a_canvas_of_the_size_it_was_made_for():
    check_canvas_unchanged((640, 480), (640, 480))
    with pytest.raises(CanvasError, match=r"changed size .* \(640x480 to 630x470\).*Run it again") as e:
        check_canvas_unchanged((640, 480), (630, 470))
    # a model that learned the picture does not fit the resized one: the next run trains (minutes)
    assert str(e.value).endswith("Run it again: the resized picture trains a model of its own (minutes)")
    with pytest.raises(CanvasError) as e:
        check_canvas_unchanged((640, 480), (630, 470), model_kept=True)  # a model the artist picked
    assert str(e.value).endswith("Run it again (the model is kept, so it takes seconds)")


def test_harmonize_refuses_a_selection_off_the_layer_and_an_opaque_layer_with_no_selection():
    import dataclasses

    canvas = make_canvas()
    moved = np.zeros((H, W), np.uint8)
    moved[6:8, 0:2] = 255  # the selection left behind after the pasted layer was moved
    off = dataclasses.replace(canvas, selection=moved.tobytes())
    with pytest.raises(CanvasError, match="the selection does not touch the active layer"):
        apply_job(HARMONIZE, off)
    apply_job(EDIT, off)  # an edit may target any region of the picture
    opaque = dataclasses.replace(canvas, layer=canvas.composite, selection=None)
    with pytest.raises(CanvasError, match="nothing is selected and the active layer covers the whole canvas"):
        apply_job(HARMONIZE, opaque)
    apply_job(HARMONIZE, dataclasses.replace(canvas, selection=None))  # the layer's own shape


def test_restyle_runs_a_picked_model_on_the_layer_around_the_selection():
    assert RESTYLE.pick_model and (RESTYLE.family, RESTYLE.tasks) == ("cyclegan", ("restyle",))
    assert [(c.name, c.options, c.default) for c in RESTYLE.choices] == [("direction", ("a2b", "b2a"), "a2b")]
    assert not HARMONIZE.pick_model and not HARMONIZE.choices
    big_w, big_h = 200, 150
    rng = np.random.default_rng(1)
    layer = rng.integers(0, 256, (big_h, big_w, 4), dtype=np.uint8)
    layer[..., 3] = 255
    selection = np.zeros((big_h, big_w), np.uint8)
    selection[100:120, 10:40] = 255
    canvas = Canvas(
        Editor.GIMP,
        big_w,
        big_h,
        composite=layer.tobytes(),
        layer=layer.tobytes(),
        selection=selection.tobytes(),
    )
    job = picked_model_job(RESTYLE, canvas, "m123", {"direction": "b2a"})
    req = job.request
    assert (req.operation, req.family, req.model_id, req.params) == (
        "restyle",
        "cyclegan",
        "m123",
        {"direction": "b2a"},
    )
    assert not req.train_if_missing and req.background is None and req.crop_to_bbox
    # The layer's own pixels, with 64 px of context around the selection (clipped at the canvas's edges)
    assert (req.image.width, req.image.height) == (30 + 10 + 64, 20 + 64 + 30)
    assert req.image.bbox == BBox(x=10, y=64, w=30, h=20) and job.bbox == BBox(x=10, y=100, w=30, h=20)
    sent = frames.from_frame(job.buffers, req.image)
    assert (np.asarray(sent) == layer[36:150, 0:104]).all()
    assert picked_model_job(RESTYLE, canvas, "m123", {}).request.params == {"direction": "a2b"}
    with pytest.raises(CanvasError, match="no choice 'sideways'"):
        picked_model_job(RESTYLE, canvas, "m123", {"sideways": "a2b"})
    # The result comes back cropped to the selection; outside it the new layer stays transparent
    out = np.array(sent)[64:84, 10:40].copy()
    out[..., :3] = 255 - out[..., :3]
    buffers: list = []
    desc = frames.attach(buffers, out, ChannelOrder.RGBA)
    patch = patch_from_result(
        RESTYLE, canvas, job, roundtrip(ResultReply(job_id="j", images=[desc]), buffers)
    )
    assert (patch.x, patch.y, patch.width, patch.height, patch.name) == (10, 100, 30, 20, "Re-styled")
    assert (np.frombuffer(patch.data, np.uint8).reshape(20, 30, 4)[..., :3] == out[..., :3]).all()


def test_paint_to_image_sends_the_whole_layer_whatever_is_selected():
    paint = ENTRIES["paint_to_image"]
    assert paint.pick_model and paint.whole_layer and not RESTYLE.whole_layer
    assert (paint.family, paint.tasks, paint.choices) == ("singan", ("generation",), ())
    canvas = make_canvas(Editor.KRITA)  # a selection of 7 x 5 in the 12 x 8 canvas
    job = picked_model_job(paint, canvas, "m5", {})
    req = job.request
    assert (req.operation, req.family, req.model_id) == ("paint2image", "singan", "m5")
    assert (req.image.width, req.image.height) == (W, H) and job.bbox == BBox(x=0, y=0, w=W, h=H)
    assert req.image.bbox == BBox(x=0, y=0, w=W, h=H)
    assert bytes(np.asarray(frames.from_frame(job.buffers, req.image))) == bytes(canvas.layer)


def test_generate_from_set_draws_one_seeded_square_in_the_selection_or_the_canvas():
    assert (
        GENERATE.pick_model
        and GENERATE.new_layer
        and (GENERATE.family, GENERATE.tasks) == ("sagan", ("set",))
    )
    assert not GENERATE.choices
    canvas = make_canvas(Editor.KRITA)  # selection bounds: x 2-8, y 1-5 (7 x 5)
    job = picked_model_job(GENERATE, canvas, "m9", {}, seed=77)
    req = job.request
    assert (req.operation, req.family, req.model_id, req.image, req.background) == (
        "sample", "sagan", "m9", None, None
    )  # fmt: skip
    assert req.params == {"n": 1, "width": 5, "height": 5, "seed": 77} and not job.buffers
    assert job.bbox == BBox(x=3, y=1, w=5, h=5)  # the largest square in the bounds, centred
    whole = picked_model_job(GENERATE, make_canvas(Editor.GIMP, selection=False), "m9", {}, seed=1)
    assert whole.bbox == BBox(x=(W - H) // 2, y=0, w=H, h=H)
    sample = np.zeros((5, 5, 4), np.uint8)
    sample[..., :3], sample[..., 3] = 90, 255
    sample[0, 0, 3] = 0  # the sample's own transparency
    buffers: list = []
    desc = frames.attach(buffers, sample, ChannelOrder.RGBA)
    patch = patch_from_result(
        GENERATE, canvas, job, roundtrip(ResultReply(job_id=None, images=[desc], seeds=[77]), buffers)
    )
    assert (patch.x, patch.y, patch.width, patch.height, patch.name) == (3, 1, 5, 5, "Generated (seed 77)")
    alpha = np.frombuffer(patch.data, np.uint8).reshape(5, 5, 4)[..., 3]
    assert alpha[0, 0] == 0 and (alpha.ravel()[1:] == 255).all()  # the sample's own, in the selection


def test_generate_from_set_asks_for_the_best_of_how_many_seeds_and_names_the_layer_with_the_seed_kept():
    (ask,) = GENERATE.asks
    assert (ask.name, ask.integer, ask.minimum, ask.maximum, ask.default) == ("best_of", True, 1, 64, 1)
    strength = next(a for a in ENTRIES["upscale_layer"].asks if a.name == "strength")  # 0 to 1
    assert (ask.step, ask.decimals, strength.step, strength.decimals) == (1.0, 0, 0.05, 2)  # dialog boxes
    canvas = make_canvas(Editor.KRITA)
    job = picked_model_job(GENERATE, canvas, "m9", {}, seed=77, values={"best_of": 4.0})
    assert job.request.params == {"n": 1, "width": 5, "height": 5, "seed": 77, "best_of": 4}
    assert type(job.request.params["best_of"]) is int  # as the engine's parameter takes it
    sample = np.full((5, 5, 4), 200, np.uint8)
    buffers: list = []
    desc = frames.attach(buffers, sample, ChannelOrder.RGBA)
    patch = patch_from_result(
        GENERATE, canvas, job, roundtrip(ResultReply(job_id=None, images=[desc], seeds=[79]), buffers)
    )
    assert patch.name == "Generated (seed 79)"  # the seed the engine kept, which draws it again alone
    one = picked_model_job(GENERATE, canvas, "m9", {}, seed=77, values={"best_of": 1})
    assert one.request.params["best_of"] == 1
    reply = roundtrip(ResultReply(job_id=None, images=[desc]), buffers)  # an operation that names no seed
    assert patch_from_result(GENERATE, canvas, one, reply).name == "Generated (seed 77)"  # the one drawn
    assert patch_from_result(GENERATE, canvas, job, reply).name == "Generated"  # best of 4: which is unknown
    with pytest.raises(CanvasError, match="Best of must be a number from 1 to 64"):
        picked_model_job(GENERATE, canvas, "m9", {}, seed=77, values={"best_of": 65})
    with pytest.raises(CanvasError, match=r"Best of must be a whole number \(got 2.5\)"):
        picked_model_job(GENERATE, canvas, "m9", {}, seed=77, values={"best_of": 2.5})
    with pytest.raises(CanvasError, match="asks for no 'strength'"):
        picked_model_job(GENERATE, canvas, "m9", {}, seed=77, values={"strength": 0.5})
    with pytest.raises(CanvasError, match="asks for no 'best_of'"):
        picked_model_job(RESTYLE, canvas, "m1", {}, values={"best_of": 2})


def test_restyle_without_a_selection_keeps_the_layers_own_alpha():
    canvas = make_canvas(Editor.KRITA, selection=False)
    job = picked_model_job(RESTYLE, canvas, "m1", {})
    assert job.bbox == BBox(x=3, y=2, w=4, h=3)  # the layer's opaque part
    sent = np.array(frames.from_frame(job.buffers, job.request.image))
    inner = job.request.image.bbox
    out = sent[inner.y : inner.y + inner.h, inner.x : inner.x + inner.w].copy()
    out[0, 0, 3] = 100  # a soft pixel of the layer's own: kept as it is, not multiplied by the alpha again
    buffers: list = []
    desc = frames.attach(buffers, out, ChannelOrder.BGRA)
    patch = patch_from_result(
        RESTYLE, canvas, job, roundtrip(ResultReply(job_id="j", images=[desc]), buffers)
    )
    assert np.frombuffer(patch.data, np.uint8).reshape(3, 4, 4)[0, 0, 3] == 100


@pytest.mark.parametrize("editor", [Editor.KRITA, Editor.GIMP])
def test_upscale_layer_sends_the_layers_selected_part_and_gives_a_picture_of_its_own(editor):
    """Upscale layer asks for its factor and strength (the engine's ranges and defaults); the model learns,
    and the engine enlarges, the active layer's own pixels in the selection's bounds, their alpha times the
    selection; the result is a picture of the region's size times the factor, not a layer of the canvas."""
    up = ENTRIES["upscale_layer"]
    assert up.new_image and not up.new_layer and not up.pick_model
    assert [(a.name, a.minimum, a.maximum, a.default, a.integer) for a in up.asks] == [
        ("factor", 1.0, 16.0, 4.0, False),
        ("strength", 0.0, 1.0, 0.75, False),
    ]
    canvas = make_canvas(editor)
    job = apply_job(up, canvas, preset="tiny", values={"factor": 2})
    req = job.request
    assert req.operation == "upscale" and req.family == "singan" and req.train_if_missing
    assert req.params == {"factor": 2.0} and req.train == {"preset": "tiny"}
    assert req.background == req.image and req.image.bbox is None and req.mask is None
    assert not req.crop_to_bbox and not req.preview
    assert job.bbox == BBox(x=2, y=1, w=7, h=5)  # the selection's bounds
    sent, order = frames.to_canonical(
        np.array(frames.from_frame(job.buffers, req.image)), req.image.channel_order
    )
    layer = frames.to_canonical(canvas.pixels(canvas.layer), editor.channel_order)[0]
    assert sent.shape == (5, 7, 4) and (sent[..., :3] == layer[1:6, 2:9, :3]).all()
    mask = np.frombuffer(canvas.selection, np.uint8).reshape(H, W)[1:6, 2:9]
    assert (sent[..., 3] == (layer[1:6, 2:9, 3].astype(int) * mask + 127) // 255).all()  # soft edge kept
    whole = apply_job(up, make_canvas(editor, selection=False))  # no selection: the layer's visible part
    assert whole.bbox == BBox(x=3, y=2, w=4, h=3) and whole.request.params == {}
    with pytest.raises(CanvasError, match="Factor must be a number from 1 to 16"):
        apply_job(up, canvas, values={"factor": 40})
    with pytest.raises(CanvasError, match="asks for no 'seed'"):
        apply_job(up, canvas, values={"seed": 3})
    empty = make_canvas(editor)
    empty = Canvas(editor, W, H, empty.composite, bytes(W * H * 4), selection=empty.selection)
    with pytest.raises(EmptySelection, match="the active layer is empty in the selection"):
        apply_job(up, empty)
    with pytest.raises(EmptySelection, match="the active layer is empty: make the layer to enlarge active"):
        apply_job(up, Canvas(editor, W, H, empty.composite, empty.layer))

    big = np.repeat(np.repeat(sent, 2, axis=0), 2, axis=1)  # the engine's picture, in RGBA
    buffers: list = []
    desc = frames.attach(buffers, frames.from_canonical(big, order), order)
    named = Canvas(editor, W, H, canvas.composite, canvas.layer, selection=canvas.selection, name="tree.kra")
    image = new_image_from_result(up, named, job, roundtrip(ResultReply(images=[desc]), buffers))
    assert (image.width, image.height, image.depth) == (14, 10, 8)
    assert (image.layer_name, image.title) == ("Upscaled x2", "tree x2")
    assert image.data == rgba_to(editor, big)  # in the editor's channel order
    default = apply_job(up, canvas)  # the engine's factor, 4: a 2x picture is not what was asked for
    with pytest.raises(ImageError, match="returned a 14x10 image for 7x5 times 4"):
        new_image_from_result(up, canvas, default, roundtrip(ResultReply(images=[desc]), buffers))


def test_each_gimp_argument_gets_an_alt_key_no_dialog_button_or_other_argument_has():
    """GIMP's procedure dialog keeps O, C, R, L, S and H for its buttons: Harmonize selection's "_Colour
    match" and "_Refine" and Upscale layer's "_Strength" clashed with "_Cancel", "_Reset" and "_Save
    Settings" (GIMP logged duplicate mnemonics, and each Alt key reached one of the two)."""
    from editor_bridge.plugin_runner import REFINE_LABEL

    key = Mnemonics()
    labels = [key(label) for label in ("Colour match", "Strength", "Seed", "Model", "Best of", "Steps")]
    assert labels == ["Colour _match", "S_trength", "S_eed", "Mo_del", "_Best of", "Ste_ps"]
    keys = [label[label.index("_") + 1].lower() for label in labels]
    assert len(set(keys)) == len(keys) and not set(keys) & set("ocrlsh")
    for entry in ENTRIES.values():  # every entry the engine offers, its arguments in the plug-in's order
        key = Mnemonics()
        named = [key("Colour match")] if entry.ask_color_match else []
        named += [key(REFINE_LABEL)] if entry.ask_color_match and entry.can_refine else []
        named += [key(ask.label) for ask in entry.asks]
        if entry.pick_model:
            named += [key("Model")] + [key(c.name.replace("_", " ").capitalize()) for c in entry.choices]
            named += [key("Seed")] if entry.new_layer else []
        keys = [label[label.index("_") + 1].lower() for label in named if "_" in label]
        assert len(set(keys)) == len(keys) == len(named), named
    assert Mnemonics(frozenset("sed"))("Seed") == "Seed"  # no free letter: no key rather than a taken one
    assert Mnemonics()("Best_of") == "_Best__of"  # GTK reads "__" as an underscore
