"""`engine batch`: apply a harmonization or editing model to every image of a folder, in-process or through
the running daemon. Resumable (outputs already there are skipped), never writes over its inputs, and a file
that fails is reported at the end without stopping the rest.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from engine.errors import BadInputError, DiskFullError, EngineError
from engine.imageio import Picture

ApplyFn = Callable[[Picture, np.ndarray], Picture]


class BatchFailures(EngineError):
    exit_code = 1


@dataclass(frozen=True)
class Item:
    source: Path
    mask: Path | None
    output: Path


@dataclass
class BatchReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped before the end (a full disk)
    workers: dict[str, int] | None = None  # with --cluster: the model replicas and what each had


def _find_mask(masks: Path, stem: str) -> Path | None:
    from engine.imageio import image_files

    for candidate in image_files(masks):
        if candidate.stem in (stem, f"{stem}_mask"):
            return candidate
    return None


def plan(input_dir: Path, output_dir: Path, masks_dir: Path | None) -> list[Item]:
    """One item per image of input_dir (not recursive); refuses an output folder that holds the inputs."""
    if not input_dir.is_dir():
        raise BadInputError(f"--input {input_dir} is not a folder")
    if masks_dir is not None and not masks_dir.is_dir():
        raise BadInputError(f"--masks {masks_dir} is not a folder")
    out = output_dir.resolve()
    for name, folder in (("--input", input_dir), ("--masks", masks_dir)):
        if folder is not None and folder.resolve() == out:
            raise BadInputError(
                f"--output is the same folder as {name}; batch never writes over its inputs: "
                "choose another --output"
            )
    items = []
    from engine.imageio import image_files

    for source in image_files(input_dir):
        mask = _find_mask(masks_dir, source.stem) if masks_dir is not None else None
        items.append(Item(source, mask, output_dir / source.name))
    return items


def process(item: Item, apply_fn: ApplyFn, masks_given: bool) -> None:
    """Read one item, apply, write its output atomically; raises what went wrong."""
    from engine.imageio import mask_from_array, read_image, read_mask, write_image

    picture = read_image(item.source)
    if item.mask is not None:
        mask = read_mask(item.mask, picture.shape)
    elif masks_given:
        raise BadInputError(
            f"no mask for it (expected {item.source.stem}.EXT or {item.source.stem}_mask.EXT, "
            "EXT any image format, in --masks)"
        )
    else:
        mask = mask_from_array(np.ones(picture.shape, np.float32))  # re-style the whole image
    write_image(item.output, apply_fn(picture, mask))


def failure_message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"


def run(
    items: list[Item],
    apply_fn: ApplyFn,
    masks_given: bool,
    progress: Callable[[int, int, str], None] | None = None,
) -> BatchReport:
    """Apply to each item whose output does not exist yet; every failure is collected, none stops the run."""
    report = BatchReport()
    for i, item in enumerate(items):
        if progress is not None:
            progress(i, len(items), item.source.name)
        if item.output.exists():
            report.skipped.append(item.source.name)
            continue
        try:
            process(item, apply_fn, masks_given)
        except DiskFullError as exc:  # every file after it would fail the same way
            report.stopped = str(exc)
            break
        except Exception as exc:  # one bad file must not stop the others; each is reported at the end
            report.failed.append((item.source.name, failure_message(exc)))
        else:
            report.done.append(item.source.name)
    if progress is not None:
        progress(len(items), len(items), "")
    return report


def in_process(model_dir: Path, backend_name: str | None, device: str | None, given: dict) -> ApplyFn:
    """An ApplyFn running the whole-image operation of the model's family (harmonize for a ConSinGAN
    harmonization model, ...) in this process; `given`: the parameters set on the command line."""
    from engine import families, operations
    from engine.device import configure_threads, select_device
    from engine.operations import OperationInput

    configure_threads()
    loaded = families.load(model_dir, select_device(device), backend=None)
    op = operations.whole_image(loaded)
    loaded.family.prepare(loaded, loaded.family.backend(backend_name))
    params = op.check_params(given)
    return lambda picture, mask: op.run(loaded, OperationInput(picture, mask, params)).pictures[0]


def whole_image_params() -> list:
    """The options of `engine batch`: the parameters of every family's whole-image operation."""
    from engine import operations

    specs = [op for ops in operations.table().values() for op in ops if op.whole_image]
    return operations.cli_params(specs)


def via_daemon(model: str, home: Path | None, given: dict[str, Any]) -> tuple[ApplyFn, Callable[[], None]]:
    """An ApplyFn that sends each image to the running daemon (the whole-image operation of the model's
    family, with the parameters `given`), and a function that closes the connection."""
    from editor_bridge import frames
    from editor_bridge.connection import default_home
    from editor_bridge.protocol import ApplyRequest
    from engine import operations
    from engine.imageio import to_array
    from engine.serve.commands import connect
    from engine.serve.imaging import picture_from_frame

    client = connect(home, timeout=120.0)  # first: with no engine running, that is what to hear about
    model_id = model
    path = Path(model)
    try:
        if path.is_dir():
            if path.resolve().parent != (default_home(home) / "models").resolve():
                raise BadInputError(
                    f"{model} is not one of the engine's stored models; with --via-daemon give a model id "
                    "from `engine status` (or run without --via-daemon)"
                )
            model_id = path.name
        info = client.inspect_model(model_id)
        specs = [
            op
            for ops in operations.table().values()
            for op in ops
            if op.whole_image and op.family == info.family and info.task in op.tasks
        ]
        if not specs:
            raise BadInputError(
                f"model {model_id} is a {info.family} model for {info.task}; batch needs a model that "
                "re-styles whole images (harmonization or editing)"
            )
        op = specs[0]
        params = {k: v for k, v in op.check_params(given).items() if k in given and given[k] is not None}
    except Exception:
        client.close()
        raise

    def apply_fn(picture: Picture, mask: np.ndarray) -> Picture:
        order = "RGBA" if picture.alpha is not None else "RGB"
        buffers: list = []
        image = frames.attach(buffers, to_array(picture, order), order)
        mask_desc = frames.attach(buffers, (mask > 0).astype(np.uint8)[:, :, None] * 255, "GRAY")
        request = ApplyRequest(
            operation=op.name, image=image, mask=mask_desc, model_id=model_id, params=params
        )
        reply = client.run_job(request, buffers)
        desc = reply.content.images[0]
        return picture_from_frame(reply.image(desc), desc)

    return apply_fn, client.close


class Bar:
    """One line on a terminal: `label [####    ] i/n name` (nothing where stderr is not a terminal)."""

    def __init__(self, label: str = "batch", stream: TextIO | None = None) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()

    def __call__(self, i: int, n: int, name: str) -> None:
        if not self.enabled:
            return
        from engine.progress import bar_text

        line = f"\r{self.label} {bar_text(i / max(n, 1))} {i}/{n} {name}"
        self.stream.write(line[:100].ljust(100) + ("\n" if i == n else ""))
        self.stream.flush()


def cmd_batch(args: argparse.Namespace) -> dict:
    close: Callable[[], None] = lambda: None  # noqa: E731
    given = {p.name: getattr(args, p.name) for p in whole_image_params()}
    bar = None if args.json else Bar()
    if args.cluster is not None:
        if args.via_daemon:
            raise BadInputError("--cluster and --via-daemon are two places to run the batch: give one")
        from engine.cluster import batch as on_cluster

        todo = on_cluster.plan(args.input, args.output, args.masks)
        n_items = len(todo.names)
        report = on_cluster.run(
            args.cluster,
            Path(args.model),
            todo,
            args.masks is not None,
            args.backend,
            args.device,
            given,
            args.workers,
            bar,
        )
    else:
        from engine.cluster.storage import is_url

        if any(is_url(f) for f in (args.input, args.output, args.masks)):
            raise BadInputError("folders given as URLs are for --cluster; here give local folders")
        if args.workers is not None:
            raise BadInputError("--workers is for --cluster (a local batch runs one model on every core)")
        items = plan(Path(args.input), Path(args.output), Path(args.masks) if args.masks else None)
        n_items = len(items)
        if args.via_daemon:
            apply_fn, close = via_daemon(args.model, args.home, given)
        else:
            apply_fn = in_process(Path(args.model), args.backend, args.device, given)
        try:
            report = run(items, apply_fn, args.masks is not None, bar)
        finally:
            close()
    summary = {
        "output": str(args.output),
        "done": len(report.done),
        "skipped": len(report.skipped),
        "failed": len(report.failed),
        **({"workers": report.workers} if report.workers else {}),
    }
    if report.stopped is not None:
        stopped = BatchFailures(
            f"stopped after {len(report.done)} of {n_items} files: {report.stopped} (files already "
            "written are skipped when the same command runs again)"
        )
        stopped.details = {**summary, "failures": dict(report.failed)}
        raise stopped
    if report.failed:
        lines = "; ".join(f"{name}: {error}" for name, error in report.failed)
        failure = BatchFailures(
            f"{len(report.failed)} of {n_items} files failed ({len(report.done)} done, "
            f"{len(report.skipped)} already there): {lines}"
        )
        failure.details = {**summary, "failures": dict(report.failed)}
        raise failure
    return summary


def register(sub: argparse._SubParsersAction) -> None:
    from engine.cli import add_param
    from engine.serve.commands import add_home

    help_text = "re-style or harmonize every image of a folder (with the whole-image operation of the model)"
    p = sub.add_parser("batch", help=help_text, description=help_text)
    p.add_argument("model", metavar="MODEL_DIR", help="model directory (or, with --via-daemon, a model id)")
    p.add_argument("--input", required=True, help="folder of images (with --cluster also a URL: s3://...)")
    p.add_argument("--output", required=True, help="folder for the results (same file names)")
    p.add_argument(
        "--masks",
        help="folder of masks named NAME.EXT or NAME_mask.EXT for each image NAME (EXT: any image format; "
        "white = the region to change); default: the whole image",
    )
    p.add_argument(
        "--backend",
        choices=["onnxruntime", "torch"],
        help="default: the model family's (onnxruntime where built)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    for param in whole_image_params():
        add_param(p, param)
    p.add_argument("--via-daemon", action="store_true", help="send the work to the running `engine serve`")
    p.add_argument(
        "--cluster",
        metavar="auto|ADDRESS",
        help="run on a Ray cluster (auto: RAY_ADDRESS or the one `ray start` made here; else host:port of "
        "its head); the model on a path every node sees, the folders too or as URLs (s3://, gs://, ...)",
    )
    p.add_argument(
        "--workers", type=int, help="with --cluster: model replicas (default: one per GPU, else one per node)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
    add_home(p)
    p.set_defaults(run=cmd_batch)
