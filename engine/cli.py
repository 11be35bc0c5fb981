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
from engine.errors import EngineError, out_of_memory
from engine.families.consingan.config import MAX_ITERS

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
    from engine import families

    bar = _progress(args, "train")
    cancel = _cancel_on_signals()
    try:
        if args.resume:
            families.check_resume(Path(args.resume))
            out = families.resume(Path(args.resume), _device(args), bar, cancel)
        else:
            family, run = _train_run(args, bar, cancel)
            out = family.train(run)
    finally:
        _finish_bar(bar)
    return _model_summary(out)


def _train_run(args: argparse.Namespace, bar, cancel):
    """The family and the TrainRun that `engine train` asks for, every input checked before the device is
    chosen (which loads torch: about 2 s before a mistyped folder is said)."""
    from engine import families
    from engine.family import DataKind, TrainData, TrainRun, image_folder
    from engine.imageio import read_image, visible_rgb

    family = families.get(args.family)
    task = family.task_named(args.mode, "--mode")
    given = {name: getattr(args, name) for name in _option_names() if getattr(args, name) is not None}
    options = family.checked_options(given, lambda name: "--" + name.replace("_", "-"))
    if args.out is None:
        raise EngineError("train needs --out MODEL_DIR (or --resume MODEL_DIR)")
    given_data = {
        flag: value
        for flag, value in (("IMAGE", args.image), *((f, getattr(args, d, None)) for f, d in _DATA_FLAGS))
        if value is not None
    }
    needed = {DataKind.IMAGE: ("IMAGE",), DataKind.IMAGES: ("--images",)}.get(
        task.data, ("--domain-a", "--domain-b")
    )
    what = f"{family.label} --mode {task.name} learns from {_DATA_WORDS[task.data.value]}"
    missing = [flag for flag in needed if flag not in given_data]
    wanted = " and ".join(flag if flag == "IMAGE" else f"{flag} DIR" for flag in missing)
    if extra := sorted(set(given_data) - set(needed)):
        raise EngineError(f"{what}: {extra[0]} is not for it" + (f"; give {wanted}" if missing else ""))
    if missing:
        raise EngineError(f"{what}: give {wanted}")
    if task.data is DataKind.IMAGE:
        data = TrainData(image=visible_rgb(read_image(args.image)))
    else:
        data = TrainData(folders=tuple(image_folder(Path(given_data[flag]), flag) for flag in needed))
    run = TrainRun(task.name, data, options, Path(args.out), _device(args), bar, cancel)
    return family, run


_DATA_FLAGS = (("--images", "images"), ("--domain-a", "domain_a"), ("--domain-b", "domain_b"))
_DATA_WORDS = {
    "image": "one image",
    "images": "a folder of images",
    "folders": "two folders of images (domain A and domain B)",
}


def _option_names() -> list[str]:
    """Every family's training options (one flag each, shared by families that have the same option)."""
    from engine import families

    names: dict[str, None] = {}
    for family in families.all_families():
        names.update(dict.fromkeys(family.options.model_fields))
    return list(names)


def _model_summary(path: Path) -> dict:
    from engine import families
    from engine.model_dir import read_meta

    meta = read_meta(path)
    family = families.family_of(meta, path)
    described = family.describe(meta)
    summary = {
        "model": str(path),
        "family": family.name,
        "mode": described.pop("task"),
        **described,
        "training_seconds": meta.get("info", {}).get("training_seconds"),
    }
    if (path / "preview.png").is_file():
        summary["preview"] = str(path / "preview.png")
    return summary


def cmd_finetune(args: argparse.Namespace) -> dict:
    from engine import families
    from engine.imageio import read_image

    if args.resume:
        families.check_resume(Path(args.resume), "finetune")
        if (family := families.checkpoint_family(Path(args.resume))) != families.DEFAULT:
            raise EngineError(
                f"{args.resume} is a {family} training run, not a fine-tuning: continue it with "
                f"`engine train --resume {args.resume}`"
            )
        naive = None
    elif args.model_dir is None or args.naive is None or args.out is None:
        raise EngineError("finetune needs MODEL_DIR, --naive IMAGE and --out NEW_MODEL_DIR (or --resume DIR)")
    else:
        naive = read_image(args.naive).rgb
    device = _device(args)  # loads torch: after the arguments are checked
    from engine.families.consingan import training

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


iters_value = _int_in("iterations", 1, MAX_ITERS)


def cmd_operation(args: argparse.Namespace) -> dict:
    """Any operation of the table (harmonize, edit, sample, ...), on the model's own family."""
    from engine import families, operations
    from engine.imageio import check_output_file, read_image, read_mask
    from engine.operations import OperationInput, Returns

    specs = operations.table()[args.operation]
    takes_image = any(op.takes_image for op in specs)
    out = Path(args.out)
    suffixes = {op.out_suffix for op in specs if op.returns is Returns.FILE}
    if suffixes:
        if out.suffix.lower() not in suffixes:
            names = " or ".join(("an " if s[1:2] in "aeiou" else "a ") + s for s in sorted(suffixes))
            raise EngineError(f"--out {out} must be {names} file name")
    elif takes_image:
        check_output_file(out, inputs=(args.image, *([args.mask] if args.mask else [])))
    elif animation := _animation_out(specs, out):
        if out.is_dir():
            raise EngineError(
                f"--out {out} is a folder: give a file name ending {animation}, or a new folder"
            )
    elif all(op.returns is Returns.FRAMES for op in specs) and out.suffix and not out.is_dir():
        raise EngineError(
            f"--out {out}: {args.operation} writes an animated .gif, .webp or .mp4, or its frames into a "
            "folder (a name without an extension)"
        )
    elif out.exists() and not out.is_dir():
        raise EngineError(
            f"--out {out} is a file; {args.operation} writes {args.operation}_NNN.png files into a folder"
        )
    given = {p.name: getattr(args, p.name) for p in operations.cli_params(specs)}
    first = specs[0]  # the bar's length until the model's family is known
    guess = {p.name: p.default if given.get(p.name) is None else given[p.name] for p in first.params}
    with _steps(args, args.operation, first.total_steps(guess, takes_image)) as bar:
        picture = mask = None
        if takes_image:
            bar.step("reading the image and the mask" if args.mask else "reading the image")
            picture = read_image(args.image)
            mask = read_mask(args.mask, picture.shape) if args.mask else None
        bar.step("loading the model")
        loaded = families.load(args.model_dir, _device(args), backend=None)
        op = operations.for_model(loaded, args.operation)
        params = op.check_params(given)
        if op.takes_mask and mask is None:
            raise EngineError(f"{op.name} needs --mask MASK (white = the region to change)")
        bar.total = op.total_steps(params, takes_image)
        if op.needs_runner:
            backend = loaded.family.backend(args.backend)
            bar.step(f"preparing {backend}")
            loaded.family.prepare(loaded, backend)
        start = time.perf_counter()
        output = op.run(loaded, OperationInput(picture, mask, params, on_step=bar.step, out=out))
        seconds = round(time.perf_counter() - start, 3)
        if op.returns is Returns.FILE:
            return {**output.info, "seconds": seconds}
        bar.step("writing")
        result = _write_outputs(op, output, out, seconds, loaded.runner_info)
        if getattr(args, "sheet", None):
            from engine.image_sets import write_sheet

            result["sheet"] = str(write_sheet(args.sheet, output.pictures))
        return result


def _animation_out(specs, out: Path) -> str:
    """The animation suffix `out` has when every spec of the command returns frames ("" otherwise)."""
    from engine.image_sets import ANIMATION_SUFFIXES
    from engine.operations import Returns

    frames = all(op.returns is Returns.FRAMES for op in specs)
    return out.suffix.lower() if frames and out.suffix.lower() in ANIMATION_SUFFIXES else ""


def _write_outputs(op, output, out: Path, seconds: float, runner_info: dict) -> dict:
    from engine.imageio import write_image
    from engine.operations import Returns

    pictures = output.pictures
    h, w = pictures[0].shape
    if op.returns is Returns.LAYER:
        path = write_image(out, pictures[0])
        return {"file": str(path), "width": w, "height": h, "seconds": seconds, **output.info, **runner_info}
    if _animation_out([op], out):
        from engine.image_sets import write_animation

        path = write_animation(out, pictures, float(output.info.get("fps", 12.0)))
        return {
            "file": str(path),
            "frames": len(pictures),
            "width": w,
            "height": h,
            **output.info,
            **runner_info,
        }
    files = [str(write_image(out / f"{op.name}_{i:03d}.png", p)) for i, p in enumerate(pictures)]
    return {"files": files, "width": w, "height": h, **output.info, **runner_info}


# Operations whose command line is written here, not made from their spec: their usage.
OWN_COMMANDS = {
    "upscale": "engine upscale IMAGE --factor F --out FILE [--strength S] [--model MODEL_DIR] [--preset P] "
    "[--seed S]",
}


def cmd_upscale(args: argparse.Namespace) -> dict:
    """Train (or find) a super-resolution model of the image, then upscale it (SinGAN, issue 23)."""
    from engine import families, operations
    from engine.imageio import check_output_file, read_image, visible_rgb, write_image
    from engine.model_dir import MODEL_JSON
    from engine.operations import OperationInput

    check_output_file(Path(args.out), inputs=(args.image,))
    picture = read_image(args.image)
    if args.factor == 1:  # nothing to learn
        path = write_image(args.out, picture)
        h, w = picture.shape
        return {
            "file": str(path),
            "width": w,
            "height": h,
            "passes": 0,
            "model": None,
            "training_seconds": None,
        }
    family = families.get("singan")
    op = next(o for o in family.operations if o.name == "upscale")
    params = op.check_params({"factor": args.factor, "strength": args.strength, "seed": args.seed})
    if op.model_free(params) and args.model is None:  # bicubic steps: no model to train or load
        return _upscale_without_model(args, picture, op, params)
    device = _device(args)
    options = family.checked_options({"preset": args.preset})
    cached = args.model is None
    rgb = visible_rgb(picture)  # (a transparent part's stored colours filled: engine.imageio)
    model_dir = Path(args.model) if args.model else _upscale_cache(rgb, family, options, device)
    trained = None
    if not (model_dir / MODEL_JSON).is_file():
        trained = _train_upscaler(args, model_dir, cached, rgb, family, options, device)
    loaded = families.load(model_dir, device, backend=None)
    op = operations.for_model(loaded, "upscale")
    with _steps(args, "upscale", op.total_steps(params, False)) as bar:
        bar.step("loading the model")
        backend = loaded.family.backend(args.backend)
        bar.step(f"preparing {backend}")
        loaded.family.prepare(loaded, backend)
        start = time.perf_counter()
        output = op.run(loaded, OperationInput(picture, None, params, on_step=bar.step))
        seconds = round(time.perf_counter() - start, 3)
        bar.step("writing")
        result = _write_outputs(op, output, Path(args.out), seconds, loaded.runner_info)
    return {**result, "model": str(model_dir), "training_seconds": trained}


def _upscale_without_model(args: argparse.Namespace, picture, op, params: dict) -> dict:
    """`engine upscale --strength 0`: SinGAN's bicubic steps alone, which no model changes."""
    from engine.operations import OperationInput

    assert op.run_without_model is not None
    with _steps(args, "upscale", op.steps(params) + 1) as bar:
        start = time.perf_counter()
        output = op.run_without_model(OperationInput(picture, None, params, on_step=bar.step))
        seconds = round(time.perf_counter() - start, 3)
        bar.step("writing")
        result = _write_outputs(op, output, Path(args.out), seconds, {})
    return {**result, "model": None, "training_seconds": None}


def _train_upscaler(args, model_dir: Path, cached: bool, rgb, family, options, device) -> float:
    """Train the image's super-resolution model into `model_dir`, or finish the run interrupted there; the
    seconds it took. Ctrl-C stops it (a later `engine upscale` goes on); a failed run in the cache is
    removed, so that the next one starts afresh."""
    import json
    import shutil

    from engine import families
    from engine.errors import CancelledError
    from engine.family import TrainData, TrainRun
    from engine.model_dir import CHECKPOINT_DIR

    resuming = families.resumable(model_dir)
    if resuming:
        mark = model_dir / CHECKPOINT_DIR / families.CHECKPOINT_FAMILY
        if not mark.is_file() or json.loads(mark.read_text()).get("family") != "singan":
            raise EngineError(f"--model {model_dir} holds another kind of training run: give another folder")
    elif model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
        raise EngineError(f"--model {model_dir} is neither a model nor empty: give a new or empty folder")
    bar = _progress(args, "train")
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cancel = _cancel_on_signals()
    start = time.perf_counter()
    try:
        if resuming:
            families.resume(model_dir, device, bar, cancel)
        else:
            family.train(
                TrainRun("super_resolution", TrainData(image=rgb), options, model_dir, device, bar, cancel)
            )
    except CancelledError:
        raise CancelledError("training cancelled; run the same `engine upscale` again to go on") from None
    except BaseException:
        if cached and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
            shutil.rmtree(model_dir, ignore_errors=True)
        raise
    finally:
        _finish_bar(bar)
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    return round(time.perf_counter() - start, 1)


def _upscale_cache(rgb, family, options, device) -> Path:
    """The cache folder of an image's super-resolution model: named by its pixels and the settings."""
    from engine.files import user_cache
    from engine.serve.registry import training_key

    settings = family.resolved("super_resolution", options, device).settings
    return user_cache("upscale") / training_key(rgb, settings)[:32]


def cmd_preview(args: argparse.Namespace) -> dict:
    """Harmonize a selection without a model (engine.preview): seconds, not minutes."""
    from engine.imageio import check_output_file, read_image, read_mask, write_image
    from engine.preview import harmonize_preview

    inputs = (args.image, args.mask, *([args.background] if args.background else []))
    check_output_file(args.out, inputs=inputs)
    picture = read_image(args.image)
    mask = read_mask(args.mask, picture.shape)
    background = None
    if args.background:
        background = read_image(args.background)
        if background.shape != picture.shape:
            raise EngineError(
                f"--background {args.background} is {background.shape[1]}x{background.shape[0]} px but the "
                f"image is {picture.shape[1]}x{picture.shape[0]} px: give the painting at the image's size"
            )
    start = time.perf_counter()
    result = harmonize_preview(picture, mask, background)
    seconds = round(time.perf_counter() - start, 3)
    path = write_image(args.out, result)
    h, w = result.shape
    return {"file": str(path), "width": w, "height": h, "seconds": seconds}


def cmd_capabilities(args: argparse.Namespace) -> dict:
    from engine import families

    caps = families.capabilities()
    if args.json:
        return caps
    for family in caps["families"]:
        print(f"family {family['name']} ({family['label']}), presets {', '.join(family['presets'])}")
        for task in family["tasks"]:
            print(f"  --mode {task['name']}: {task['label']} (trains on {task['data']})")
    for op in caps["operations"]:
        if op["name"] in OWN_COMMANDS:
            print(f"{OWN_COMMANDS[op['name']]}\n  {op['label']}: trains a {op['family']} model of the image")
            continue
        usage = f"engine {op['name']} MODEL_DIR" + " --image IN" * op["takes_image"]
        usage += " --mask MASK" * op["takes_mask"]
        usage += " --out FILE" if op["returns"] in ("layer", "file") else " --out DIR"
        usage += "".join(f" [--{p['name'].replace('_', '-')}]" for p in op["params"])
        print(f"{usage}\n  {op['label']}: a {op['family']} model for {' or '.join(op['tasks'])}")
    return {}


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
    result = cmd_operation(build_parser().parse_args(harmonize_args))
    print(f"harmonized image written to {result['file']}", file=sys.stderr)
    return {**result, "model": str(model_dir)}


def add_param(p: argparse.ArgumentParser, param) -> None:
    """An operation's parameter as an option, checked by argparse (a one-line usage error)."""
    from engine.operations import ParamType

    kwargs: dict = {"default": None, "help": param.help, "dest": param.name}
    if param.type is ParamType.INT:
        low = -(2**63) if param.minimum is None else int(param.minimum)
        high = 2**63 if param.maximum is None else int(param.maximum)
        kwargs["type"] = _int_in(param.name, low, high)
    elif param.type is ParamType.FLOAT:
        kwargs["type"] = _float_in(param.name, param.minimum, param.maximum)
        kwargs["metavar"] = f"{param.minimum:g}-{param.maximum:g}" if param.maximum is not None else None
    elif param.type is ParamType.BOOL:
        kwargs["action"] = "store_const"
        kwargs["const"] = True
    else:
        kwargs["choices"] = list(param.choices)
    p.add_argument(param.flag, **{k: v for k, v in kwargs.items() if v is not None or k == "default"})


def _add_option_flags(p: argparse.ArgumentParser, all_families) -> None:
    """Each family's training options (its pydantic model's fields) as --flags; argparse checks the
    types, the family's model the ranges."""
    import typing

    for name in _option_names():
        owners = [f for f in all_families if name in f.options.model_fields]
        field = owners[0].options.model_fields[name]
        kinds = typing.get_args(field.annotation) or (field.annotation,)
        kind = next(a for a in kinds if a is not type(None))
        kwargs: dict = {"default": None, "dest": name}
        if typing.get_origin(kind) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(kind))
        elif kind is bool:
            kwargs.update(action="store_const", const=True)
        elif kind in (int, float):
            kwargs["type"] = {int: _whole_number, float: float}[kind]
        # One help text per meaning: families that describe the option alike share it.
        meanings: dict[str, list[str]] = {}
        for owner in owners:
            meanings.setdefault(owner.options.model_fields[name].description or "", []).append(owner.label)
        if len(meanings) == 1 and len(owners) == len(all_families):
            kwargs["help"] = next(iter(meanings))
        else:
            kwargs["help"] = "; ".join(f"{text} ({', '.join(labels)})" for text, labels in meanings.items())
        p.add_argument("--" + name.replace("_", "-"), **kwargs)


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number (got {text})") from None


def _float_in(name: str, low: float | None, high: float | None):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number (got {text})") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g} (got {text})")
        return value

    parse.__name__ = name
    return parse


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

    from engine import families, operations
    from engine.family import DataKind
    from engine.operations import Returns

    p = command("train", "train a model (see `engine capabilities` for the families and their tasks)")
    p.add_argument("image", nargs="?", help="training image (for the families that learn from one image)")
    p.add_argument(
        "--family",
        default=families.DEFAULT,
        choices=[f.name for f in families.all_families()],
        help=f"the kind of model (default: {families.DEFAULT})",
    )
    tasks = dict.fromkeys(t.name for f in families.all_families() for t in f.tasks)
    p.add_argument(
        "--mode",
        default=None,
        choices=list(tasks),
        help="the task: what the model is for (default: the family's first, for ConSinGAN generation); "
        "harmonize and edit need a model trained with --mode harmonization or editing",
    )
    p.add_argument("--out", help="model directory to create")
    kinds = {t.data for f in families.all_families() for t in f.tasks}
    if DataKind.IMAGES in kinds:
        p.add_argument("--images", metavar="DIR", help="the folder of images a set-trained family learns")
    if DataKind.FOLDERS in kinds:
        p.add_argument("--domain-a", metavar="DIR", help="domain A's images (two-folder families)")
        p.add_argument("--domain-b", metavar="DIR", help="domain B's images")
    _add_option_flags(p, families.all_families())
    p.add_argument("--resume", metavar="MODEL_DIR", help="continue an interrupted training run")
    p.set_defaults(run=cmd_train)

    p = command("finetune", "fine-tune a harmonization/editing model on a naive composite (new model)")
    p.add_argument("model_dir", nargs="?", help="the model to fine-tune (it is left unchanged)")
    p.add_argument("--naive", help="the composite to fine-tune on")
    p.add_argument("--out", help="new model directory")
    p.add_argument("--iters", type=iters_value, default=500, help="iterations per stage (default: 500)")
    p.add_argument("--resume", metavar="NEW_MODEL_DIR", help="continue an interrupted fine-tuning run")
    p.set_defaults(run=cmd_finetune)

    for name, specs in operations.table().items():
        if name in OWN_COMMANDS:
            continue
        p = command(name, specs[0].help)
        p.add_argument("model_dir")
        suffixes = sorted({op.out_suffix for op in specs if op.returns is Returns.FILE})
        if any(op.takes_image for op in specs):
            p.add_argument("--image", required=True)
            out_help = (
                "output image file, format from its extension (.png, .tif and .webp keep alpha); missing "
                "folders are created"
            )
        elif suffixes:
            out_help = f"the {' or '.join(suffixes)} file to write"
        elif all(op.returns is Returns.FRAMES for op in specs):
            out_help = (
                f"directory for {name}_NNN.png frames (created if missing), or an animated .gif, .webp or "
                ".mp4"
            )
        else:
            out_help = f"directory for {name}_NNN.png (created if missing)"
        if any(op.returns is Returns.NEW_LAYER for op in specs):
            p.add_argument("--sheet", metavar="FILE", help="also write all the images as one grid (a sheet)")
        if any(op.takes_mask for op in specs):
            needed = all(op.takes_mask for op in specs)
            mask_help = "white = the region to change; same size as the image"
            p.add_argument("--mask", required=needed, help=mask_help)
        p.add_argument("--out", required=True, help=out_help)
        for param in operations.cli_params(specs):
            add_param(p, param)
        if any(op.needs_runner for op in specs):
            p.add_argument(
                "--backend",
                choices=["onnxruntime", "torch"],
                help="default: the family's (onnxruntime where built)",
            )
        p.set_defaults(run=cmd_operation, operation=name, mask=None, image=None, backend=None)

    p = command(
        "upscale",
        "make an image larger with SinGAN's super-resolution: trains a model on the image itself (kept and "
        "reused for the same image), then upscales",
    )
    p.add_argument("image", help="the image to upscale")
    p.add_argument("--factor", type=_float_in("factor", 1.0, 16.0), required=True, help="1 to 16")
    p.add_argument(
        "--strength",
        type=_float_in("strength", 0.0, 1.0),
        default=0.75,
        help="how much of the detail the model adds is kept, 0 (bicubic) to 1 (all, as SinGAN's paper; "
        "sharper, more invented) (default: 0.75)",
    )
    p.add_argument("--out", required=True, help="output image file, format from its extension")
    p.add_argument(
        "--model",
        metavar="MODEL_DIR",
        help="where the image's super-resolution model is kept: used when it holds one, trained into "
        "otherwise (default: a folder in the user's cache named by the image and the settings)",
    )
    p.add_argument(
        "--preset", choices=["paper", "fast", "tiny"], help="default: paper on a GPU, fast on a CPU"
    )
    p.add_argument("--seed", type=_int_in("seed", 0, 2**32 - 1), default=0, help="noise seed (default: 0)")
    p.add_argument("--backend", choices=["onnxruntime", "torch"], help="default: onnxruntime")
    p.set_defaults(run=cmd_upscale)

    p = command(
        "preview",
        "harmonize a pasted selection in seconds, without a model (a preview of what a trained "
        "harmonization model gives)",
    )
    p.add_argument("--image", required=True, help="the composite: the painting with the object pasted in")
    p.add_argument("--mask", required=True, help="white = the pasted object; same size as the image")
    p.add_argument(
        "--background",
        help="the painting without the paste (its patches give the texture; default: the image with the "
        "selection inpainted)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="output image file, format from its extension (.png, .tif and .webp keep alpha)",
    )
    p.set_defaults(run=cmd_preview)

    p = command("capabilities", "list the model families, their tasks and presets, and the operations")
    p.set_defaults(run=cmd_capabilities)

    p = command("demo", "quick start: train on the bundled painting and harmonize its composite")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--preset", default="fast", choices=["paper", "fast", "tiny"])
    p.set_defaults(run=cmd_demo)

    from engine import batch, train_many
    from engine.serve import commands as serve_commands

    serve_commands.register(sub)  # serve, status, cancel, stop
    batch.register(sub)
    train_many.register(sub)

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
        if isinstance(value, dict):  # one level of detail (batch's workers, failures): a line each
            print(f"{key}:")
            for name, detail in value.items():
                print(f"  {name}: {detail}")
            continue
        print(f"{key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
