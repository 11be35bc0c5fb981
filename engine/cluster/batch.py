"""`engine batch --cluster`: the local batch's files, streamed through model replicas on a Ray cluster.

Ray Data carries one row per file (source, mask, output paths on a filesystem every node sees) to a fixed
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
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from engine import batch
from engine.cluster import ClusterError, alive_nodes, connected

log = logging.getLogger(__name__)


class Restyler:
    """One model replica (a Ray Data actor): the local batch's apply function, built once per actor."""

    def __init__(self, model_dir: str, backend: str | None, device: str, given: dict, masks_given: bool):
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        # Read by engine.device.configure_threads (torch) and engine.standalone.thread_counts (onnxruntime).
        os.environ["ENGINE_THREADS"] = str(max(1, int(cpus)))
        self.apply_fn = batch.in_process(Path(model_dir), backend, device, given)
        self.masks_given = masks_given

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names, errors = [], []
        for source, mask, output in zip(rows["source"], rows["mask"], rows["output"], strict=True):
            item = batch.Item(Path(source), Path(mask) if mask else None, Path(output))
            try:
                batch.process(item, self.apply_fn, self.masks_given)
                error = ""
            except Exception as exc:  # reported with the file's name at the end, like the local batch
                error = batch.failure_message(exc)
            names.append(item.source.name)
            errors.append(error)
        return {"name": np.array(names, dtype=object), "error": np.array(errors, dtype=object)}


def worker_shape(ray: Any, workers: int | None, device: str | None) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each). On GPUs: one actor per GPU. On CPUs: one actor per node by default,
    the cluster's CPUs shared evenly, never more per actor than the smallest node has."""
    total = ray.cluster_resources()
    gpus = int(total.get("GPU", 0))
    if device is not None and device.startswith("cuda") and gpus == 0:
        raise ClusterError("--device cuda, but the cluster has no GPU: leave --device out or use cpu")
    if gpus and (device is None or device.startswith("cuda")):
        return workers or gpus, 1.0, 1.0
    per_node = [node["Resources"].get("CPU", 0.0) for node in alive_nodes(ray)]
    per_node = [c for c in per_node if c >= 1]
    if not per_node:
        raise ClusterError("the cluster has no node with a CPU to run on")
    n = workers or len(per_node)
    cpus = max(1.0, min(math.floor(sum(per_node) / n), min(per_node)))
    return n, float(cpus), 0.0


def sweep_temporaries(items: list[batch.Item]) -> None:
    """Remove the temporary files that a worker killed mid-write leaves beside an output (its atomic write
    never got to the rename, so the output itself is absent or whole)."""
    for item in items:
        for tmp in item.output.parent.glob(f".{item.output.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def run(
    address: str,
    model_dir: Path,
    items: list[batch.Item],
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

    todo = [item for item in items if not item.output.exists()]
    report = batch.BatchReport(skipped=[item.source.name for item in items if item.output.exists()])
    if workers is not None and workers < 1:
        raise ClusterError("--workers must be at least 1")
    if not todo:
        return report
    with connected(address) as ray:
        # Export the model's sampler here, once, rather than in every actor at the same time.
        loaded = families.load(model_dir, select_device("cpu"), backend=None)
        loaded.family.prepare(loaded, loaded.family.backend(backend))
        n, cpus, gpus = worker_shape(ray, workers, device)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # one bar for the whole job: ours
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # its notice that its bars are off
        # Absolute paths: the workers do not run in this process's folder (or on its machine).
        rows = [
            {
                "source": str(i.source.resolve()),
                "mask": str(i.mask.resolve()) if i.mask else "",
                "output": str(i.output.resolve()),
            }
            for i in todo
        ]
        # Ray Data's actors restart (max_restarts=-1) and their tasks are retried (max_task_retries=-1) by
        # default: an actor lost with its node comes back where there is room, and its file is tried again.
        dataset = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
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
            progress(finished, len(items), "")
        for row in dataset.iter_rows():
            finished += 1
            if row["error"]:
                report.failed.append((row["name"], row["error"]))
            else:
                report.done.append(row["name"])
            if progress is not None:
                progress(finished, len(items), row["name"])
    sweep_temporaries(todo)
    order = {item.source.name: k for k, item in enumerate(items)}  # the local batch's order, not arrival
    report.done.sort(key=order.__getitem__)
    report.failed.sort(key=lambda failure: order[failure[0]])
    return report
