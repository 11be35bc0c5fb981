"""`engine batch --cluster`: the local batch's files, streamed through model replicas on a Ray cluster.

Ray Data carries one row per file (source, mask, output: paths every node sees, or URLs) to a fixed
pool of actors; each actor loads the model once, with onnxruntime's and torch's threads set to the CPUs Ray
gave it (Ray sets OMP_NUM_THREADS=1 in its workers, so left alone each replica would run on one thread, or,
told nothing, all of them on every core), and runs the very code of the local batch on each file
(`engine.batch.process`): the same outputs byte for byte, each written atomically. An actor lost with its
node is restarted and its rows are tried again; a file that fails is reported at the end; outputs already
there are skipped before anything is sent, so a stopped job resumes by running the same command again.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from engine import batch
from engine.cluster import ClusterError, connected, cpu_nodes, gpus_to_use, storage, use_assigned_cpus
from engine.errors import BadInputError, EngineError


class Restyler:
    """One model replica (a Ray Data actor): the local batch's apply function, built once per actor."""

    def __init__(self, model_dir: str, backend: str | None, device: str, given: dict, masks_given: bool):
        use_assigned_cpus()
        self.apply_fn = batch.in_process(Path(model_dir), backend, device, given)
        self.masks_given = masks_given

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names, errors = [], []
        for source, mask, output in zip(rows["source"], rows["mask"], rows["output"], strict=True):
            try:
                if storage.is_url(source):
                    self.process_url(source, mask, output)
                else:
                    item = batch.Item(Path(source), Path(mask) if mask else None, Path(output))
                    batch.process(item, self.apply_fn, self.masks_given)
                error = ""
            except Exception as exc:  # reported with the file's name at the end, like the local batch
                error = batch.failure_message(exc)
            names.append(PurePosixPath(source).name)
            errors.append(error)
        return {"name": np.array(names, dtype=object), "error": np.array(errors, dtype=object)}

    def process_url(self, source: str, mask: str, output: str) -> None:
        """The same per-file code on copies in a local folder of their own (same names), the result
        uploaded; messages name the URLs, not the copies."""
        with tempfile.TemporaryDirectory(prefix="engine-batch-") as tmp:
            folder = Path(tmp)
            local = folder / "in" / PurePosixPath(source).name
            local.parent.mkdir()
            local.write_bytes(storage.read_bytes(source))
            local_mask = None
            if mask:
                local_mask = folder / "mask" / PurePosixPath(mask).name
                local_mask.parent.mkdir()
                local_mask.write_bytes(storage.read_bytes(mask))
            local_out = folder / "out" / PurePosixPath(output).name
            try:
                batch.process(batch.Item(local, local_mask, local_out), self.apply_fn, self.masks_given)
            except Exception as exc:
                message = batch.failure_message(exc).replace(str(local), source)
                if local_mask is not None:
                    message = message.replace(str(local_mask), mask)
                raise EngineError(message) from exc
            storage.write_bytes(output, local_out.read_bytes())


def worker_shape(ray: Any, workers: int | None, device: str | None) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each). On GPUs: one actor per GPU. On CPUs: one actor per node by default,
    the cluster's CPUs shared evenly, never more per actor than the smallest node has."""
    if gpus := gpus_to_use(ray, device):
        return workers or gpus, 1.0, 1.0
    per_node = cpu_nodes(ray)
    n = workers or len(per_node)
    cpus = max(1.0, min(math.floor(sum(per_node) / n), min(per_node)))
    return n, float(cpus), 0.0


@dataclass
class Plan:
    """What to send: one row per image whose output is not there yet (absolute paths, or URLs), the
    names skipped because it is, and every name in the local batch's order."""

    rows: list[dict[str, str]]
    skipped: list[str]
    names: list[str]
    local_outputs: list[Path] = field(default_factory=list)  # where killed writes may leave temporaries


def plan(input_dir: str, output_dir: str, masks_dir: str | None) -> Plan:
    """Folders on a path every node sees, or (any of them a URL) on filesystems pyarrow opens."""
    if not any(storage.is_url(f) for f in (input_dir, output_dir, masks_dir)):
        items = batch.plan(Path(input_dir), Path(output_dir), Path(masks_dir) if masks_dir else None)
        done = {item.source.name for item in items if item.output.exists()}
        todo = [item for item in items if item.source.name not in done]
        # Absolute paths: the workers do not run in this process's folder (or on its machine).
        rows = [
            {
                "source": str(i.source.resolve()),
                "mask": str(i.mask.resolve()) if i.mask else "",
                "output": str(i.output.resolve()),
            }
            for i in todo
        ]
        skipped = [item.source.name for item in items if item.source.name in done]
        return Plan(rows, skipped, [i.source.name for i in items], [i.output for i in todo])
    for flag, folder in (("--input", input_dir), ("--masks", masks_dir)):
        if folder and not storage.is_url(folder) and not Path(folder).is_dir():
            raise BadInputError(f"{flag} {folder} is not a folder")
    as_url = {f: f if storage.is_url(f) else Path(f).resolve().as_uri() for f in (input_dir, output_dir)}
    if masks_dir:
        as_url[masks_dir] = masks_dir if storage.is_url(masks_dir) else Path(masks_dir).resolve().as_uri()
    if as_url[input_dir].rstrip("/") == as_url[output_dir].rstrip("/"):
        raise BadInputError("--output is the same folder as --input; batch never writes over its inputs")
    sources = storage.list_images(as_url[input_dir], "--input")
    masks: dict[str, str] = {}
    if masks_dir:
        for url in storage.list_images(as_url[masks_dir], "--masks"):
            masks.setdefault(PurePosixPath(url).stem, url)
    names = [PurePosixPath(u).name for u in sources]
    outputs = [storage.join(as_url[output_dir], name) for name in names]
    there = storage.existing(outputs)
    rows, skipped = [], []
    for source, output in zip(sources, outputs, strict=True):
        if output in there:
            skipped.append(PurePosixPath(source).name)
            continue
        stem = PurePosixPath(source).stem
        mask = masks.get(stem) or masks.get(f"{stem}_mask") or ""
        rows.append({"source": source, "mask": mask, "output": output})
    return Plan(rows, skipped, names)


def sweep_temporaries(outputs: list[Path]) -> None:
    """Remove the temporary files that a worker killed mid-write leaves beside an output (its atomic write
    never got to the rename, so the output itself is absent or whole)."""
    for output in outputs:
        for tmp in output.parent.glob(f".{output.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def run(
    address: str,
    model_dir: Path,
    todo: Plan,
    masks_given: bool,
    backend: str | None,
    device: str | None,
    given: dict,
    workers: int | None,
    progress: Callable[[int, int, str], None] | None = None,
) -> batch.BatchReport:
    """The local batch's report, the work done on the cluster at `address`."""
    from engine import families
    from engine.device import select_device

    report = batch.BatchReport(skipped=list(todo.skipped))
    if workers is not None and workers < 1:
        raise ClusterError("--workers must be at least 1")
    if not todo.rows:
        return report
    total = len(todo.names)
    loaded = families.load(model_dir, select_device("cpu"), backend=None)  # a bad model: said before Ray
    with connected(address) as ray:
        # Export the model's sampler here, once, rather than in every actor at the same time.
        loaded.family.prepare(loaded, loaded.family.backend(backend))
        n, cpus, gpus = worker_shape(ray, workers, device)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # one bar for the whole job: ours
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notice that its bars are off
        # Ray Data's actors restart (max_restarts=-1) and their tasks are retried (max_task_retries=-1) by
        # default: an actor lost with its node comes back where there is room, and its file is tried again.
        dataset = ray.data.from_items(todo.rows, override_num_blocks=len(todo.rows)).map_batches(
            Restyler,
            fn_constructor_args=(
                str(model_dir.resolve()),
                backend,
                "cuda" if gpus else "cpu",
                given,
                masks_given,
            ),
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=n),
            num_cpus=cpus,
            num_gpus=gpus,
        )
        report.workers = {"actors": n, "cpus": int(cpus), "gpus": int(gpus)}
        finished = len(report.skipped)
        if progress is not None:
            progress(finished, total, "")
        for row in dataset.iter_rows():
            finished += 1
            if row["error"]:
                report.failed.append((row["name"], row["error"]))
            else:
                report.done.append(row["name"])
            if progress is not None:
                progress(finished, total, row["name"])
    sweep_temporaries(todo.local_outputs)
    order = {name: k for k, name in enumerate(todo.names)}  # the local batch's order, not arrival
    report.done.sort(key=order.__getitem__)
    report.failed.sort(key=lambda failure: order[failure[0]])
    return report
