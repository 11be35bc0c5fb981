"""Test driver run inside the real GIMP 3 GUI (gimp-3.0 under Xvfb, python-fu-eval) by test_plugin_gimp.py.

It opens the painting in a window, pastes the object as its own layer, selects it (Alpha to Selection), and
then works the window as an artist would, with xdotool: runs each filter through GIMP's action search ("/",
the filter's menu label, Return; Return again in Harmonize selection's dialog), or through the PDB as a
script would, waits for the new layer and presses Ctrl+Z once; in the cancel run it clicks
the status bar's Cancel once the engine trains, and asks the engine what became of the job. What GIMP then
holds (layer bytes, the composite, layer names) and screenshots of the window go to files for the test.

GIMP keeps serving its window while this driver runs (it waits for a batch plug-in in a nested main loop),
so the actions and the Undo run in GIMP itself, exactly as from the keyboard.
"""

import fnmatch
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

from gi.repository import Gegl, Gimp, Gio

CONFIG = json.loads(Path("/tmp/singan-gimp-test/config.json").read_text())
OUT = Path(CONFIG["out"])
RESULT = {"events": []}
T0 = time.monotonic()
SHOT = """
import sys, gi
gi.require_version("Gdk", "3.0")
from gi.repository import Gdk
Gdk.init([])
x, y, w, h = map(int, sys.argv[2:6])
shot = Gdk.pixbuf_get_from_window(Gdk.get_default_root_window(), x, y, w, h)
shot.savev(sys.argv[1], "jpeg", ["quality"], ["88"])
"""


def log(event):
    RESULT["events"].append([round(time.monotonic() - T0, 2), event])


def xdo(*args):
    done = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def read(drawable, w, h, fmt="R'G'B'A u8"):
    return bytes(drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.NONE))


def composite(image):
    copy = image.duplicate()
    merged = copy.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
    data = read(merged, copy.get_width(), copy.get_height())
    copy.delete()
    return data


def dump(image, obj, tag):
    w, h = image.get_width(), image.get_height()
    RESULT[f"{tag}_layers"] = [layer.get_name() for layer in image.get_layers()]
    (OUT / f"{tag}_composite.raw").write_bytes(composite(image))
    (OUT / f"{tag}_object.raw").write_bytes(read(obj, w, h))


class Window:
    """The image window, found by its title ("... RGB color ... – GIMP"), driven through the X server."""

    def __init__(self):
        deadline = time.monotonic() + 30
        while not (ids := xdo("search", "--onlyvisible", "--name", "RGB color").split()):
            if time.monotonic() > deadline:
                windows = xdo("search", "--onlyvisible", "--name", ".").split()
                titles = [xdo("getwindowname", i) for i in windows]
                raise RuntimeError(f"no GIMP image window appeared; windows: {titles}")
            time.sleep(0.3)
        self.id = ids[0]
        xdo("windowsize", "--sync", self.id, *CONFIG["window"])
        time.sleep(1.0)  # let GIMP lay out the docks at the new size
        self.key("shift+ctrl+j")  # View > Zoom > Fit Image in Window

    def focus(self):
        xdo("windowfocus", "--sync", self.id)

    def key(self, *keys):
        self.focus()
        xdo("key", "--clearmodifiers", *keys)

    def run_action(self, label):
        """Help > Search and Run a Command ("/"), the filter's menu label, Return: as from the menu."""
        self.key("slash")
        popup = wait_for(lambda: xdo("search", "--onlyvisible", "--name", "^Search Actions$"), 10)
        if not popup:
            raise RuntimeError("GIMP's action search did not open")
        xdo("windowfocus", "--sync", popup.split()[0])  # no window manager hands it the focus
        xdo("type", "--delay", "40", label)
        for _ in range(3):  # on a busy machine the list may fill in after Return: the popup then stays open
            time.sleep(1.5)
            xdo("key", "Return")
            if wait_for(lambda: not xdo("search", "--onlyvisible", "--name", "^Search Actions$"), 3):
                return
        self.screenshot("action_search_gimp.jpg")  # what the search offered
        raise RuntimeError(f"GIMP's action search did not run {label!r}")

    def answer_dialog(self, title, shot=None):
        """The filter's own dialog (Harmonize selection's colour match): Return for OK, from the keyboard;
        a screenshot of it first if `shot` names one."""
        dialog = wait_for(lambda: xdo("search", "--onlyvisible", "--name", f"^{title}$"), 30)
        if not dialog:
            raise RuntimeError(f"no {title!r} dialog opened")
        xdo("windowfocus", "--sync", dialog.split()[0])
        time.sleep(1.0)
        if shot:
            self.screenshot(shot, self.geometry(dialog.split()[0]))
        xdo("key", "Return")
        if not wait_for(lambda: not xdo("search", "--onlyvisible", "--name", f"^{title}$"), 10):
            raise RuntimeError(f"the {title!r} dialog did not close on Return")

    def geometry(self, window_id=None):
        shell = xdo("getwindowgeometry", "--shell", window_id or self.id)
        shell = dict(line.split("=", 1) for line in shell.splitlines())
        return int(shell["X"]), int(shell["Y"]), int(shell["WIDTH"]), int(shell["HEIGHT"])

    def screenshot(self, name, geometry=None):
        Gimp.displays_flush()
        time.sleep(1.0)
        box = map(str, geometry or self.geometry())
        subprocess.run([sys.executable, "-c", SHOT, str(OUT / name), *box], timeout=30)

    def click(self, x, y):
        """A left click at (x, y) in the window."""
        wx, wy, _w, _h = self.geometry()
        self.focus()
        xdo("mousemove", "--sync", str(wx + x), str(wy + y), "click", "1")


def engine():
    """A client of the engine the installed plug-in talks to, from the plug-in's own editor_bridge."""
    plugin_dir = Path(CONFIG["plugin_dir"])
    if str(plugin_dir / "vendor") not in sys.path:
        sys.path.insert(0, str(plugin_dir / "vendor"))
    from editor_bridge.plugin_runner import Settings, connect

    return connect(Settings.load(plugin_dir))


def set_preset(preset):
    settings = Path(CONFIG["plugin_dir"]) / "settings.json"
    data = json.loads(settings.read_text())
    data["preset"], old = preset, data.get("preset")
    settings.write_text(json.dumps(data))
    return old


def running_job():
    with engine() as client:
        return next((j.job_id for j in client.status().jobs if j.progress is not None), None)


def end_state(job_id, timeout_s):
    """The engine job's state once it has ended (or as it stands after `timeout_s`)."""
    with engine() as client:
        wait_for(lambda: client.job_status(job_id).state.value not in ("queued", "running"), timeout_s)
        return client.job_status(job_id).state.value


def cancel_run(image, obj, window, run):
    """Start the filter, wait until the engine is training, click Cancel in the status bar, and record
    what became of the engine's job and of the picture."""
    tag, label = run["tag"], Gimp.get_pdb().lookup_procedure(run["procedure"]).get_menu_label()
    tiny = set_preset(run["preset"])  # a job long enough to cancel in the middle
    try:
        window.run_action(label)
        job_id = wait_for(running_job, 60)
    finally:
        set_preset(tiny)
    if not job_id:
        raise RuntimeError(f"{tag}: the engine never started training")
    time.sleep(2.0)  # a few progress updates in the status bar
    window.screenshot(f"{tag}_progress_gimp.jpg")
    clicked = time.monotonic()
    window.click(*CONFIG["cancel_button"])
    log(f"clicked Cancel for {job_id}")
    RESULT[f"{tag}_job_state"] = end_state(job_id, 30)
    RESULT[f"{tag}_cancel_seconds"] = round(time.monotonic() - clicked, 2)
    time.sleep(1.0)
    RESULT[f"{tag}_undo_enabled"] = image.undo_is_enabled()  # the artist's history still records edits
    dump(image, obj, tag)
    window.screenshot(f"{tag}_after_gimp.jpg")


def meanwhile_run(image, obj, window, run):
    """Start the filter from the menu and, once the engine trains, change the image as an artist who goes
    on working would: delete the layer the run started from ("scratch": a copy of the pasted layer, below
    it), or crop the canvas by 10 px ("resize"). Records where the result went, or that none came and
    what GIMP said (its messages go to the console, i.e. GIMP's log, for this run)."""
    tag, label = run["tag"], Gimp.get_pdb().lookup_procedure(run["procedure"]).get_menu_label()
    w, h = image.get_width(), image.get_height()
    active = obj
    if run.get("scratch"):
        active = obj.copy()
        active.set_name("Scratch")
        image.insert_layer(active, None, image.get_item_position(obj) + 1)
    image.set_selected_layers([active])
    handler = Gimp.message_get_handler()
    Gimp.message_set_handler(Gimp.MessageHandlerType.CONSOLE)
    try:
        window.run_action(label)
        job_id = wait_for(running_job, 60, step_s=0.05)
        if not job_id:
            raise RuntimeError(f"{tag}: the engine never started training")
        if run.get("scratch"):
            image.remove_layer(active)
            log(f"{tag}: deleted the Scratch layer during {job_id}")
        else:
            image.resize(w - 10, h - 10, 0, 0)
            log(f"{tag}: cropped the canvas during {job_id}")
        RESULT[f"{tag}_job_state"] = end_state(job_id, 120)
        if run.get("layer"):
            if not wait_for(lambda: layer_named(image, run["layer"]) is not None, 60):
                raise RuntimeError(f"{tag}: no layer {run['layer']!r} after the job ended")
            time.sleep(0.5)
        else:
            time.sleep(3.0)  # the plug-in ends with its message; no layer may come
        RESULT[f"{tag}_layers"] = [layer.get_name() for layer in image.get_layers()]
        window.screenshot(f"{tag}_gimp.jpg")
    finally:
        Gimp.message_set_handler(handler)
    if run.get("layer"):
        window.key("ctrl+z")  # removes the result; the Scratch layer stays deleted
        wait_for(lambda: layer_named(image, run["layer"]) is None, 10)
    else:
        image.resize(w, h, 0, 0)  # back to the size the next runs expect
    image.set_selected_layers([obj])


def animation_run(image, obj, window, run):
    """Animate layer from the menu, as an artist runs it: the clip comes as a new image in a window of its
    own, one layer a frame. Its layer names, size and first and last frames go to files; the painting's
    layers before and after, to see it untouched."""
    tag, w, h = run["tag"], image.get_width(), image.get_height()
    label = Gimp.get_pdb().lookup_procedure(run["procedure"]).get_menu_label()
    RESULT[f"{tag}_menu"] = label
    known = {other.get_id() for other in Gimp.get_images()}
    RESULT[f"{tag}_painting_before"] = [layer.get_name() for layer in image.get_layers()]
    image.set_selected_layers([obj])
    start = time.monotonic()
    window.run_action(label)

    # the new image, once the plug-in has made it: its frames scaled to the painting's size and its undo
    # history on again (its last steps). Not the duplicate of the painting that the plug-in reads the
    # canvas from (the painting's size too, and deleted a moment later)
    def made(new):
        frames = new.get_layers()
        return (
            (new.get_width(), new.get_height()) == (w, h)
            and bool(frames)
            and all(layer.get_name().startswith("Frame ") for layer in frames)
            and new.undo_is_enabled()
        )

    clip = new_image(known, made, window, tag, start)
    layers = clip.get_layers()  # top first: the last frame
    RESULT[f"{tag}_frames"] = [layer.get_name() for layer in layers]
    RESULT[f"{tag}_size"] = [clip.get_width(), clip.get_height()]
    (OUT / f"{tag}_first.raw").write_bytes(read(layers[-1], w, h))
    (OUT / f"{tag}_last.raw").write_bytes(read(layers[0], w, h))
    RESULT[f"{tag}_painting_after"] = [layer.get_name() for layer in image.get_layers()]


def new_image_run(image, obj, window, run):
    """Upscale layer, from the menu (its dialog: Return takes the defaults) or from a script with its
    arguments, in the painting converted to run["precision"] if given (then back to 8 bits): the result
    comes as a new image. Its size, precision, layers and pixels (16-bit for a converted painting) go to
    files, and the painting's layers before and after."""
    if run.get("precision"):
        image.convert_precision(getattr(Gimp.Precision, run["precision"]))
        try:
            return new_image_run(image, obj, window, {**run, "precision": None, "bits": 16})
        finally:
            image.convert_precision(Gimp.Precision.U8_NON_LINEAR)
    tag = run["tag"]
    known = {other.get_id() for other in Gimp.get_images()}
    RESULT[f"{tag}_painting_before"] = [layer.get_name() for layer in image.get_layers()]
    image.set_selected_layers([obj])
    start = time.monotonic()
    if "arguments" in run:
        RESULT[f"{tag}_status"] = run_pdb(run["procedure"], image, obj, run["arguments"]).index(0).value_nick
    else:
        label = Gimp.get_pdb().lookup_procedure(run["procedure"]).get_menu_label()
        RESULT[f"{tag}_menu"] = label
        window.run_action(label)
        window.answer_dialog(label)

    # (its layer is in before its pixels; the undo history comes on again once they are)
    ready = lambda made: layer_named(made, run["layer"]) is not None and made.undo_is_enabled()  # noqa: E731
    new = new_image(known, ready, window, tag, start)
    w, h = new.get_width(), new.get_height()
    RESULT[f"{tag}_image"] = {
        "size": [w, h], "layers": [layer.get_name() for layer in new.get_layers()],
        "precision": new.get_precision().value_nick,
        # a window of its own: GIMP's title ends with the image's size (the painting's is another)
        "shown": bool(xdo("search", "--onlyvisible", "--name", f"\\) {w}x{h} ")),
    }  # fmt: skip
    fmt = "R'G'B'A u16" if run.get("bits") == 16 else "R'G'B'A u8"
    (OUT / f"{tag}_new_image.raw").write_bytes(read(new.get_layers()[0], w, h, fmt))
    RESULT[f"{tag}_painting_after"] = [layer.get_name() for layer in image.get_layers()]
    if "arguments" in run:  # no window: nothing of it would stay on screen
        new.delete()
    else:  # the painting's view in front again, as the artist clicks it: the next filters run on it
        Gimp.Display.get_by_id(RESULT["display"]).present()
        Gimp.displays_flush()
        time.sleep(1.0)


def new_image(known, ready, window, tag, start):
    """The image a run opens (one not among `known`), once `ready(image)`; its seconds noted. A screenshot
    and an error after the run's timeout."""

    def made():
        new = [other for other in Gimp.get_images() if other.get_id() not in known]
        return next((other for other in new if ready(other)), None)

    found = wait_for(made, CONFIG["timeout_s"])
    if not found:
        window.screenshot(f"{tag}_timeout_gimp.jpg")
        raise RuntimeError(f"no new image after {CONFIG['timeout_s']} s")
    time.sleep(1.0)  # the plug-in opens its window last
    RESULT[f"{tag}_seconds"] = round(time.monotonic() - start, 2)
    return found


def run_pdb(name, image, drawable, arguments=None):
    """The procedure through the PDB, non-interactively, as a script runs it; its return values."""
    procedure = Gimp.get_pdb().lookup_procedure(name)
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", [drawable])
    for key, value in (arguments or {}).items():
        config.set_property(key, value)
    return procedure.run(config)


def masked_run(image, obj, run):
    """A cut-out made with a layer mask (its left half black) and nothing selected: the filter (through the
    PDB) must take the layer's shape with its mask, so the result covers only what the mask shows. With
    "from_mask" the filter runs on the mask itself, as when the artist has just added it (GIMP then makes
    the mask the active drawable) or clicked its thumbnail: the filter must work on the mask's layer."""
    tag, w, h = run["tag"], image.get_width(), image.get_height()
    mask = obj.create_mask(Gimp.AddMaskType.WHITE)
    obj.add_mask(mask)
    half, mh = mask.get_width() // 2, mask.get_height()
    buffer = mask.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, half, mh), "Y u8", bytes(half * mh))
    buffer.flush()
    mask.update(0, 0, half, mh)
    RESULT[f"{tag}_split_x"] = obj.get_offsets()[-2] + half  # canvas x where the mask starts to show
    Gimp.Selection.none(image)
    try:
        RESULT[f"{tag}_status"] = (
            run_pdb(run["procedure"], image, mask if run.get("from_mask") else obj, {"color-match": 0.5})
            .index(0)
            .value_nick
        )
        new = layer_named(image, run["layer"])
        RESULT[f"{tag}_layers"] = [layer.get_name() for layer in image.get_layers()]
        if new is not None:
            (OUT / f"{tag}_new_layer.raw").write_bytes(read(new, w, h))
            image.remove_layer(new)
    finally:
        obj.remove_mask(Gimp.MaskApplyMode.DISCARD)
        image.select_item(Gimp.ChannelOps.REPLACE, obj)


def profiled_run(image, obj, run):
    """The image gets a wide-gamut profile (assigned, so its pixel values stay as they are) and the filter
    runs through the PDB: the plug-in must send and write back the values as stored, not convert them to
    sRGB and back (the test compares the result with the same run without the profile)."""
    tag, w, h = run["tag"], image.get_width(), image.get_height()
    image.set_color_profile(Gimp.ColorProfile.new_rgb_adobe())
    try:
        arguments = {"color-match": float(run["color_match"]), "refine": False}
        RESULT[f"{tag}_status"] = run_pdb(run["procedure"], image, obj, arguments).index(0).value_nick
        RESULT[f"{tag}_layers"] = [layer.get_name() for layer in image.get_layers()]
        new = layer_named(image, run["layer"])
    finally:
        image.set_color_profile(Gimp.ColorProfile.new_rgb_srgb())  # assigned back: values unchanged
    if new is not None:
        (OUT / f"{tag}_new_layer.raw").write_bytes(read(new, w, h))  # sRGB again: the stored values
        image.remove_layer(new)


def precision_run(image, obj, run):
    """Image > Precision > (run["precision"]: 16 bit integer, 32 bit floating point linear...), the filter
    through the PDB, the new layer read at 16 bits with the sRGB tone curve; then back to 8 bits (exact:
    every value is an 8-bit level again) for the runs after it."""
    tag, w, h = run["tag"], image.get_width(), image.get_height()
    image.convert_precision(getattr(Gimp.Precision, run["precision"]))
    RESULT[f"{tag}_precision"] = image.get_precision().value_nick
    try:
        arguments = {"color-match": float(run["color_match"]), "refine": False}
        values = run_pdb(run["procedure"], image, obj, arguments)
        RESULT[f"{tag}_status"] = values.index(0).value_nick
        RESULT[f"{tag}_message"] = str(values.index(1)) if values.length() > 1 else ""
        RESULT[f"{tag}_layers"] = [layer.get_name() for layer in image.get_layers()]
        new = layer_named(image, run["layer"])
        if new is not None:
            (OUT / f"{tag}_new_layer.raw").write_bytes(read(new, w, h, "R'G'B'A u16"))
            image.remove_layer(new)
    finally:
        image.convert_precision(Gimp.Precision.U8_NON_LINEAR)


def refused_run(image, obj, run):
    """Runs the filter (through the PDB) where it must refuse with a message, and records the status and
    the message: the artist clicked a channel in the Channels dialog, so a channel is the active drawable
    ("on_channel": it must not be read as the picture), the pasted layer is hidden ("hidden"), or the
    object was pasted as a floating selection ("floating": the result would land under it)."""
    drawable = obj
    if run.get("on_channel"):
        black = Gegl.Color.new("black")
        drawable = Gimp.Channel.new(image, "Channel", image.get_width(), image.get_height(), 50.0, black)
        image.insert_channel(drawable, None, 0)
    if run.get("hidden"):
        obj.set_visible(False)
    if run.get("floating"):  # a plain Edit > Paste of the object: a floating selection, the active drawable
        Gimp.edit_copy([obj])
        (drawable,) = Gimp.edit_paste(obj, False)
    capabilities = Path(CONFIG["plugin_dir"]) / "capabilities.json"
    if run.get("stale"):  # the operation leaves the engine's capabilities (newer than the engine home's)
        kept, times = capabilities.read_text(), capabilities.stat()
        data = json.loads(kept)
        data["operations"] = [op for op in data["operations"] if op["name"] != run["stale"]]
        capabilities.write_text(json.dumps(data))
    try:
        values = run_pdb(run["procedure"], image, drawable)
        RESULT[f"{run['tag']}_status"] = values.index(0).value_nick
        RESULT[f"{run['tag']}_message"] = str(values.index(1)) if values.length() > 1 else ""
        RESULT[f"{run['tag']}_layers"] = [layer.get_name() for layer in image.get_layers()]
    finally:
        if run.get("stale"):
            capabilities.write_text(kept)
            os.utime(capabilities, ns=(times.st_atime_ns, times.st_mtime_ns))
        if run.get("on_channel"):
            image.remove_channel(drawable)
        if run.get("floating"):
            Gimp.floating_sel_remove(drawable)
            image.select_item(Gimp.ChannelOps.REPLACE, obj)
        obj.set_visible(True)


def add_paper(image):
    """A paper texture over everything, in Multiply mode: the kind of layer an artist keeps on top."""
    w, h = image.get_width(), image.get_height()
    paper = Gimp.Layer.new(image, "Paper", w, h, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.MULTIPLY)
    image.insert_layer(paper, None, 0)
    row = bytearray()
    for x in range(w):
        row += bytes([200 + (x * 7) % 56] * 3 + [255])
    buffer = paper.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, w, h), "R'G'B'A u8", bytes(row) * h)
    buffer.flush()
    paper.update(0, 0, w, h)
    return paper


def wait_for(predicate, timeout_s, step_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := predicate():
            return found
        time.sleep(step_s)
    return predicate()


def layer_named(image, name):
    """The image's layer named `name`, a shell-style pattern ("Generated (seed *)": a random seed's)."""
    return next(
        (layer for layer in image.get_layers() or [] if fnmatch.fnmatchcase(layer.get_name(), name)), None
    )


def main():
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(CONFIG["background"]))
    image.get_layers()[0].set_name("Background")
    obj = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(CONFIG["object"]))
    obj.set_name("Pasted object")
    image.insert_layer(obj, None, 0)
    image.select_item(Gimp.ChannelOps.REPLACE, obj)  # Layer > Transparency > Alpha to Selection
    # As Edit > Paste as > New Layer makes it: a layer the size of the object, placed where it belongs.
    x1, y1, x2, y2 = Gimp.Selection.bounds(image)[-4:]
    obj.resize(x2 - x1, y2 - y1, -x1, -y1)
    RESULT["object_layer"] = [*obj.get_offsets()[-2:], obj.get_width(), obj.get_height()]
    image.set_selected_layers([obj])
    w, h = image.get_width(), image.get_height()
    (OUT / "selection.raw").write_bytes(read(image.get_selection(), w, h, "Y u8"))
    image.clean_all()  # as a freshly opened file: the history starts here
    RESULT["display"] = Gimp.Display.new(image).get_id()
    window = Window()
    dump(image, obj, "before")
    window.screenshot("before_gimp.jpg")
    pdb = Gimp.get_pdb()
    for run in CONFIG["runs"]:
        if run.get("cancel"):
            cancel_run(image, obj, window, run)
            continue
        if run.get("on_channel") or run.get("hidden") or run.get("floating") or run.get("stale"):
            refused_run(image, obj, run)
            continue
        if run.get("quick_mask"):  # Select > Toggle Quick Mask (Shift+Q) in the window, the filter, then off
            window.key("shift+q")
            RESULT[f"{run['tag']}_channels"] = [c.get_name() for c in image.get_channels()]
            try:
                refused_run(image, obj, run)
            finally:
                window.key("shift+q")
                wait_for(lambda: not image.get_channels(), 10)
            continue
        if run.get("masked"):
            masked_run(image, obj, run)
            continue
        if run.get("profile"):
            profiled_run(image, obj, run)
            continue
        if run.get("new_image"):
            new_image_run(image, obj, window, run)
            continue
        if run.get("precision"):
            precision_run(image, obj, run)
            continue
        if run.get("animation"):
            animation_run(image, obj, window, run)
            continue
        if run.get("scratch") or run.get("resize"):
            meanwhile_run(image, obj, window, run)
            continue
        tag, name = run["tag"], run["layer"]
        procedure = pdb.lookup_procedure(run["procedure"])
        RESULT[f"{tag}_found"] = procedure is not None
        RESULT[f"{tag}_menu"] = [procedure.get_menu_label(), list(procedure.get_menu_paths())]
        # each argument's value type ("gint" for a whole number, as scripts pass it)
        RESULT[f"{tag}_arguments"] = {a.name: a.value_type.name for a in procedure.get_arguments()}
        log(f"run {tag}")
        paper = add_paper(image) if run.get("overlay") else None
        start = time.monotonic()
        image.set_selected_layers([obj])  # as the artist clicks the pasted layer before each filter
        if "color_match" in run or "arguments" in run:
            # As a script would: the procedure through the PDB, with its arguments.
            arguments = run.get("arguments") or {
                "color-match": float(run["color_match"]),
                "refine": bool(run.get("refine")),
            }
            RESULT[f"{tag}_status"] = run_pdb(run["procedure"], image, obj, arguments).index(0).value_nick
        else:
            window.run_action(procedure.get_menu_label())
            if run.get("dialog"):
                shot = f"{tag}_dialog_gimp.jpg" if run.get("screenshot") else None
                window.answer_dialog(procedure.get_menu_label(), shot)

        def arrived(n=name, t=tag, s=start):
            if f"{t}_preview_seen" not in RESULT and layer_named(image, f"{n} (preview)") is not None:
                RESULT[f"{t}_preview_seen"] = round(time.monotonic() - s, 2)
                RESULT[f"{t}_preview_layers"] = [layer.get_name() for layer in image.get_layers()]
            return layer_named(image, n) is not None

        if not wait_for(arrived, CONFIG["timeout_s"]):
            window.screenshot(f"{tag}_timeout_gimp.jpg")
            raise RuntimeError(f"no layer {name!r} after {CONFIG['timeout_s']} s")
        time.sleep(0.5)  # the plug-in flushes the displays right after it ends its undo group
        RESULT[f"{tag}_seconds"] = round(time.monotonic() - start, 2)
        layers = image.get_layers()
        new = layer_named(image, name)
        RESULT[f"{tag}_layer_name"] = new.get_name()
        RESULT[f"{tag}_new_layer_above"] = layers.index(new) == layers.index(obj) - 1
        (OUT / f"{tag}_new_layer.raw").write_bytes(read(new, w, h))
        dump(image, obj, tag)
        if run.get("screenshot"):
            window.screenshot(f"{tag}_gimp.jpg")
        if run.get("keep"):  # the artist keeps the result and goes on (the runs after it see it)
            continue
        window.key("ctrl+z")  # one Undo, from the keyboard
        wait_for(lambda n=name: layer_named(image, n) is None, 10)
        dump(image, obj, f"{tag}_undone")
        if (left := layer_named(image, name)) is not None:
            image.remove_layer(left)  # so that the next run starts from the same picture
        if paper is not None:
            image.remove_layer(paper)


try:
    main()
except Exception:
    RESULT["error"] = traceback.format_exc()
(OUT / "driver.json").write_text(json.dumps(RESULT, indent=1))
