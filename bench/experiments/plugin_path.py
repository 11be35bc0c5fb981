"""One real paste taken through the editor plugins' code path and a real `engine serve`, for looking at.

    python -m bench.experiments.plugin_path watercolor_tree \
        --out docs/images/plugin-watercolor-retrain-refine.jpg

Starts `engine serve` on a fresh home, then, as an artist would from Krita or GIMP (the plugins' own
`editor_bridge.plugin_runner.Runner` with the canvas they send: the picture, the pasted layer, the
painting under it and the selection): Harmonize selection at colour match 0.5, again at 0, Retrain and
harmonize at 0, Harmonize (now the retrained model) at 0.5, and Harmonize with Refine at 0. Writes a strip
of the selection's box: the paste, then each result, and prints each step's wall-clock time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from editor_bridge.plugin_core import Canvas, Editor, menu
from editor_bridge.plugin_runner import Runner, Settings
from engine import families

IMAGES = Path(__file__).resolve().parents[3] / "shared" / "images" / "harmonization"
ENTRIES = {op.action: op for op in menu(families.capabilities())}  # the plugins' menu entries
HARMONIZE, RETRAIN_HARMONIZE = ENTRIES["harmonize"], ENTRIES["retrain-harmonize"]
STEPS = [
    ("harmonize 0.5", HARMONIZE, 0.5, False),
    ("harmonize 0", HARMONIZE, 0.0, False),
    ("retrain 0", RETRAIN_HARMONIZE, 0.0, False),
    ("retrained 0.5", HARMONIZE, 0.5, False),
    ("refine 0", HARMONIZE, 0.0, True),
]


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def canvas_for(name: str) -> tuple[Canvas, np.ndarray, np.ndarray]:
    """The canvas GIMP's plugin sends for IMAGES/NAME_naive.jpg pasted over IMAGES/NAME.jpg."""
    painting, naive = _rgb(IMAGES / f"{name}.jpg"), _rgb(IMAGES / f"{name}_naive.jpg")
    mask = cv2.imread(str(IMAGES / f"{name}_naive_mask.jpg"), cv2.IMREAD_GRAYSCALE)
    mask = np.where(mask > 127, 255, 0).astype(np.uint8)
    h, w = mask.shape
    opaque = np.full((h, w), 255, np.uint8)

    def rgba(rgb: np.ndarray, alpha: np.ndarray) -> bytes:
        return np.dstack([rgb, alpha]).astype(np.uint8).tobytes()

    canvas = Canvas(
        Editor.GIMP,
        w,
        h,
        composite=rgba(naive, opaque),
        layer=rgba(naive, mask),
        background=rgba(painting, opaque),
        selection=mask.tobytes(),
    )
    return canvas, naive, mask


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("painting", help="a name in shared/images/harmonization, e.g. watercolor_tree")
    parser.add_argument("--out", required=True, help="the strip to write")
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--height", type=int, default=220, help="height of the strip")
    args = parser.parse_args()
    canvas, naive, mask = canvas_for(args.painting)
    x, y, bw, bh = cv2.boundingRect(mask)
    crops = [naive[y : y + bh, x : x + bw]]
    home = Path(tempfile.mkdtemp(prefix="plugin_path_"))
    engine = [sys.executable, "-m", "engine.cli"]
    server = subprocess.Popen(
        [*engine, "serve", "--home", str(home)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        runner = Runner(
            Settings(home=str(home), preset=args.preset, timeout_s=60), on_progress=lambda p: None
        )
        deadline = time.monotonic() + 60
        while not (home / "engine.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.5)
        for name, op, color_match, refine in STEPS:
            start = time.monotonic()
            patch = runner.run(op, canvas, color_match=color_match, refine=refine)
            got = np.frombuffer(patch.data, np.uint8).reshape(patch.height, patch.width, 4)
            out = naive.copy()
            region = out[patch.y : patch.y + patch.height, patch.x : patch.x + patch.width]
            alpha = got[..., 3:4] / 255.0
            region[:] = (got[..., :3] * alpha + region * (1 - alpha)).round().astype(np.uint8)
            crops.append(out[y : y + bh, x : x + bw])
            print(f"{name}: {time.monotonic() - start:.1f} s", flush=True)
    finally:
        subprocess.run([*engine, "stop", "--home", str(home)], capture_output=True)
        server.wait(timeout=60)
    strip = np.concatenate(
        [cv2.resize(c, (round(c.shape[1] * args.height / c.shape[0]), args.height)) for c in crops], axis=1
    )
    cv2.imwrite(args.out, cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {args.out} (engine home {home})")


if __name__ == "__main__":
    main()
