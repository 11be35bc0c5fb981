"""CycleGAN: training speed, re-style speed per megapixel, and quality without downloaded weights.

    python -m bench.bench_cyclegan --preset fast --out runs/bench_cyclegan        # trains, then measures
    python -m bench.bench_cyclegan --model runs/bench_cyclegan/model --out ...    # measures a stored model
    python -m bench.bench_cyclegan --preset fast --set ngf=16 --set epoch_size=192 --time-only
    python -m bench.bench_cyclegan --methods reinhard consingan --out runs/bench_cyclegan   # no CycleGAN

Domain A is photos from ../shared/images/generation, domain B paintings from ../shared/images/harmonization
(--photos, --paintings; --held-out photos are re-styled but not trained on). Tables:

- training: seconds per iteration (one image each way, both generators and critics) and per epoch, and the
  whole run's time;
- quality per photo: the sliced Wasserstein distance of multi-scale 7x7 patches to the paintings (lower is
  closer to domain B; bench.quality.swd, normalised by the paintings' statistics) for the photo untouched,
  a Reinhard colour transfer to the paintings' Lab statistics, the model's a2b re-style and, with
  `--methods ... consingan`, the engine's ConSinGAN whole-image re-style (what `engine batch` does with a
  harmonization model: a model per painting at the same --preset, trained once into OUT/consingan/, each
  photo re-styled by each; the mean over the paintings' models); and how much of the photo's structure
  survives: the correlation of the luminance gradient magnitude with the photo's (1: every edge where it
  was);
- speed: seconds per megapixel of re-styling at each --sizes (tiled above 512 px), onnxruntime against eager
  torch, on this machine's CPU.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bench.baselines import reinhard_to
from bench.machine import measure, relative
from bench.quality import swd
from bench.settings import at_machine_precision, described, with_sets
from engine import families
from engine.device import configure_threads
from engine.families.cyclegan.config import PRESETS, Config
from engine.families.cyclegan.restyle import restyle
from engine.imageio import read_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "images"
PHOTOS = ("angkorwat.jpg", "colusseum.png", "marinabaysands.jpg", "stonehenge.jpg")
PAINTINGS = ("oil_tree.jpg", "pen_building.jpg", "scream.jpg", "watercolor_tree.jpg")
METHODS = {"reinhard": "Reinhard", "cyclegan": "CycleGAN", "consingan": "ConSinGAN (mean of the paintings')"}


def gradient_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of the luminance gradient magnitudes of two H x W x 3 images in [0, 1]."""

    def magnitude(image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image.astype(np.float32), cv2.COLOR_RGB2GRAY)
        return np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)).ravel()

    return float(np.corrcoef(magnitude(a), magnitude(b))[0, 1])


def domains(out: Path, photos: list[str], paintings: list[str]) -> tuple[Path, Path]:
    a, b = out / "domains" / "photos", out / "domains" / "paintings"
    for folder, names, sub in ((a, photos, "generation"), (b, paintings, "harmonization")):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name in names:
            shutil.copy(SHARED / sub / name, folder / name)
    return a, b


def time_iterations(config: Config, folders: tuple[Path, Path], scratch: Path, n: int) -> float:
    from engine.families.cyclegan.training import Trainer

    trainer = Trainer(config, folders, scratch, torch.device("cpu"), None, None)
    for _ in range(2):  # warm-up: allocator, oneDNN kernels
        trainer.step()
    start = time.perf_counter()
    for _ in range(n):
        trainer.step()
    return (time.perf_counter() - start) / n


def train(config: Config, folders: tuple[Path, Path], out: Path) -> tuple[Path, float]:
    from engine.families.cyclegan.training import Trainer

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    Trainer(config, folders, out, torch.device("cpu"), None, None).run()
    return out, time.perf_counter() - start


def consingan_models(paintings: list[str], preset: str, out: Path) -> list[Path]:
    """A ConSinGAN harmonization model per painting, trained as `engine train PAINTING --preset PRESET`
    does, kept in `out/PRESET_PRECISION` (a folder with its model.json is not trained again; one left by an
    interrupted run is resumed, as bench_harmonization does)."""
    from engine.families.consingan import Options
    from engine.families.consingan.config import training_configs
    from engine.family import TrainData, TrainRun
    from engine.model_dir import CHECKPOINT_DIR

    cpu = torch.device("cpu")
    precision = training_configs("harmonization", cpu, preset)[2].precision
    models = []
    for name in paintings:
        directory = out / f"{preset}_{precision.value}" / Path(name).stem
        if not (directory / "model.json").is_file():
            start = time.perf_counter()
            if (directory / CHECKPOINT_DIR / "state.pt").is_file():
                families.resume(directory, cpu)
            else:
                shutil.rmtree(directory, ignore_errors=True)
                painting = read_image(SHARED / "harmonization" / name).rgb
                options = Options(preset=preset)
                families.get("consingan").train(
                    TrainRun("harmonization", TrainData(painting), options, directory, cpu)
                )
            seconds = time.perf_counter() - start
            print(f"ConSinGAN `{preset}` harmonization model of {name}: {seconds:.0f} s", flush=True)
        models.append(directory)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast", choices=sorted(PRESETS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a Config field")
    parser.add_argument("--model", type=Path, help="measure this model instead of training one")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_cyclegan"))
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS))
    parser.add_argument("--paintings", nargs="+", default=list(PAINTINGS))
    parser.add_argument("--held-out", nargs="*", default=["zebra.png"], help="photos re-styled, not learnt")
    parser.add_argument("--time-iters", type=int, default=10, help="iterations timed before training")
    parser.add_argument("--time-only", action="store_true", help="only the training speed")
    parser.add_argument("--sizes", nargs="+", type=float, default=[1.0, 4.0], help="megapixels to re-style")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["reinhard", "cyclegan"],
        choices=list(METHODS),
        help="re-styles compared with the untouched photo (without cyclegan: no training, no speed table)",
    )
    args = parser.parse_args()
    if "cyclegan" not in args.methods and (args.model or args.time_only):
        parser.error("--model and --time-only measure a CycleGAN: add cyclegan to --methods")
    configure_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    folders = domains(args.out, args.photos, args.paintings)
    config = with_sets(PRESETS[args.preset], args.set)
    config = at_machine_precision(config, args.set, config.ngf)  # as a user's `engine train` gets
    print(f"photos: {', '.join(args.photos)}; paintings: {', '.join(args.paintings)}")
    machine = measure()
    print(machine.line())

    cyclegan = "cyclegan" in args.methods
    if args.model is None and cyclegan:
        spi = time_iterations(config, folders, args.out / "timing", args.time_iters)
        epoch = config.epoch_size or max(len(args.photos), len(args.paintings))
        iterations = epoch * config.total_epochs
        changed = described(config, args.set)
        print(f"\n| preset | settings | s / iteration | s / epoch ({epoch} it.) | run ({iterations} it.) |")
        print("|---|---|---|---|---|")
        estimate = f"{spi * iterations / 60:.1f} min"
        print(f"| {args.preset} | {changed} | {spi:.3f} | {spi * epoch:.0f} | {estimate} |")
        if args.time_only:
            return
        model, seconds = train(config, folders, args.out / "model")
        print(
            f"\ntrained in {seconds / 60:.1f} min ({seconds / iterations:.3f} s / iteration; "
            f"{relative(seconds, machine)})"
        )
    else:
        model = args.model

    restylers: dict[str, list] = {}  # method: the functions re-styling a photo (several: their mean)
    paintings = [read_image(SHARED / "harmonization" / n).rgb for n in args.paintings]
    if "reinhard" in args.methods:
        restylers["reinhard"] = [lambda photo: reinhard_to(photo, paintings)]
    if cyclegan:
        run = families.load(model, "cpu", "onnxruntime").runner["a2b"]
        restylers["cyclegan"] = [lambda photo: restyle(run, photo)]
    if "consingan" in args.methods:
        restylers["consingan"] = [
            _whole_image(m) for m in consingan_models(args.paintings, args.preset, args.out / "consingan")
        ]
    names = [METHODS[m] for m in restylers]
    print(
        f"\n| photo | SWD to paintings: untouched | {' | '.join(names)} | edges kept: {' | '.join(names)} |"
    )
    print("|---|---|" + "---|" * 2 * len(names))
    rows = []
    for name in [*args.photos, *args.held_out]:
        photo = read_image(SHARED / "generation" / name).rgb
        scores, edges = [swd(paintings, [photo])], []
        for method, functions in restylers.items():
            styled = [fn(photo) for fn in functions]
            for i, image in enumerate(styled):
                suffix = f"_{Path(args.paintings[i]).stem}" if len(styled) > 1 else ""
                cv2.imwrite(str(args.out / f"{Path(name).stem}_{method}{suffix}.png"), cv2.cvtColor(
                    (image * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR))  # fmt: skip
            scores.append(float(np.mean([swd(paintings, [x]) for x in styled])))
            edges.append(float(np.mean([gradient_correlation(photo, x) for x in styled])))
        rows.append((scores, edges))
        tag = " (held out)" if name in args.held_out else ""
        print(f"| {name}{tag} | " + " | ".join(f"{v:.3f}" for v in [*scores, *edges]) + " |")
    mean = np.mean([[*s, *e] for s, e in rows], axis=0)
    print("| mean | " + " | ".join(f"{v:.3f}" for v in mean) + " |")
    if not cyclegan:
        return

    print("\n| size | onnxruntime s / MP | torch s / MP | torch / onnxruntime |")
    print("|---|---|---|---|")
    torch_run = families.load(model, "cpu", "torch").runner["a2b"]
    rng = np.random.default_rng(0)
    for mp in args.sizes:
        w = int(round((mp * 1e6 * 4 / 3) ** 0.5))
        h = int(round(w * 3 / 4))
        base = read_image(SHARED / "generation" / "zebra.png").rgb
        picture = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        picture += rng.normal(0, 0.01, picture.shape).astype(np.float32)
        times = []
        for runner in (run, torch_run):
            restyle(runner, picture[:64, :64])  # warm-up
            best = min(_timed(lambda r=runner, p=picture: restyle(r, p)) for _ in range(args.repeats))
            times.append(best / (w * h / 1e6))
        print(f"| {w}x{h} | {times[0]:.2f} | {times[1]:.2f} | {times[1] / times[0]:.2f} |")


def _whole_image(model: Path):
    """The photo re-styled whole by a ConSinGAN harmonization model, as `engine batch` applies it (eager
    torch: the same pixels as onnxruntime, tests/test_onnx_export.py, without the export)."""
    from engine import batch
    from engine.imageio import Picture, mask_from_array

    apply_fn = batch.in_process(model, "torch", "cpu", {})

    def run(photo: np.ndarray) -> np.ndarray:
        return apply_fn(Picture(photo), mask_from_array(np.ones(photo.shape[:2], np.float32))).rgb

    return run


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
