"""The training-free harmonized preview (engine/preview.py): quality on the synthetic cases, speed, and how
its time grows with the image and the selection.

    python -m bench.bench_preview --out runs/bench_preview                      # all of it
    python -m bench.bench_preview --set anchor=0.3 --set levels=2 --out ...     # a variant's quality

Quality: the synthetic cases of the harmonization benchmark (bench/synthetic_cases.py, the same four
paintings, an easy and a hard case each, at 250 px), the preview against the untouched composite,
Poisson blending, a global Reinhard transfer and the preview's colour step alone ("ring"). Errors inside the
mask against the original painting: mean squared RGB error on a 0-255 scale (issue 25's), mean Delta E;
detail and texture scores (bench/quality.py). The trained `fast` model's numbers on the same cases are
bench/bench_harmonization.py's (docs/benchmarks.md).

Speed: seconds per preview of the shared naive composites at 250 px and at full size, and of the Scream
scaled to 4000 px with selections of growing size; and through a real `engine serve` ("daemon"), the time
from a plugin's harmonize request (the layer, the selection and the painting to train on, as Krita's
plugin sends them) to the preview's arrival, for each never-seen painting at 250 px and at 4000 px (the
training that follows is cancelled). The sheets (--out) are for looking: a preview that
smears the object into the background fails whatever the numbers say.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import cv2
import numpy as np

from bench.baselines import poisson_blend, reinhard_transfer
from bench.quality import detail_score, masked_error, texture_score
from bench.settings import with_sets
from bench.synthetic_cases import DEFAULT_DIR, PAINTINGS, load_cases, read_mask, read_rgb
from engine.device import configure_threads
from engine.imageio import Picture
from engine.preview import PreviewSettings, harmonize_preview


def to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def run_preview(
    composite: np.ndarray, mask: np.ndarray, settings: PreviewSettings
) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = harmonize_preview(
        Picture(composite.astype(np.float32) / 255), mask.astype(np.float32), None, settings
    )
    return to_u8(out.rgb), time.perf_counter() - start


def quality(settings: PreviewSettings, out: Path) -> None:
    rows, totals, sheet = [], {}, []
    for case in load_cases():
        mask = case.mask > 127
        methods = {
            "composite": case.composite,
            "reinhard": reinhard_transfer(case.composite, mask, case.background),
            "poisson": poisson_blend(case.composite, mask, case.background),
        }
        methods["colour only"], _ = run_preview(
            case.composite, mask, dataclasses.replace(settings, texture=False)
        )
        methods["preview"], seconds = run_preview(case.composite, mask, settings)
        for name, image in methods.items():
            err = masked_error(image, case.ground_truth, mask)
            mse = float(np.mean((image.astype(np.float64) - case.ground_truth)[mask] ** 2))
            values = (mse, err.delta_e, detail_score(image, case.ground_truth, mask),
                      texture_score(image, case.ground_truth, mask))  # fmt: skip
            rows.append((case.name, name, *values))
            totals.setdefault(name, []).append(values)
        print(f"{case.name}: preview {seconds:.2f} s", flush=True)
        sheet.append(np.concatenate([case.ground_truth, *methods.values()], axis=1))
    print("\n| case | method | MSE (0-255) | Delta E | detail | texture |\n|---|---|---|---|---|---|")
    for name, method, mse, de, detail, texture in rows:
        print(f"| {name} | {method} | {mse:.0f} | {de:.1f} | {detail:.2f} | {texture:.2f} |")
    print("\n| method (mean of 8 cases) | MSE | Delta E | detail | texture |\n|---|---|---|---|---|")
    for name, values in totals.items():
        mse, de, detail, texture = np.mean(values, axis=0)
        print(f"| {name} | {mse:.0f} | {de:.1f} | {detail:.2f} | {texture:.2f} |")
    write_sheet(out / "synthetic.png", sheet)
    print(f"\nsheet (truth, {', '.join(methods)}): {out / 'synthetic.png'}")


def write_sheet(path: Path, rows: list[np.ndarray], height: int = 220) -> None:
    scaled = [
        cv2.resize(r, (r.shape[1] * height // r.shape[0], height), interpolation=cv2.INTER_AREA) for r in rows
    ]
    width = max(r.shape[1] for r in scaled)
    grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in scaled])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def real_pastes(settings: PreviewSettings, out: Path) -> None:
    print("\n| painting | size | seconds |\n|---|---|---|")
    sheet = []
    for name in PAINTINGS:
        for side in (250, None):
            composite = read_rgb(DEFAULT_DIR / f"{name}_naive.jpg", side)
            mask = read_mask(DEFAULT_DIR / f"{name}_naive_mask.jpg", composite.shape)
            preview, seconds = run_preview(composite, mask, settings)
            print(f"| {name} | {composite.shape[1]}x{composite.shape[0]} | {seconds:.2f} |", flush=True)
            if side:
                sheet.append(np.concatenate([composite, preview], axis=1))
    write_sheet(out / "real_pastes.png", sheet, 300)
    print(f"\nsheet (composite, preview): {out / 'real_pastes.png'}")


def scaling(settings: PreviewSettings) -> None:
    """Time against the image's size (the Scream's paste scaled) and the selection's (a disc)."""
    composite = read_rgb(DEFAULT_DIR / "scream_naive.jpg")
    mask = read_mask(DEFAULT_DIR / "scream_naive_mask.jpg", composite.shape)
    print("\n| image | selection | seconds |\n|---|---|---|")
    for side in (250, 1000, 2000, 4000):
        scale = side / max(composite.shape[:2])
        size = (round(composite.shape[1] * scale), round(composite.shape[0] * scale))
        image = cv2.resize(composite, size, interpolation=cv2.INTER_CUBIC)
        m = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        _, seconds = run_preview(image, m, settings)
        print(f"| {size[0]}x{size[1]} | the paste ({m.mean():.0%}) | {seconds:.2f} |", flush=True)
    image = cv2.resize(composite, (2000, round(2000 * composite.shape[0] / composite.shape[1])))
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    for share in (0.02, 0.1, 0.3, 0.6):
        radius = np.sqrt(share * h * w / np.pi)
        m = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= radius**2
        _, seconds = run_preview(image, m, settings)
        print(f"| {w}x{h} | disc ({m.mean():.0%}) | {seconds:.2f} |", flush=True)


def daemon(out: Path) -> None:
    """Request to preview through a real daemon, each painting new to it (so a model would train)."""
    import tempfile
    import threading

    from bench.bench_serve import harmonize, start_daemon
    from editor_bridge import Client
    from editor_bridge.errors import JobCancelled

    print("\n| painting | size | request to preview (s) |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        proc = start_daemon(home, "torch")
        try:
            with Client.from_connection_file(home=home, timeout=300) as client:
                for name in PAINTINGS:
                    for side in (250, 4000):
                        layer = _plugin_layers(name, side)
                        request, buffers = harmonize(layer, train={"preset": "fast"}, preview=True)
                        cancel, heard = threading.Event(), {}
                        start = time.perf_counter()

                        def got(message, heard=heard, cancel=cancel, start=start) -> None:
                            heard["s"] = time.perf_counter() - start
                            cancel.set()  # the artist keeps the preview: the training is not needed

                        try:
                            client.run_job(request, buffers, cancel=cancel, on_preview=got)
                        except JobCancelled:
                            pass
                        h, w = layer["naive"].shape[:2]
                        print(f"| {name} | {w}x{h} | {heard.get('s', float('nan')):.2f} |", flush=True)
        finally:
            proc.terminate()
            proc.wait(120)


def _plugin_layers(name: str, side: int) -> dict[str, np.ndarray]:
    """The painting, the composite (BGRA, as Krita sends them) and the selection, long side `side`."""
    composite = read_rgb(DEFAULT_DIR / f"{name}_naive.jpg")
    h, w = composite.shape[:2]
    size = (round(w * side / max(h, w)), round(h * side / max(h, w)))

    def fit(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA if side < max(h, w) else cv2.INTER_CUBIC)

    painting = read_rgb(DEFAULT_DIR / f"{name}.jpg")
    mask = read_mask(DEFAULT_DIR / f"{name}_naive_mask.jpg", composite.shape)
    mask = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_NEAREST)
    return {
        "background": cv2.cvtColor(fit(painting), cv2.COLOR_RGB2BGRA),
        "naive": cv2.cvtColor(fit(composite), cv2.COLOR_RGB2BGRA),
        "mask": mask[:, :, None],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="a PreviewSettings field"
    )
    parser.add_argument("--only", choices=["quality", "real", "scaling", "daemon"], help="one table only")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_preview"))
    args = parser.parse_args()
    configure_threads()
    settings = with_sets(PreviewSettings(), args.set)
    print(f"settings: {settings}")
    if args.only in (None, "quality"):
        quality(settings, args.out)
    if args.only in (None, "real"):
        real_pastes(settings, args.out)
    if args.only in (None, "scaling"):
        scaling(settings)
    if args.only in (None, "daemon"):
        daemon(args.out)


if __name__ == "__main__":
    main()
