"""How long the Krita plugin holds Krita's GUI thread to read a picture and write a result, per colour depth.

    python -m bench.krita_read --size 4000x3000 --depths U8 U16 F16 F32

Runs inside Krita (kritarunner, no display) on a made-up document of that size: a noise painting and a
pasted layer with an opaque object, the pasted layer active. Times the plugin's own `read_canvas` (the
picture, the picture without the pasted layer, the layer: what Harmonize selection sends) and
`add_result_layer` for a result a quarter of the canvas wide and high. A floating-point image is
converted to 16-bit integers with the sRGB curve by Krita's colour engine on the way in and back on the
way out (editor_bridge.plugin_core.check_color_depth); integer images are read as stored. Prints one
line per depth and the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# editor_env: no pyenv or venv on PATH, or Krita's Python would miss PyQt5
from tests.editor_e2e import ROOT, editor_env

PROFILES = {
    "U8": "sRGB-elle-V2-srgbtrc.icc",
    "U16": "sRGB-elle-V2-srgbtrc.icc",
    "F16": "sRGB-elle-V2-g10.icc",  # Krita's default profile for float images: linear light
    "F32": "sRGB-elle-V2-g10.icc",
}
DTYPES = {"U8": np.uint8, "U16": np.uint16, "F16": np.float16, "F32": np.float32}


class _Active:
    """The document with `node` as its active layer (a document has none without a view)."""

    def __init__(self, document, node) -> None:
        self._document, self._node = document, node

    def activeNode(self):  # noqa: N802 - Krita's name
        return self._node

    def __getattr__(self, name: str):
        return getattr(self._document, name)


def _time_depth(depth: str, width: int, height: int) -> dict:
    from krita import Krita
    from singan_studio.document import add_result_layer, read_canvas

    from editor_bridge.plugin_core import LayerPatch

    dtype = DTYPES[depth]
    top = 1.0 if depth.startswith("F") else np.iinfo(dtype).max
    rng = np.random.default_rng(0)
    document = Krita.instance().createDocument(width, height, "bench", "RGBA", depth, PROFILES[depth], 72.0)
    try:
        painting = (rng.random((height, width, 4)) * top).astype(dtype)
        painting[..., 3] = top
        background = document.createNode("Painting", "paintlayer")
        background.setPixelData(painting.tobytes(), 0, 0, width, height)
        document.rootNode().addChildNode(background, None)
        pasted = np.zeros((height, width, 4), dtype)
        pasted[height // 3 : height // 2, width // 3 : width // 2] = top
        layer = document.createNode("Pasted object", "paintlayer")
        layer.setPixelData(pasted.tobytes(), 0, 0, width, height)
        document.rootNode().addChildNode(layer, None)
        document.waitForDone()
        start = time.perf_counter()
        canvas, target = read_canvas(_Active(document, layer))
        read_s = time.perf_counter() - start
        w, h = width // 4, height // 4
        result = (rng.random((h, w, 4)) * (255 if canvas.depth == 8 else 65535)).astype(canvas.dtype)
        start = time.perf_counter()
        add_result_layer(target, LayerPatch(width // 3, height // 3, w, h, result.tobytes(), "Harmonized"))
        document.waitForDone()
        write_s = time.perf_counter() - start
        return {"depth": depth, "canvas_bits": canvas.depth, "read_s": read_s, "write_s": write_s}
    finally:
        document.setModified(False)
        document.close()


def main(args: list[str]) -> None:
    """kritarunner's entry point: args = [out.json, WIDTHxHEIGHT, repeat, depth...]."""
    out, size, repeat, *depths = args
    width, height = (int(v) for v in size.split("x"))
    rows = []
    try:
        for depth in depths:
            runs = [_time_depth(depth, width, height) for _ in range(int(repeat))]
            rows.append(
                {
                    **runs[0],
                    "read_s": statistics.median(r["read_s"] for r in runs),
                    "write_s": statistics.median(r["write_s"] for r in runs),
                }
            )
    except Exception as error:  # reported by the parent process
        rows.append({"error": repr(error)})
    Path(out).write_text(json.dumps(rows))


def cli() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--size", default="4000x3000", help="canvas WIDTHxHEIGHT")
    parser.add_argument("--depths", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    site = str(Path(np.__file__).resolve().parents[1])  # numpy for Krita's own Python
    with tempfile.TemporaryDirectory() as home:
        out = Path(home) / "out.json"
        paths = [str(ROOT / "bench"), str(ROOT / "plugins" / "krita"), str(ROOT), site]
        env = editor_env(HOME=home, QT_QPA_PLATFORM="offscreen", PYTHONPATH=os.pathsep.join(paths))
        command = ["kritarunner", "-s", "krita_read", "-f", "main", str(out), options.size]
        command += [str(options.repeat), *options.depths]
        subprocess.run(command, env=env, capture_output=True, check=False, timeout=1800)
        if not out.is_file():
            sys.exit("kritarunner wrote no result: is Krita installed (bash plugins/ci/setup-editors.sh)?")
        rows = json.loads(out.read_text())
    print(f"Krita plugin, {options.size} canvas, median of {options.repeat}")
    print(f"{'depth':>6} {'sent as':>8} {'read (s)':>9} {'write (s)':>10}")
    for row in rows:
        if "error" in row:
            sys.exit(f"failed in Krita: {row['error']}")
        print(f"{row['depth']:>6} {row['canvas_bits']:>5}-bit {row['read_s']:>9.2f} {row['write_s']:>10.2f}")


if __name__ == "__main__":
    cli()
