"""The `engine` command: argument parsing -> configs -> calls. The only place that exits."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path

from engine.assets import asset_dir
from engine.config import MAX_ITERS
from engine.errors import EngineError, out_of_memory

EXAMPLES = asset_dir("examples")


def _device(args: argparse.Namespace):
    from engine.device import configure_threads, select_device

    configure_threads()
    return select_device(args.device)


def _progress(args: argparse.Namespace, label: str):
    from engine.progress import ProgressBar

    return None if args.json else ProgressBar(label)


def _steps(args: argparse.Namespace, label: str, total: int):
    """A StepBar for the quick commands (it draws nothing with --json, as for _progress)."""
    from engine.progress import StepBar

    return StepBar(label, total, quiet=args.json)


def _cancel_on_signals() -> threading.Event:
    """First Ctrl-C (or SIGTERM) stops training cleanly at the next iteration; a second one aborts."""
    cancel = threading.Event()

    def handler(signum, frame):
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nstopping after this iteration (press Ctrl-C again to abort)...", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return cancel


def _finish_bar(bar) -> None:
    if bar is not None:
        bar.close()


def cmd_train(args: argparse.Namespace) -> dict:
    from engine import training
    from engine.device import training_configs
    from engine.imageio import read_image

    device = _device(args)
    bar = _progress(args, "train")
    cancel = _cancel_on_signals()
    try:
        if args.resume:
            out = training.resume(Path(args.resume), device, bar, cancel)
        else:
            if args.image is None or args.out is None:
                raise EngineError("train needs IMAGE and --out MODEL_DIR (or --resume MODEL_DIR)")
            picture = read_image(args.image)
            _, model, train_cfg = training_configs(
                args.mode,
                device,
                args.preset,
                args.precision,
                stages=args.stages,
                iters=args.iters,
                max_size=args.max_size,
                seed=args.seed,
            )
            out = training.train(picture.rgb, model, train_cfg, Path(args.out), device, bar, cancel)
    finally:
        _finish_bar(bar)
    return _model_summary(out)


def _model_summary(path: Path) -> dict:
    from engine.model_dir import read_meta

    meta = read_meta(path)
    return {
        "model": str(path),
        "mode": meta["model"]["mode"],
        "stages": [f"{w}x{h}" for h, w in meta["stage_shapes"]],
        "training_seconds": meta["info"].get("training_seconds"),
        "preview": str(path / "preview.png"),
    }


def cmd_finetune(args: argparse.Namespace) -> dict:
    from engine import training
    from engine.imageio import read_image

    device = _device(args)
    if args.resume:
        naive = None
    elif args.model_dir is None or args.naive is None or args.out is None:
        raise EngineError("finetune needs MODEL_DIR, --naive IMAGE and --out NEW_MODEL_DIR (or --resume DIR)")
    else:
        naive = read_image(args.naive).rgb
    bar = _progress(args, "finetune")
    cancel = _cancel_on_signals()
    try:
        if naive is None:
            out = training.resume(Path(args.resume), device, bar, cancel)
        else:
            out = training.finetune(
                Path(args.model_dir), naive, Path(args.out), device, args.iters, bar, cancel
            )
    finally:
        _finish_bar(bar)
    return _model_summary(out)


def _int_in(name: str, low: int, high: int):
    """An argparse type: an integer in [low, high], refused with the range in a one-line usage error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number (got {text})") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high} (got {text})")
        return value

    parse.__name__ = name  # argparse names the type in "invalid NAME value" messages
    return parse


MAX_SEED = 2**32 - 1  # the protocol's range (editor_bridge.protocol.Seed)
seed_value = _int_in("seed", 0, MAX_SEED)
count_value = _int_in("count", 1, 10_000)
side_value = _int_in("size", 1, 1_000_000)
iters_value = _int_in("iterations", 1, MAX_ITERS)


def color_match_fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (got {text})")
    return value


def add_color_match(p: argparse.ArgumentParser, harmonize_only: bool = False) -> None:
    """--color-match, its help naming the defaults the modes define (engine.modes)."""
    from engine.modes import Mode, spec

    harmonization, editing = (spec(m).color_match for m in (Mode.HARMONIZATION, Mode.EDITING))
    if harmonize_only:
        default_text = f"the engine's, {harmonization:g}; used by Harmonize selection, not by Edit selection"
    else:
        default_text = f"{harmonization:g} for harmonization, {editing:g} for editing"
    p.add_argument(
        "--color-match",
        type=color_match_fraction,
        default=None,
        metavar="0-1",
        help="move the selection towards its surroundings' colours (Poisson blending) before the model "
        "runs: up to 0.5 their hue, saturation and contrast, from 0.5 to 1 their lightness too; 0 keeps the "
        f"selection's own colours, 1 lets objects fade into the scene's light (default: {default_text})",
    )


def _backend(args: argparse.Namespace, model):
    """--backend onnxruntime (default; exports MODEL_DIR/sampler.onnx on first use) or torch."""
    from engine.runtime import make_backend

    return make_backend(model, args.backend)


def cmd_sample(args: argparse.Namespace) -> dict:
    from engine import apply
    from engine.imageio import Picture, write_image
    from engine.runtime import describe_backend
    from engine.store import load_model

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EngineError(f"--out {out} is a file; sample writes sample_NNN.png files into a folder")
    with _steps(args, "sample", 3 + args.n) as bar:
        bar.step("loading the model")
        model = load_model(args.model_dir, _device(args))
        bar.step(f"preparing {args.backend}")
        backend = _backend(args, model)
        images = apply.sample(
            model,
            args.n,
            args.height,
            args.width,
            args.seed,
            backend=backend,
            on_sample=lambda i: bar.step(f"sample {i + 1} of {args.n}"),
        )
        bar.step("writing")
        files = [str(write_image(out / f"sample_{i:03d}.png", Picture(img))) for i, img in enumerate(images)]
    h, w = images[0].shape[:2]
    return {"files": files, "width": w, "height": h, **describe_backend(backend)}


def cmd_apply(args: argparse.Namespace) -> dict:
    from engine import apply
    from engine.imageio import check_output_file, read_image, read_mask, write_image
    from engine.runtime import describe_backend
    from engine.store import load_model

    check_output_file(args.out, inputs=(args.image, args.mask))
    with _steps(args, args.command, 5) as bar:
        bar.step("reading the image and the mask")
        picture = read_image(args.image)
        mask = read_mask(args.mask, picture.shape)
        bar.step("loading the model")
        model = load_model(args.model_dir, _device(args))
        expected = {"harmonize": "harmonization", "edit": "editing"}[args.command]
        if model.model.mode.value != expected:
            raise EngineError(
                f"{args.model_dir} is a model for {model.model.mode.value}; "
                f"`engine {args.command}` needs a model trained with --mode {expected}"
            )
        bar.step(f"preparing {args.backend}")
        backend = _backend(args, model)
        bar.step({"harmonize": "harmonizing", "edit": "editing"}[args.command])
        start = time.perf_counter()
        result = apply.apply_to_selection(
            model, picture, mask, args.seed, backend=backend, color_match=args.color_match
        )
        bar.step("writing")
        out = write_image(args.out, result)
    h, w = result.shape
    seconds = round(time.perf_counter() - start, 3)
    return {"file": str(out), "width": w, "height": h, "seconds": seconds, **describe_backend(backend)}


def cmd_export(args: argparse.Namespace) -> dict:
    from engine.onnx_export import export
    from engine.store import load_model

    if Path(args.out).suffix.lower() != ".onnx":
        raise EngineError(f"--out {args.out} must be an .onnx file name")
    start = time.perf_counter()
    with _steps(args, "export", 2) as bar:
        bar.step("loading the model")
        model = load_model(args.model_dir, "cpu")
        bar.step("exporting to ONNX and checking the graph")
        path = export(model, Path(args.out), fp16=args.fp16)
    return {
        "onnx": str(path),
        "precision": "fp16" if args.fp16 else "fp32",
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - start, 1),
    }


def cmd_demo(args: argparse.Namespace) -> dict:
    """Quick start: train a fast harmonization model on the bundled painting and harmonize its composite."""
    out = Path(args.out)
    model_dir = out / "model"
    common = ["--device", args.device] if args.device else []
    if not (model_dir / "model.json").is_file():
        train_args = [str(EXAMPLES / "scream.jpg"), "--mode", "harmonization", "--out", str(model_dir)]
        summary = cmd_train(
            build_parser().parse_args(["train", *train_args, "--preset", args.preset, *common])
        )
        print(f"trained {summary['model']} in {summary['training_seconds']} s", file=sys.stderr)
    harmonize_args = [
        "harmonize",
        str(model_dir),
        "--image",
        str(EXAMPLES / "scream_naive.jpg"),
        "--mask",
        str(EXAMPLES / "scream_naive_mask.jpg"),
        "--out",
        str(out / "harmonized.png"),
        *common,
    ]
    result = cmd_apply(build_parser().parse_args(harmonize_args))
    print(f"harmonized image written to {result['file']}", file=sys.stderr)
    return {**result, "model": str(model_dir)}


class _Parser(argparse.ArgumentParser):
    """Usage errors end like every other bad input: one line on stderr, and with --json one result object."""

    json_errors = False  # set by main() when --json is on the command line

    def error(self, message: str):
        message = f"{message} (see `{self.prog} --help`)"
        if self.json_errors:
            print(json.dumps({"ok": False, "error": message}))
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="engine", description="Single-image GAN engine (ConSinGAN).")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
        p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
        return p

    p = command("train", "train a model on one image")
    p.add_argument("image", nargs="?", help="training image")
    p.add_argument(
        "--mode",
        default="generation",
        choices=["generation", "retarget", "harmonization", "editing"],
        help="what the model is for (default: generation); harmonize and edit need a model trained "
        "with --mode harmonization or editing",
    )
    p.add_argument("--out", help="model directory to create")
    p.add_argument(
        "--preset", choices=["paper", "fast", "tiny"], help="default: paper on a GPU, fast on a CPU"
    )
    p.add_argument("--stages", type=int, help="number of pyramid stages (default: the preset's)")
    p.add_argument("--iters", type=int, help="iterations per stage (default: the preset's)")
    p.add_argument("--max-size", type=int, help="long side of the final stage in px")
    p.add_argument("--seed", type=seed_value, help="training seed, 0 to 2^32-1 (default 0)")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 where the hardware has it")
    p.add_argument("--resume", metavar="MODEL_DIR", help="continue an interrupted training run")
    p.set_defaults(run=cmd_train)

    p = command("finetune", "fine-tune a harmonization/editing model on a naive composite (new model)")
    p.add_argument("model_dir", nargs="?", help="the model to fine-tune (it is left unchanged)")
    p.add_argument("--naive", help="the composite to fine-tune on")
    p.add_argument("--out", help="new model directory")
    p.add_argument("--iters", type=iters_value, default=500, help="iterations per stage (default: 500)")
    p.add_argument("--resume", metavar="NEW_MODEL_DIR", help="continue an interrupted fine-tuning run")
    p.set_defaults(run=cmd_finetune)

    p = command("sample", "write random samples, at any size")
    p.add_argument("model_dir")
    p.add_argument("--out", required=True, help="directory for sample_NNN.png (created if missing)")
    p.add_argument("--n", type=count_value, default=1, help="number of samples (default: 1)")
    p.add_argument(
        "--width",
        type=side_value,
        help="output width in px (default: the training image's; with only one of --width and "
        "--height the other keeps the training image's aspect ratio)",
    )
    p.add_argument("--height", type=side_value, help="output height in px (see --width)")
    p.add_argument("--seed", type=seed_value, default=0, help="noise seed, 0 to 2^32-1 (default: 0)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"])
    p.set_defaults(run=cmd_sample)

    for name, what in (("harmonize", "harmonize"), ("edit", "edit")):
        p = command(name, f"{what} the masked region of an image with a trained model")
        p.add_argument("model_dir")
        p.add_argument("--image", required=True)
        p.add_argument("--mask", required=True, help="white = the region to change; same size as the image")
        p.add_argument(
            "--out",
            required=True,
            help="output image file, format from its extension (.png, .tif and .webp keep alpha); "
            "missing folders are created",
        )
        p.add_argument("--seed", type=seed_value, default=0, help="noise seed, 0 to 2^32-1 (default: 0)")
        p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"])
        add_color_match(p)
        p.set_defaults(run=cmd_apply)

    p = command("export", "export a model's sampler as one ONNX graph (any output size)")
    p.add_argument("model_dir")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--fp16", action="store_true", help="fp16 weights and compute, fp32 inputs and output")
    p.set_defaults(run=cmd_export)

    p = command("demo", "quick start: train on the bundled painting and harmonize its composite")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--preset", default="fast", choices=["paper", "fast", "tiny"])
    p.set_defaults(run=cmd_demo)

    from engine import batch
    from engine.serve import commands as serve_commands

    serve_commands.register(sub)  # serve, status, cancel, stop
    batch.register(sub)

    from engine.plugin_install import add_parser as add_plugin_parser

    add_plugin_parser(sub)  # plugin install|uninstall
    return parser


def main(argv: list[str] | None = None) -> int:
    _Parser.json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        try:
            result = args.run(args)
        except (RuntimeError, MemoryError) as e:  # torch's OutOfMemoryError is a RuntimeError
            if (memory := out_of_memory(e)) is None:
                raise
            raise memory from e
        except OSError as e:  # a full disk met outside engine.files' writers (a folder being made, say)
            from engine.files import disk_full_error, is_disk_full

            if not is_disk_full(e):
                raise
            raise disk_full_error(e.filename or Path.cwd()) from e
    except EngineError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e), **(e.details or {})}))
        else:
            _print_result(e.details or {})
        print(f"engine {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"engine {args.command}: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"ok": True, **result}))
    else:
        _print_result(result)
    return 0


def _print_result(result: dict) -> None:
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
