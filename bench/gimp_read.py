"""How long the GIMP plug-in takes to read a picture and write a result, per precision.

    python -m bench.gimp_read --size 4000x3000 --precisions U8_NON_LINEAR U16_NON_LINEAR FLOAT_LINEAR

Runs inside GIMP 3 (gimp-console in the Debian 13 root the editor tests build, as root) on a made-up
image of that size: a noise painting and a pasted layer with an opaque object, selected. Installs the
plug-in into that root, times its own `read_canvas` (the picture, the picture without the pasted layer,
the layer: what Harmonize selection sends) and `add_result_layer` for a result a quarter of the canvas
wide and high, then uninstalls it. A float image is read and written through Babl as 16-bit integers with
the sRGB curve (editor_bridge.plugin_core.check_color_depth). Prints the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.editor_e2e import (
    GIMP_PLUGINS,
    GIMP_ROOT,
    ROOT,
    editor_skip_reason,
    gimp_root_mounted,
    install_plugin,
)

INSIDE = Path("/tmp/singan-gimp-bench")  # the working folder as GIMP sees it, inside the root

# Run by GIMP's Python (3.13) with the plug-in's module imported from its installed folder.
DRIVER = r"""
import json, statistics, sys, time
config = json.load(open(CONFIG))
sys.path.insert(0, config["plugin_dir"])
import singan_studio as plugin  # puts the plug-in's vendor folder (numpy, editor_bridge) on the path
import numpy as np
from gi.repository import Gegl, Gimp
from editor_bridge.plugin_core import LayerPatch

width, height = config["size"]
rows = []
for precision in config["precisions"]:
    runs = []
    for _ in range(config["repeat"]):
        image = Gimp.Image.new_with_precision(
            width, height, Gimp.ImageBaseType.RGB, getattr(Gimp.Precision, precision)
        )
        rng = np.random.default_rng(0)
        painting = rng.integers(0, 65536, (height, width, 4), dtype=np.uint16)
        painting[..., 3] = 65535
        pasted = np.zeros((height, width, 4), np.uint16)
        pasted[height // 3 : height // 2, width // 3 : width // 2] = 65535
        layers = []
        for name, pixels in (("Painting", painting), ("Pasted object", pasted)):
            layer = Gimp.Layer.new(
                image, name, width, height, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL
            )
            image.insert_layer(layer, None, 0)
            buffer = layer.get_buffer()
            buffer.set(Gegl.Rectangle.new(0, 0, width, height), "R'G'B'A u16", pixels.tobytes())
            buffer.flush()
            layers.append(layer)
        x, y = width // 3, height // 3
        image.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, width // 2 - x, height // 2 - y)
        start = time.perf_counter()
        canvas = plugin.read_canvas(image, layers[1])
        read_s = time.perf_counter() - start
        w, h = width // 4, height // 4
        result = rng.integers(0, 256 if canvas.depth == 8 else 65536, (h, w, 4)).astype(canvas.dtype)
        patch = LayerPatch(width // 3, height // 3, w, h, result.tobytes(), "Harmonized")
        start = time.perf_counter()
        plugin.add_result_layer(image, layers[1].get_tattoo(), canvas, patch)
        write_s = time.perf_counter() - start
        image.delete()
        runs.append((read_s, write_s, canvas.depth))
    rows.append({
        "precision": precision,
        "canvas_bits": runs[0][2],
        "read_s": statistics.median(r[0] for r in runs),
        "write_s": statistics.median(r[1] for r in runs),
    })
json.dump(rows, open(config["out"], "w"))
"""


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--size", default="4000x3000", help="canvas WIDTHxHEIGHT")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["U8_NON_LINEAR", "U16_NON_LINEAR", "HALF_LINEAR", "FLOAT_LINEAR"],
        help="Gimp.Precision names",
    )
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    reason = editor_skip_reason("gimp")
    if reason is not None:
        sys.exit(f"cannot run GIMP here: {reason}")
    width, height = (int(v) for v in options.size.split("x"))
    work = GIMP_ROOT / INSIDE.relative_to("/")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dest = GIMP_ROOT / GIMP_PLUGINS
    with tempfile.TemporaryDirectory() as user:
        # The root's GIMP runs Debian 13's Python 3.13: the installer fetches wheels for it.
        install_plugin(
            "gimp", Path(user), "--dest", str(dest), "--python", "3.13", "--home", f"{INSIDE}/engine"
        )
    try:
        config = {
            "plugin_dir": f"/{GIMP_PLUGINS}/singan_studio",
            "size": [width, height],
            "precisions": options.precisions,
            "repeat": options.repeat,
            "out": str(INSIDE / "out.json"),
        }
        (work / "config.json").write_text(json.dumps(config))
        (work / "driver.py").write_text(f"CONFIG = {str(INSIDE / 'config.json')!r}\n{DRIVER}")
        batch = f'exec(open("{INSIDE}/driver.py").read())'
        command = ["chroot", str(GIMP_ROOT), "env", "HOME=/root", "gimp-console-3.0", "-i"]
        command += ["--batch-interpreter=python-fu-eval", "-b", batch, "--quit"]
        with gimp_root_mounted():
            run = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
        out = work / "out.json"
        if not out.is_file():
            sys.exit(f"GIMP wrote no result:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
        rows = json.loads(out.read_text())
    finally:
        uninstall = [sys.executable, "-m", "engine.cli", "plugin", "uninstall", "gimp", "--dest", str(dest)]
        subprocess.run(uninstall, cwd=ROOT, capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    print(f"GIMP plug-in, {options.size} canvas, median of {options.repeat}")
    print(f"{'precision':>15} {'sent as':>8} {'read (s)':>9} {'write (s)':>10}")
    for row in rows:
        bits = row["canvas_bits"]
        print(f"{row['precision']:>15} {bits:>5}-bit {row['read_s']:>9.2f} {row['write_s']:>10.2f}")


if __name__ == "__main__":
    main()
