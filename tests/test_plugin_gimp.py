"""The installed GIMP 3 plug-in inside the real GIMP (the GUI `gimp-3.0` under Xvfb, in a Debian 13 chroot;
GIMP 3 is not in Debian 12) against a real `engine serve` on loopback. The chroot shares the network and the
pid namespace, so the plug-in finds the engine through its connection file exactly as on an artist's machine.

The driver runs the filters from GIMP's action search, undoes them with Ctrl+Z and clicks the status bar's
Cancel through xdotool (GIMP's PDB has no Undo); the assertions read only what GIMP itself wrote out, and the
cancelled job's state from the engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from editor_e2e import (
    GIMP_PLUGINS,
    GIMP_ROOT,
    ROOT,
    change_in_selection,
    check_overlay_left_out,
    check_sixteen_bit_result,
    check_trained_on_the_background,
    editor_skip_reason,
    engine_serve,
    generated_square,
    gimp_root_mounted,
    install_plugin,
    make_scene,
    painted_layer,
    raw,
    restyled_layer,
    store_cyclegan_model,
    store_sagan_model,
    store_singan_model,
    xvfb,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(editor_skip_reason("gimp") is not None, reason=str(editor_skip_reason("gimp"))),
]

INSIDE = Path("/tmp/singan-gimp-test")  # the test's folder as GIMP sees it, inside the chroot
HARMONIZE = {"procedure": "python-fu-singan-harmonize", "layer": "Harmonized", "dialog": 1}
VARIATION = {"procedure": "python-fu-singan-variation", "layer": "Variation"}
RUNS = [
    {**HARMONIZE, "tag": "harmonize", "screenshot": 1},  # the colour match dialog: OK
    {**HARMONIZE, "procedure": "python-fu-singan-retrain-harmonize", "tag": "retrain"},
    # Reuses the retrained model; GIMP's action search must run this label, not the retrain one's
    {**HARMONIZE, "tag": "after"},
    {**HARMONIZE, "tag": "strong", "color_match": 1},  # from a script: the PDB with the argument
    # The same as the first run in the image converted to 16 bits (Image > Precision), then back to 8
    {**HARMONIZE, "tag": "deep", "color_match": 0.5, "precision": "U16_NON_LINEAR"},
    # ...and in 32-bit floating point, linear light (as a photo from a raw developer comes in)
    {**HARMONIZE, "tag": "float", "color_match": 0.5, "precision": "FLOAT_LINEAR"},
    # The same as "after" in an image with a wide-gamut (Adobe RGB) profile
    {**HARMONIZE, "tag": "profiled", "color_match": 0.5, "profile": 1},
    {**HARMONIZE, "tag": "refined", "color_match": 0.5, "refine": True},  # fine-tunes, then harmonizes
    # A paper texture (Multiply) on top of everything: the engine must not see it
    {**HARMONIZE, "tag": "overlaid", "color_match": 0.5, "overlay": 1},
    # Cancel in the status bar mid-training (a preset that trains for minutes), then the same filter again
    {"procedure": "python-fu-singan-edit", "tag": "cancel", "cancel": 1, "preset": "fast"},
    # The artist deletes the layer the run started from while the engine trains: the result goes on top
    {"procedure": "python-fu-singan-edit", "layer": "Edited", "tag": "orphan", "scratch": 1},
    # ...or crops the canvas meanwhile: no layer (it would land in the wrong place), and a message
    # (Retrain: a model trains whatever the earlier runs stored, so there is time to crop.)
    {"procedure": "python-fu-singan-retrain-edit", "tag": "resized", "resize": 1},
    {"procedure": "python-fu-singan-edit", "layer": "Edited", "tag": "edit"},
    # A channel is the active drawable (clicked in the Channels dialog): refused with a message
    {**HARMONIZE, "tag": "on_channel", "on_channel": 1},
    # A cut-out made with a layer mask, nothing selected: the mask is part of the layer's shape
    {**HARMONIZE, "tag": "masked", "masked": 1},
    # ...and the same run from the mask itself (GIMP makes a new mask the active drawable): on its layer
    {**HARMONIZE, "tag": "on_mask", "masked": 1, "from_mask": 1},
    # The pasted layer is hidden: not the picture the artist sees, refused with a message
    {**HARMONIZE, "tag": "hidden", "hidden": 1},
    # A plain Paste (a floating selection, which GIMP keeps over every layer): refused with a message
    {**HARMONIZE, "tag": "floating", "floating": 1},
    # Quick Mask on (the selection is being painted; the image's own selection is empty): the same
    {**HARMONIZE, "tag": "quick_mask", "quick_mask": 1},
    # An engine update dropped Re-style layer while GIMP still lists it (GIMP asks the plug-in again only
    # when its file changes): the message says what to do
    {"procedure": "python-fu-singan-restyle", "tag": "stale", "stale": "restyle"},
    # Re-style layer with the stored CycleGAN model: its dialog (Return: the newest model, a2b), and from a
    # script with the model's name and the other direction
    {
        "procedure": "python-fu-singan-restyle",
        "layer": "Re-styled",
        "tag": "restyle",
        "dialog": 1,
        "screenshot": 1,
    },
    {
        "procedure": "python-fu-singan-restyle",
        "layer": "Re-styled",
        "tag": "restyle_script",
        "arguments": {"model": "Photos and paintings", "direction": "b2a"},
    },  # fmt: skip
    # Generate from set, from the menu: its dialog with the defaults (the newest model, a random seed,
    # the best of 1); before the script's run, which would put a Repeat entry first in the action search
    {
        "procedure": "python-fu-singan-generate",
        "layer": "Generated (seed *)",
        "tag": "generated_dialog",
        "dialog": 1,
        "screenshot": 1,
        "generate": 1,
    },
    # Generate from set, from a script: the stored set generator by name, seed 1234, the best of 4 seeds
    {
        "procedure": "python-fu-singan-generate",
        "layer": "Generated (seed *)",  # the seed kept
        "tag": "generated",
        "arguments": {"model": "Faces", "seed": 1234, "best-of": 4},  # an int argument
        "generate": 1,
    },
    # Paint to image, from a script: the stored SinGAN model by name redraws the whole pasted layer
    {
        "procedure": "python-fu-singan-paint-to-image",
        "layer": "Painted",
        "tag": "painted",
        "arguments": {"model": "Scream texture"},
    },
    # Generate variation: learns the picture (a model of its own), then samples it; again reuses the model
    {**VARIATION, "tag": "variation"},
    {**VARIATION, "tag": "variation2"},
    # ...with a paper layer on top: the variation (of all that shows) goes over it, not under
    {**VARIATION, "tag": "variation_paper", "overlay": 1},
    # The artist keeps a variation and asks for another: it is left out of the picture the model learns
    # (the same model again), and the new one goes on top of it (GIMP names it "Variation #1"). These two
    # come last: the layers they keep would be in the other runs' pictures.
    {**VARIATION, "tag": "kept", "keep": 1},
    {**VARIATION, "tag": "over", "keep": 1, "layer": "Variation #1"},
    # Upscale layer from a script (factor 2, strength 0: bicubic steps, a known answer), then from the menu
    # (its dialog: the defaults, 4 and 0.75): the selected part of the pasted layer as a new image (last
    # but one: its window stays open)
    {
        "procedure": "python-fu-singan-upscale-layer",
        "layer": "Upscaled x2",
        "tag": "upscale_script",
        "arguments": {"factor": 2.0, "strength": 0.0},
        "new_image": 1,
    },
    # ...and from a script in the painting converted to 32-bit floating point, linear light
    {
        "procedure": "python-fu-singan-upscale-layer",
        "layer": "Upscaled x2",
        "tag": "upscale_float",
        "arguments": {"factor": 2.0, "strength": 0.0},
        "new_image": 1,
        "precision": "FLOAT_LINEAR",
    },
    {"procedure": "python-fu-singan-upscale-layer", "layer": "Upscaled x4", "tag": "upscale", "new_image": 1},
    # Animate layer from the menu: the clip as a new image, one layer a frame (last: its window stays open)
    {"procedure": "python-fu-singan-animate", "tag": "animate", "animation": 1},
]
SPECIAL = (
    "cancel",
    "on_channel",
    "hidden",
    "floating",
    "quick_mask",
    "stale",
    "profile",
    "precision",
    "masked",
    "scratch",
    "resize",
    "overlay",
    "keep",
    "generate",  # a square in the selection's bounds, not the whole selection
    "animation",  # a new image
    "new_image",
)
LAYER_RUNS = [run for run in RUNS if not any(run.get(key) for key in SPECIAL)]
WINDOW = ("1000", "720")  # the image window's size, fixed so that screenshots and the Cancel click repeat
GIMPRC = "root/.config/GIMP/3.0/gimprc"
CANCEL_BUTTON = (718, 702)  # the status bar's Cancel, beside a plug-in's progress, in a window of that size


def quiet_start() -> None:
    """No Welcome dialog over the image window (GIMP 3 shows one at a profile's first start), and no action
    history: GIMP's action search ranks actions used before first, so an earlier run's "Retrain and
    harmonize selection" would come before "Harmonize selection" for the same words."""
    (GIMP_ROOT / GIMPRC).with_name("action-history").unlink(missing_ok=True)
    # Nor the arguments an earlier session last ran each filter with: GIMP 3 keeps them per procedure and
    # opens a dialog with them, so a fresh GIMP root and a used one would run the dialogs differently.
    shutil.rmtree((GIMP_ROOT / GIMPRC).with_name("plug-in-settings"), ignore_errors=True)
    gimprc = GIMP_ROOT / GIMPRC
    gimprc.parent.mkdir(parents=True, exist_ok=True)
    text = gimprc.read_text() if gimprc.exists() else ""
    if "(show-welcome-dialog no)" not in text:
        gimprc.write_text(text + "(show-welcome-dialog no)\n")


def run_gimp(log: Path) -> int:
    quiet_start()
    batch = f'exec(open("{INSIDE}/gimp_driver.py").read())'
    with gimp_root_mounted(), xvfb() as display:
        command = ["chroot", str(GIMP_ROOT), "env", "HOME=/root", f"DISPLAY={display}", "gimp-3.0"]
        command += ["--no-splash", "--batch-interpreter=python-fu-eval", "-b", batch, "--quit"]
        with open(log, "wb") as out:
            return subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=500).returncode


@pytest.fixture(scope="module")
def gimp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gimp")
    work = GIMP_ROOT / INSIDE.relative_to("/")
    shutil.rmtree(work, ignore_errors=True)
    out = work / "out"
    out.mkdir(parents=True)
    scene = make_scene(work / "scene")
    dest = GIMP_ROOT / GIMP_PLUGINS
    shutil.rmtree(dest / "singan_studio", ignore_errors=True)
    # The chroot's GIMP runs Debian 13's Python 3.13: the installer fetches wheels for it, not for ours.
    installed = install_plugin(
        "gimp", tmp / "user", "--dest", str(dest), "--python", "3.13", "--home", f"{INSIDE}/engine",
        "--preset", "tiny",
    )  # fmt: skip
    settings = dest / "singan_studio" / "settings.json"
    # The dialogs' colour match (Return takes it) is 0.5: the runs from scripts compare 1 and 0.5 with it.
    changes = {"refine_iters": 30, "color_match": 0.5}
    settings.write_text(json.dumps(json.loads(settings.read_text()) | changes))
    shutil.copy(ROOT / "tests/editors/gimp_driver.py", work / "gimp_driver.py")
    inside = {k: str(INSIDE / Path(v).relative_to(work)) for k, v in
              {"background": scene.background, "object": scene.object}.items()}  # fmt: skip
    config = {**inside, "out": str(INSIDE / "out"), "runs": RUNS, "window": WINDOW, "timeout_s": 120}
    config |= {"plugin_dir": f"/{GIMP_PLUGINS}/singan_studio", "cancel_button": CANCEL_BUTTON}
    (work / "config.json").write_text(json.dumps(config))
    restyler = store_cyclegan_model(work / "engine", tmp / "cyclegan", "Photos and paintings")
    generator = store_sagan_model(work / "engine", tmp / "sagan", "Faces")
    painter = store_singan_model(work / "engine", scene.background, tmp / "singan", "Scream texture")
    with engine_serve(work / "engine", tmp / "engine.log"):
        code = run_gimp(tmp / "gimp.log")
    driver = json.loads((out / "driver.json").read_text())
    if os.environ.get("SINGAN_SCREENSHOTS"):  # docs/images/ comes from here
        for shot in out.glob("*_gimp.jpg"):
            shutil.copy(shot, Path(os.environ["SINGAN_SCREENSHOTS"]) / shot.name)
    uninstall = subprocess.run(
        [sys.executable, "-m", "engine.cli", "plugin", "uninstall", "gimp", "--dest", str(dest)],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    yield {
        "scene": scene, "out": out, "driver": driver, "code": code, "log": tmp, "dest": dest,
        "installed": installed, "uninstall": uninstall, "home": work / "engine", "restyler": restyler,
        "generator": generator, "painter": painter,
    }  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


def test_driver_ran_every_procedure(gimp_run):
    driver = gimp_run["driver"]
    assert "error" not in driver, driver["error"] + (gimp_run["log"] / "gimp.log").read_text()[-3000:]
    for run in LAYER_RUNS:
        assert driver[f"{run['tag']}_found"]
    assert driver["harmonize_menu"] == ["Harmonize selection", ["<Image>/Filters/SinGAN Studio"]]
    assert driver["before_layers"] == ["Pasted object", "Background"]
    # The pasted layer is only as large as the object, and offset (as a paste makes it): read in place.
    x, y, w, h = driver["object_layer"]
    rows, cols = np.nonzero(gimp_run["scene"].selection)
    assert (x, y, w, h) == (cols.min(), rows.min(), cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)


@pytest.mark.parametrize("tag", [run["tag"] for run in LAYER_RUNS])
def test_new_layer_changed_inside_selection_only(gimp_run, tag):
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    name = next(run["layer"] for run in LAYER_RUNS if run["tag"] == tag)
    assert driver[f"{tag}_layers"] == [name, "Pasted object", "Background"]
    assert driver[f"{tag}_new_layer_above"]
    sel = raw(out / "selection.raw", scene, 1)[..., 0] > 0
    assert (sel == scene.selection).all()
    new = raw(out / f"{tag}_new_layer.raw", scene)  # R,G,B,A as GIMP holds it
    before = raw(out / "before_composite.raw", scene)
    after = raw(out / f"{tag}_composite.raw", scene)
    assert (new[~sel, 3] == 0).all(), "the new layer must be transparent outside the selection"
    assert (new[sel, 3] == 255).all()
    changed = np.abs(new[sel, :3].astype(int) - before[sel, :3]).max(axis=1) > 8
    assert changed.mean() > 0.2, f"only {changed.mean():.0%} of the selection changed"
    assert (after[~sel] == before[~sel]).all(), "the picture outside the selection must be identical"
    assert (after[sel, :3] == new[sel, :3]).all()
    # the original layer is untouched, and one Undo (Ctrl+Z in the window) takes the result away
    assert (raw(out / f"{tag}_object.raw", scene) == raw(out / "before_object.raw", scene)).all()
    assert driver[f"{tag}_undone_layers"] == driver["before_layers"]
    assert (raw(out / f"{tag}_undone_composite.raw", scene) == before).all()


def test_a_preview_comes_first_and_the_final_result_takes_its_layer(gimp_run):
    driver = gimp_run["driver"]
    # the first harmonization trains: a preview layer came first, in the result's place...
    assert driver["harmonize_preview_layers"] == ["Harmonized (preview)", "Pasted object", "Background"]
    # ...then the result filled that same layer, and one Undo takes it away (the picture as it was:
    # test_new_layer_changed_inside_selection_only)
    assert driver["harmonize_layers"] == ["Harmonized", "Pasted object", "Background"]
    assert driver["harmonize_undone_layers"] == driver["before_layers"]
    assert "retrain_preview_seen" in driver  # a retrain trains too
    assert "after_preview_seen" not in driver  # a stored model answers at once: no preview


def test_retrain_paints_with_a_new_model_that_later_runs_reuse(gimp_run):
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver["retrain_menu"] == ["Retrain and harmonize selection", ["<Image>/Filters/SinGAN Studio"]]
    first, retrained = raw(out / "harmonize_new_layer.raw", scene), raw(out / "retrain_new_layer.raw", scene)
    assert not (first == retrained).all(), "the retrained model gave the first model's result"
    assert (raw(out / "after_new_layer.raw", scene) == retrained).all()


def test_colour_match_argument_is_used(gimp_run):
    scene, out = gimp_run["scene"], gimp_run["out"]
    assert gimp_run["driver"]["strong_status"] == "success"
    # Colour match 1 moves the object further from how it was pasted than the default 0.5, same model.
    assert change_in_selection(out, scene, "strong") > change_in_selection(out, scene, "after") + 2


def test_an_image_with_another_colour_profile_is_read_and_written_as_stored(gimp_run):
    """Adobe RGB pixel values go to the engine and come back as they are (no round trip through sRGB,
    which clips): the same values give the same model and the same result as in an sRGB image."""
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver["profiled_status"] == "success"
    assert driver["profiled_layers"] == ["Harmonized", "Pasted object", "Background"]
    profiled, srgb = raw(out / "profiled_new_layer.raw", scene), raw(out / "after_new_layer.raw", scene)
    assert (profiled == srgb).all(), f"{(profiled != srgb).any(axis=2).mean():.1%} of the pixels differ"


def test_a_16_bit_image_is_harmonized_at_16_bits(gimp_run):
    driver = gimp_run["driver"]
    assert driver["deep_precision"] == "u16-non-linear"
    assert driver["deep_status"] == "success", driver["deep_message"]
    assert driver["deep_layers"] == ["Harmonized", "Pasted object", "Background"]
    check_sixteen_bit_result(gimp_run["out"], gimp_run["scene"], "deep", gimp_run["home"], bgr=False)


def test_a_float_linear_image_is_harmonized_on_its_display_values(gimp_run):
    """The plug-in reads a linear-light float image as 16-bit values with the sRGB curve, and GIMP
    converts the new layer back: what the engine's model makes of the picture, to within a tenth of a level.
    (Linear values sent as they are would come back far darker; before, the plug-in refused float images.)"""
    driver = gimp_run["driver"]
    assert driver["float_precision"] == "float-linear"
    assert driver["float_status"] == "success", driver["float_message"]
    assert driver["float_layers"] == ["Harmonized", "Pasted object", "Background"]
    check_sixteen_bit_result(gimp_run["out"], gimp_run["scene"], "float", gimp_run["home"], bgr=False)


def test_refine_argument_finetunes_before_harmonizing(gimp_run):
    scene, out = gimp_run["scene"], gimp_run["out"]
    assert gimp_run["driver"]["refined_status"] == "success"
    refined, usual = raw(out / "refined_new_layer.raw", scene), raw(out / "after_new_layer.raw", scene)
    assert not (refined == usual).all(), "refining gave the stored model's result"


def test_cancel_in_the_status_bar_cancels_the_engine_job(gimp_run):
    """GIMP kills a cancelled plug-in; its cancel guard must still stop the training in the engine."""
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver["cancel_job_state"] == "cancelled"
    assert driver["cancel_cancel_seconds"] < 20
    assert driver["cancel_layers"] == driver["before_layers"]
    assert driver["cancel_undo_enabled"]
    assert (raw(out / "cancel_composite.raw", scene) == raw(out / "before_composite.raw", scene)).all()


def test_a_result_whose_layer_was_deleted_meanwhile_goes_on_top(gimp_run):
    driver = gimp_run["driver"]
    assert driver["orphan_job_state"] == "done"
    # The run started from Scratch, below the pasted layer; Scratch is gone, the result is on top.
    assert driver["orphan_layers"] == ["Edited", "Pasted object", "Background"]


def test_a_result_for_a_resized_canvas_is_not_added_and_said_so(gimp_run):
    driver = gimp_run["driver"]
    assert driver["resized_job_state"] == "done"
    assert driver["resized_layers"] == driver["before_layers"]
    log = (gimp_run["log"] / "gimp.log").read_text(errors="replace")
    assert "The canvas changed size while the engine worked" in log, log[-3000:]
    assert "Run it again: the resized picture trains a model of its own (minutes)" in log, log[-3000:]


def test_no_argument_shares_an_alt_key_with_the_dialogs_buttons(gimp_run):
    """Harmonize selection's Colour match and Refine and Upscale layer's Strength once logged "duplicate
    mnemonic" c, r and s against GIMP's own Cancel, Reset and Save Settings buttons."""
    log = (gimp_run["log"] / "gimp.log").read_text(errors="replace")
    said = [line for line in log.splitlines() if "mnemonic" in line]
    assert not said, said


def test_a_channel_is_refused_with_a_message(gimp_run):
    driver = gimp_run["driver"]
    assert driver["on_channel_status"] == "execution-error"
    assert "select a layer in the Layers dialog, not a channel" in driver["on_channel_message"]
    assert driver["on_channel_layers"] == driver["before_layers"]


@pytest.mark.parametrize("tag", ["masked", "on_mask"])
def test_with_no_selection_a_layer_mask_shapes_the_result(gimp_run, tag):
    """From the layer or from its mask (the active drawable once a mask is added): the same result."""
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver[f"{tag}_status"] == "success", driver.get(f"{tag}_message")
    assert driver[f"{tag}_layers"] == ["Harmonized", "Pasted object", "Background"]
    alpha = raw(out / f"{tag}_new_layer.raw", scene)[..., 3]
    split = driver[f"{tag}_split_x"]
    assert not alpha[:, : split - 2].any(), "the result covers what the layer mask hides"
    assert (alpha[:, split + 2 :][scene.selection[:, split + 2 :]] > 0).mean() > 0.9


def test_a_hidden_layer_is_refused_with_a_message(gimp_run):
    driver = gimp_run["driver"]
    assert driver["hidden_status"] == "execution-error"
    assert "The active layer is hidden: show it" in driver["hidden_message"]
    assert driver["hidden_layers"] == driver["before_layers"]


def test_a_floating_selection_is_refused_with_a_message(gimp_run):
    driver = gimp_run["driver"]
    assert driver["floating_status"] == "execution-error"
    assert "floating selection: make it a layer first (Layer > To New Layer" in driver["floating_message"]
    assert driver["floating_layers"] == ["Pasted object copy", *driver["before_layers"]]  # left as it was


def test_a_filter_the_engine_no_longer_offers_is_refused_with_a_message(gimp_run):
    """The run starts the plug-in with a name the capabilities no longer hold (before, a KeyError in
    do_create_procedure crashed it)."""
    driver = gimp_run["driver"]
    assert driver["stale_status"] == "execution-error"
    message = "the engine no longer offers 'python-fu-singan-restyle': restart the editor"
    assert message in driver["stale_message"]
    assert driver["stale_layers"] == driver["before_layers"]


def generation_models(home: Path) -> list[dict]:
    return [
        json.loads((d / "model.json").read_text())
        for d in sorted((home / "models").iterdir())
        if (d / "model.json").is_file()
        and json.loads((d / "model.json").read_text())["model"].get("mode") == "generation"
    ]


def test_each_variation_is_a_new_one_from_one_model(gimp_run):
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver["variation_menu"] == ["Generate variation", ["<Image>/Filters/SinGAN Studio"]]
    first, second = raw(out / "variation_new_layer.raw", scene), raw(out / "variation2_new_layer.raw", scene)
    assert not (first == second).all(), "two variations of one picture came out the same"
    # the plain picture's model, reused by the second, the kept and the next; one for the picture with paper
    assert len(generation_models(out.parent / "engine")) == 2
    assert driver["variation2_seconds"] < driver["variation_seconds"]


def test_a_variation_goes_over_the_layers_on_top(gimp_run):
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver["variation_paper_layers"] == ["Variation", "Paper", "Pasted object", "Background"]
    new = raw(out / "variation_paper_new_layer.raw", scene)
    after = raw(out / "variation_paper_composite.raw", scene)
    sel = scene.selection
    assert (new[sel, 3] == 255).all() and (new[~sel, 3] == 0).all()
    assert (after[sel, :3] == new[sel, :3]).all(), "the paper was applied over the variation"


def test_a_kept_variation_is_left_out_of_the_next_ones_picture(gimp_run):
    driver = gimp_run["driver"]
    assert driver["over_layers"] == ["Variation #1", "Variation", "Pasted object", "Background"]


def test_quick_mask_on_is_refused_with_a_message(gimp_run):
    driver = gimp_run["driver"]
    assert driver["quick_mask_channels"] == ["Qmask"]  # Shift+Q reached GIMP
    assert driver["quick_mask_status"] == "execution-error"
    assert (
        "Quick Mask is on: turn it off (Select > Toggle Quick Mask, Shift+Q)" in driver["quick_mask_message"]
    )
    assert driver["quick_mask_layers"] == driver["before_layers"]


def test_same_picture_as_krita_reads(gimp_run):
    """GIMP's R,G,B,A and Krita's B,G,R,A of one scene are the same picture once canonical."""
    scene, out = gimp_run["scene"], gimp_run["out"]
    import cv2

    bg = cv2.imread(str(scene.background))[..., ::-1]
    before = raw(out / "before_composite.raw", scene)
    assert (before[~scene.selection, :3] == bg[~scene.selection]).all()


def test_uninstall_removes_exactly_what_install_added(gimp_run):
    assert gimp_run["uninstall"].returncode == 0, gimp_run["uninstall"].stderr
    assert not (gimp_run["dest"] / "singan_studio").exists()


def test_models_train_on_the_picture_without_the_pasted_layer(gimp_run):
    check_trained_on_the_background(gimp_run["out"].parent / "engine", gimp_run["scene"])


def test_layers_over_the_pasted_one_are_not_painted_into_the_result(gimp_run):
    """A Paper layer on top stays on top of the result, and the engine never sees it."""
    driver = gimp_run["driver"]
    assert driver["overlaid_status"] == "success"
    check_overlay_left_out(
        gimp_run["out"],
        gimp_run["scene"],
        driver["overlaid_layers"],
        ["Paper", "Harmonized", "Pasted object", "Background"],
    )


def test_generate_from_set_draws_the_named_models_seed_in_the_selection(gimp_run):
    """From a script (the model by name, a seed, best of 4): the new layer, named with the seed kept, is
    that model's best of seeds 1234-1237 as large as fits the selection's bounds, centred in them; one
    Undo removes it."""
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver["generated_status"] == "success"
    new = raw(out / "generated_new_layer.raw", scene).astype(np.int64)
    (x, y, side), expected, kept = generated_square(gimp_run["generator"], scene, 1234, best_of=4)
    assert driver["generated_layer_name"] == f"Generated (seed {kept})"  # the seed that draws it again
    arguments = driver["generated_arguments"]
    assert (arguments["best-of"], arguments["seed"], arguments["model"]) == ("gint", "gint", "gchararray")
    inside = np.zeros(scene.selection.shape, bool)
    inside[y : y + side, x : x + side] = True
    assert (new[~inside, 3] == 0).all()
    square, sel = new[inside].reshape(side, side, 4), scene.selection[inside].reshape(side, side)
    assert np.abs(square[sel, 3] - expected[sel, 3]).max() <= 2  # the sample's own alpha
    solid = sel & (expected[..., 3] >= 64)  # (fainter pixels' colours are rounding, unpremultiplied)
    assert solid.mean() > 0.1
    assert np.abs(square[solid, :3] - expected[solid, :3]).max() <= 2
    assert (square[~sel, 3] == 0).all()
    assert driver["generated_undone_layers"] == driver["before_layers"]


def test_generate_from_set_from_its_dialog_draws_a_random_seed_named_in_the_layer(gimp_run):
    """From the menu, its dialog (model, seed, best of) taken as it comes: the newest model, a random
    seed, the best of 1. The layer's name gives the seed, and the layer is that seed's sample."""
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    name = driver["generated_dialog_layer_name"]
    match = re.fullmatch(r"Generated \(seed (\d+)\)", name)
    assert match, name
    new = raw(out / "generated_dialog_new_layer.raw", scene).astype(np.int64)
    (x, y, side), expected, _ = generated_square(gimp_run["generator"], scene, int(match[1]))
    square = new[y : y + side, x : x + side]
    solid = scene.selection[y : y + side, x : x + side] & (expected[..., 3] >= 64)
    assert solid.mean() > 0.1
    assert np.abs(square[solid, :3] - expected[solid, :3]).max() <= 2
    assert (out / "generated_dialog_dialog_gimp.jpg").exists()


def test_restyle_layer_runs_the_picked_model_in_the_picked_direction(gimp_run):
    """From the dialog (the newest model, a2b) and from a script (the model by name, b2a): each new layer is
    that model's re-style of the pasted layer's own pixels inside the selection, as the engine makes it."""
    scene, out = gimp_run["scene"], gimp_run["out"]
    sel = scene.selection
    for tag, direction in (("restyle", "a2b"), ("restyle_script", "b2a")):
        new = raw(out / f"{tag}_new_layer.raw", scene)
        expected = restyled_layer(gimp_run["restyler"], scene, direction)
        assert np.abs(new[sel, :3].astype(int) - expected[sel]).max() <= 2, tag


def test_paint_to_image_redraws_the_whole_layer_with_the_picked_model(gimp_run):
    """The stored SinGAN model, named by a script, redraws the whole pasted layer (the sketch's whole layout
    enters the pyramid); the new layer, right above it, shows that inside the selection only. One Undo
    removes it."""
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver["painted_status"] == "success"
    layer = cv2.cvtColor(cv2.imread(str(scene.object), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    expected = painted_layer(gimp_run["painter"], layer)
    new = raw(out / "painted_new_layer.raw", scene).astype(np.int64)
    inside = scene.selection & (new[..., 3] == 255)
    assert inside.mean() > 0.05 and (new[~scene.selection, 3] == 0).all()
    assert np.abs(new[..., :3][inside] - expected[inside]).max() <= 2  # onnxruntime against torch
    assert driver["painted_new_layer_above"] and driver["painted_undone_layers"] == driver["before_layers"]


def test_animate_layer_opens_the_clip_as_an_image_of_frames(gimp_run):
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver["animate_menu"] == "Animate layer"
    # 100 frames, the first at the bottom, each with its time as Playback and the GIF export read it
    assert driver["animate_frames"] == [f"Frame {k} (100ms)" for k in range(100, 0, -1)]
    assert driver["animate_size"] == [scene.width, scene.height]  # scaled to the painting's size
    first, last = (raw(out / f"animate_{name}.raw", scene) for name in ("first", "last"))
    before = raw(out / "before_composite.raw", scene)
    for frame in (first, last):
        assert (frame[..., 3] == 255).all()
        assert np.abs(frame[..., :3].mean((0, 1)) - before[..., :3].mean((0, 1))).max() < 25
    assert (first != last).any()  # it moves (a tiny model's clip, little: 0.1 levels on average)
    assert driver["animate_painting_after"] == driver["animate_painting_before"]  # the painting untouched


def test_upscale_layer_opens_the_selected_part_enlarged_as_a_new_image(gimp_run):
    """From a script with factor 2 and strength 0, and from the menu with the dialog's defaults (4, 0.75):
    a new image of the selection's bounds times the factor (shown in a window when run from the menu), its
    one layer the pasted object's pixels enlarged, transparent where nothing was selected (at strength 0
    within a level or two of a bicubic enlargement, and no model trained for it); the painting untouched;
    one super-resolution model, the menu run's."""
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    assert driver["upscale_menu"] == "Upscale layer" and driver["upscale_script_status"] == "success"
    ys, xs = np.nonzero(scene.selection)
    x0, y0, w, h = xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    pasted = cv2.cvtColor(cv2.imread(str(scene.object), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    layer = pasted[y0 : y0 + h, x0 : x0 + w]
    for tag, factor in (("upscale_script", 2), ("upscale", 4)):
        made = driver[f"{tag}_image"]
        assert made["size"] == [factor * w, factor * h] and made["precision"] == "u8-non-linear", made
        assert made["layers"] == [f"Upscaled x{factor}"] and made["shown"] == (tag == "upscale")
        assert driver[f"{tag}_painting_after"] == driver[f"{tag}_painting_before"]
        new = np.frombuffer((out / f"{tag}_new_image.raw").read_bytes(), np.uint8)
        new = new.reshape(factor * h, factor * w, 4)
        size = (factor * w, factor * h)
        sel = cv2.resize(scene.selection[y0 : y0 + h, x0 : x0 + w].astype(np.uint8), size) > 0
        solid = cv2.erode(sel.astype(np.uint8), np.ones((4 * factor + 1,) * 2, np.uint8)) > 0
        near = cv2.dilate(sel.astype(np.uint8), np.ones((4 * factor - 1,) * 2, np.uint8)) > 0
        assert solid.mean() > 0.1 and (new[solid, 3] == 255).all() and (new[~near, 3] == 0).all()
        if tag == "upscale_script":
            bicubic = cv2.resize(layer, size, interpolation=cv2.INTER_CUBIC).astype(int)
            error = np.abs(new[solid, :3].astype(int) - bicubic[solid, :3]).mean()
            swapped = np.abs(new[solid][:, [2, 1, 0]].astype(int) - bicubic[solid, :3]).mean()
            assert error < 4 and swapped > 20, (error, swapped)  # R, G, B as GIMP holds them
    models = [json.loads(p.read_text()) for p in (gimp_run["home"] / "models").glob("*/model.json")]
    # (the float painting's run is at strength 0 too: no model either)
    assert [m["model"].get("task") for m in models].count("super_resolution") == 1


def test_upscale_layer_of_a_float_painting_is_a_float_image(gimp_run):
    """In a painting converted to 32-bit float, linear light: a new float, linear-light image whose values,
    read with the sRGB tone curve, are within a level or two of a bicubic enlargement (strength 0)."""
    scene, out, driver = gimp_run["scene"], gimp_run["out"], gimp_run["driver"]
    made = driver["upscale_float_image"]
    ys, xs = np.nonzero(scene.selection)
    x0, y0, w, h = xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    assert driver["upscale_float_status"] == "success"
    assert made["size"] == [2 * w, 2 * h] and made["precision"] == "float-linear", made
    new = np.frombuffer((out / "upscale_float_new_image.raw").read_bytes(), np.uint16).reshape(
        2 * h, 2 * w, 4
    )
    pasted = cv2.cvtColor(cv2.imread(str(scene.object), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
    bicubic = cv2.resize(pasted[y0 : y0 + h, x0 : x0 + w], (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    sel = cv2.resize(scene.selection[y0 : y0 + h, x0 : x0 + w].astype(np.uint8), (2 * w, 2 * h)) > 0
    solid = cv2.erode(sel.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    assert (new[solid, 3] == 65535).all()
    error = np.abs(new[solid, :3] / 257 - bicubic[solid, :3]).mean()
    assert error < 4, error  # (read as linear values it would be tens of levels off)
