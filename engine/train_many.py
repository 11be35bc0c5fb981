"""`engine train-many MANIFEST.csv --out DIR`: a catalogue of models, one per manifest row, trained here one
after another or (`--cluster`) as Ray tasks across a cluster (engine.cluster.train_many).

The manifest is a CSV file with a header. Columns (empty cells take the default):
  image     the training image (or, for a family that learns from a folder, the folder); relative paths
            are taken from the manifest's folder
  domain_a, domain_b   the two folders of a two-folder family (CycleGAN), instead of image
  family    default consingan
  mode      the task (default: the family's first)
  preset, seed, and any other training option of the family (iters, stages, max_size, precision, ...)
  name      the model's folder in DIR (default: the image's name and the task, and the seed when given)

DIR holds one model directory per name, each with the registry entry (`registry.json`) that the daemon's
model store keeps, so DIR can serve as an engine home's `models/` folder. A row whose image and settings
(the training key) match a model already in DIR reuses it instead of training again. A row trains in
DIR/.training-NAME/ (its checkpoints too) and enters DIR by one rename when finished; a run that stopped,
here or on a lost node, continues from its last checkpoint. `DIR/train-many.json` says, per row, what was
trained, reused or failed, and why.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import BadInputError, EngineError

if TYPE_CHECKING:
    from engine.serve.registry import Registry

SUMMARY_FILE = "train-many.json"
STAGING_PREFIX = ".training-"
DATA_COLUMNS = ("image", "images", "domain_a", "domain_b")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class TrainManyFailures(EngineError):
    exit_code = 1


@dataclass(frozen=True)
class Row:
    """One manifest row, checked: everything a worker needs to train it (plain data: it travels to Ray)."""

    number: int  # the CSV line, for messages
    name: str
    family: str
    task: str
    options: dict[str, Any]  # the family's training options as given (validated)
    data: dict[str, str]  # "image" or "images" or "domain_a"/"domain_b" -> absolute path
    key: str | None  # the training key (None for folders, which are never reused: their files can change)
    preset: str | None
    seed: int | None
    same_as: int | None = None  # the earlier row this one repeats (same name, image and settings)


@dataclass
class Outcome:
    row: int
    name: str
    status: str  # trained | reused | failed
    model: str | None = None
    error: str | None = None
    resumed: bool = False  # continued from a checkpoint left by an earlier attempt
    seconds: float | None = None
    node: str | None = None  # where it trained (with --cluster)


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: sum(o.status == s for o in self.outcomes) for s in ("trained", "reused", "failed")}


def read_manifest(path: Path, device: Any) -> tuple[list[Row], list[Outcome]]:
    """The rows that can be trained, and a failed outcome for each row that cannot (bad cell, missing
    image, unknown option): one bad row never stops the others."""
    if not path.is_file():
        raise BadInputError(
            f"no manifest at {path}: give a CSV file with a header (image,mode,preset,seed,...)"
        )
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            records = [(reader.line_num, record) for record in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"cannot read the manifest {path} ({exc}): give a UTF-8 CSV file") from None
    if not any(column in header for column in DATA_COLUMNS):
        raise BadInputError(
            f"the manifest {path} has no image column (its header: {','.join(header) or 'empty'}): the first "
            "line names the columns, e.g. image,mode,preset,seed"
        )
    rows: list[Row] = []
    failed: list[Outcome] = []
    by_name: dict[str, Row] = {}
    by_key: dict[str, Row] = {}
    for line, record in records:
        name = (record.get("name") or "").strip()
        try:
            row = _row(line, record, path.parent, device)
            if (first := by_name.get(row.name)) is not None and first.key != row.key:
                raise BadInputError(
                    f"name {row.name} is also row {first.number}'s: give each row its own name column"
                )
            if row.key is not None and (same := by_key.get(row.key)) is not None:
                # The same image and settings as an earlier row (under any name): that row's model.
                rows.append(dataclasses.replace(row, same_as=same.number))
                continue
            by_name[row.name] = row
            if row.key is not None:
                by_key[row.key] = row
            rows.append(row)
        except EngineError as exc:
            failed.append(Outcome(line, name or f"row {line}", "failed", error=f"row {line}: {exc}"))
    return rows, failed


def repeated(row: Row, outcomes: list[Outcome]) -> Outcome:
    """The outcome of a row that repeats an earlier row's image and settings (under any name): its model."""
    first = next(o for o in outcomes if o.row == row.same_as)
    if first.model is None:
        return Outcome(
            row.number, row.name, "failed", error=f"row {row.number}: as row {first.row}, which failed"
        )
    return Outcome(row.number, row.name, "reused", model=first.model)


def _row(line: int, record: dict[str | None, Any], folder: Path, device: Any) -> Row:
    from engine import families
    from engine.family import DataKind

    if None in record:  # more cells than the header has columns
        raise BadInputError("more cells than the header has columns")
    cells = {k.strip(): (v or "").strip() for k, v in record.items() if k is not None}
    family = families.get(cells.pop("family", "") or families.DEFAULT)
    task = family.task_named(cells.pop("mode", "") or None, "mode")
    given_name = cells.pop("name", "")
    data = {k: cells.pop(k) for k in DATA_COLUMNS if cells.get(k)}
    for k in DATA_COLUMNS:
        cells.pop(k, None)
    needed = {DataKind.IMAGE: ("image",), DataKind.IMAGES: ("image",)}.get(
        task.data, ("domain_a", "domain_b")
    )
    if task.data is DataKind.IMAGES and "images" in data:
        data["image"] = data.pop("images")
    missing = [k for k in needed if k not in data]
    if missing:
        raise BadInputError(f"{family.label} --mode {task.name} needs the column {missing[0]}")
    paths = {k: (folder / data[k]).resolve() for k in needed}
    for k, p in paths.items():
        if task.data is DataKind.IMAGE and not p.is_file():
            raise BadInputError(f"{k} {p} is not a file")
        if task.data is not DataKind.IMAGE and not p.is_dir():
            raise BadInputError(f"{k} {p} is not a folder")
    options = family.checked_options({k: v for k, v in cells.items() if v}, lambda n: f"column {n}")
    resolved = family.resolved(task.name, options, device)
    key = None
    if task.data is DataKind.IMAGE:
        from engine.imageio import read_image
        from engine.serve.registry import training_key

        key = training_key(read_image(paths["image"]).rgb, resolved.settings)
    seed = options.model_dump().get("seed")
    name = given_name or "-".join(
        [Path(data[needed[0]]).stem, task.name, *([f"seed{seed}"] if seed is not None else [])]
    )
    if not _NAME.match(name):
        raise BadInputError(
            f"name {name!r} cannot be a folder name: use letters, digits, '.', '_' and '-' (not first)"
        )
    return Row(
        line,
        name,
        family.name,
        task.name,
        options.model_dump(exclude_none=True),
        {k: str(p) for k, p in paths.items()},
        key,
        resolved.preset,
        resolved.seed,
    )


def reuse_or_check(row: Row, registry: Registry) -> Outcome | None:
    """A `reused` outcome when DIR (`registry`) already holds a model with this row's training key (its own
    folder first, else the newest with that key), a failed one when this name holds another model; None:
    it must be trained."""
    out_dir = registry.root
    own = registry.has(row.name) and row.name in (registry.find_all(row.key) if row.key else [])
    if own:  # this row's own model, from an earlier run
        return Outcome(row.number, row.name, "reused", model=str(out_dir / row.name))
    if row.key is not None and (found := registry.find(row.key)) is not None:
        return Outcome(row.number, row.name, "reused", model=str(out_dir / found))
    if registry.has(row.name):
        return Outcome(
            row.number,
            row.name,
            "failed",
            error=f"row {row.number}: {out_dir / row.name} holds a model trained from other data or "
            "settings: give this row another name, or remove that folder",
        )
    return None


def train_row(row: Row, out_dir: Path, device_name: str | None = None) -> Outcome:
    """Train one row into DIR/.training-NAME (continuing from its checkpoint when an earlier attempt left
    one) and move it in as DIR/NAME. Errors come back as a failed outcome, not raised."""
    from engine import families
    from engine.batch import failure_message
    from engine.device import configure_threads, select_device
    from engine.family import DataKind, TrainData, TrainRun
    from engine.imageio import read_image
    from engine.model_dir import read_meta
    from engine.serve.registry import Registry

    start = time.monotonic()
    staging = out_dir / f"{STAGING_PREFIX}{row.name}"
    resumed = False
    try:
        configure_threads()
        device = select_device(device_name)
        family = families.get(row.family)
        if families.resumable(staging):
            resumed = True
            families.resume(staging, device)
        elif not _finished(staging):
            if staging.exists():  # an attempt that died before its first checkpoint
                import shutil

                shutil.rmtree(staging)
            if family.task(row.task).data is DataKind.IMAGE:
                data = TrainData(image=read_image(row.data["image"]).rgb)
            else:
                data = TrainData(folders=tuple(Path(row.data[k]) for k in sorted(row.data)))
            options = family.checked_options(row.options)
            family.train(TrainRun(row.task, data, options, staging, device))
        read_meta(staging)
        Registry(out_dir).add(
            staging, model_id=row.name, name=row.name, preset=row.preset, training_key=row.key, seed=row.seed
        )
    except Exception as exc:  # reported in the summary; the other rows go on
        error = f"row {row.number}: {failure_message(exc)}"
        return Outcome(row.number, row.name, "failed", error=error, resumed=resumed)
    seconds = round(time.monotonic() - start, 1)
    return Outcome(row.number, row.name, "trained", str(out_dir / row.name), resumed=resumed, seconds=seconds)


def _finished(staging: Path) -> bool:
    """A run that finished but was not moved in yet (stopped between the two)."""
    from engine.model_dir import read_meta

    if not staging.is_dir():
        return False
    try:
        read_meta(staging)
    except EngineError:
        return False
    return True


def write_summary(out_dir: Path, summary: Summary) -> Path:
    from engine.files import atomic_write_bytes

    path = out_dir / SUMMARY_FILE
    body = {
        "counts": summary.counts(),
        "rows": [asdict(o) for o in sorted(summary.outcomes, key=lambda o: o.row)],
    }
    atomic_write_bytes(path, json.dumps(body, indent=2).encode())
    return path


def run_local(
    rows: list[Row], out_dir: Path, device: str | None, progress: Callable[[int, int, str], None] | None
) -> list[Outcome]:
    outcomes = []
    for i, row in enumerate(rows):
        if progress is not None:
            progress(i, len(rows), row.name)
        outcomes.append(train_row(row, out_dir, device))
    if progress is not None:
        progress(len(rows), len(rows), "")
    return outcomes


def cmd_train_many(args: argparse.Namespace) -> dict:
    from engine.batch import Bar
    from engine.device import select_device

    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"--out {out_dir} is a file: give a folder for the models")
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    rows: list[Row] = []

    def plan(device: Any) -> list[Row]:
        """The rows to train on `device` (the one their training key is for): the manifest's, less those
        that failed to read and those DIR already has a model for."""
        from engine.serve.registry import Registry

        read, failed = read_manifest(args.manifest, device)
        rows.extend(read)
        summary.outcomes.extend(failed)
        registry = Registry(out_dir)  # DIR read once, not once a row
        todo = []
        for row in (r for r in read if r.same_as is None):  # repeats get their first row's outcome below
            if (outcome := reuse_or_check(row, registry)) is not None:
                summary.outcomes.append(outcome)
            else:
                todo.append(row)
        return todo

    bar = None if args.json else Bar("train-many")
    if args.cluster is not None:
        from engine.cluster import train_many as on_cluster

        summary.outcomes += on_cluster.run(args.cluster, plan, out_dir, args.device, args.cpus_per_task, bar)
    else:
        if args.cpus_per_task is not None:
            raise BadInputError("--cpus-per-task is for --cluster (a local run trains on every core)")
        summary.outcomes += run_local(plan(select_device(args.device)), out_dir, args.device, bar)
    summary.outcomes += [repeated(row, summary.outcomes) for row in rows if row.same_as is not None]
    path = write_summary(out_dir, summary)
    counts = summary.counts()
    result = {"output": str(out_dir), "summary": str(path), **counts}
    if counts["failed"]:
        lines = "; ".join(o.error or o.name for o in sorted(summary.outcomes, key=lambda o: o.row) if o.error)
        failure = TrainManyFailures(
            f"{counts['failed']} of {len(summary.outcomes)} rows failed ({counts['trained']} trained, "
            f"{counts['reused']} reused; see {path}): {lines}"
        )
        failure.details = result
        raise failure
    return result


def register(sub: argparse._SubParsersAction) -> None:
    help_text = "train one model per row of a CSV manifest (a catalogue), here or on a Ray cluster"
    p = sub.add_parser("train-many", help=help_text, description=help_text)
    p.add_argument(
        "manifest", type=Path, metavar="MANIFEST.csv", help="columns: image,family,mode,preset,seed,name,..."
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the models (one folder per name)")
    p.add_argument(
        "--cluster",
        metavar="auto|ADDRESS",
        help="run each row as a Ray task (auto: RAY_ADDRESS or the cluster `ray start` made here); the "
        "manifest's images and --out on a path every node sees",
    )
    p.add_argument(
        "--cpus-per-task",
        type=int,
        help="with --cluster, on CPUs: cores per training (default: the smallest node's)",
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
    p.set_defaults(run=cmd_train_many)
