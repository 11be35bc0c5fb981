"""Test driver run inside the real GIMP 3 (gimp-console, python-fu-eval) by tests/test_plugin_gimp.py.

It opens the painting, pastes the object as its own layer, selects it (Alpha to Selection), calls the
installed plug-in's procedures through the PDB as GIMP's menu would, and writes what GIMP then holds (layer
bytes, the composite, layer names, the procedure's status and message) to files for the test to judge.
"""

import json
import time
import traceback
from pathlib import Path

from gi.repository import Gegl, Gimp, Gio

CONFIG = json.loads(Path("/tmp/singan-gimp-test/config.json").read_text())
OUT = Path(CONFIG["out"])
RESULT = {}


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


def main():
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(CONFIG["background"]))
    image.get_layers()[0].set_name("Background")
    obj = Gimp.file_load_layer(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(CONFIG["object"]))
    obj.set_name("Pasted object")
    image.insert_layer(obj, None, 0)
    image.select_item(Gimp.ChannelOps.REPLACE, obj)  # Layer > Transparency > Alpha to Selection
    w, h = image.get_width(), image.get_height()
    (OUT / "selection.raw").write_bytes(read(image.get_selection(), w, h, "Y u8"))
    dump(image, obj, "before")
    pdb = Gimp.get_pdb()
    for run in CONFIG["runs"]:
        tag = run["tag"]
        procedure = pdb.lookup_procedure(run["procedure"])
        RESULT[f"{tag}_found"] = procedure is not None
        RESULT[f"{tag}_menu"] = [procedure.get_menu_label(), list(procedure.get_menu_paths())]
        config = procedure.create_config()
        config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        config.set_property("image", image)
        config.set_core_object_array("drawables", [obj])
        start = time.monotonic()
        result = procedure.run(config)
        RESULT[f"{tag}_seconds"] = round(time.monotonic() - start, 2)
        RESULT[f"{tag}_status"] = result.index(0).value_name
        if result.length() > 1:
            RESULT[f"{tag}_message"] = str(result.index(1))
        layers = image.get_layers()
        new = next((layer for layer in layers if layer.get_name() == run["layer"]), None)
        if new is None:
            continue
        RESULT[f"{tag}_new_layer_above"] = layers.index(new) == layers.index(obj) - 1
        (OUT / f"{tag}_new_layer.raw").write_bytes(read(new, w, h))
        dump(image, obj, tag)
        image.remove_layer(new)  # the next action starts from the same picture
    image.delete()


try:
    main()
except Exception:
    RESULT["error"] = traceback.format_exc()
(OUT / "driver.json").write_text(json.dumps(RESULT, indent=1))
