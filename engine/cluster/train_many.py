"""`engine train-many --cluster`: each manifest row a Ray task, with its resources (1 GPU, or N CPUs).

The task is the local run's own (`engine.train_many.train_row`): it trains in DIR/.training-NAME on the
shared path, so a task whose node dies is retried by Ray (max_retries) and continues from the checkpoint
that the lost attempt left there. Ray sets OMP_NUM_THREADS=1 in its workers; the task sets torch's
threads to the CPUs it was given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.cluster import ClusterError, connected, cpu_nodes, gpus_to_use, use_assigned_cpus
from engine.train_many import Outcome, Row, train_row

RETRIES = 3  # attempts after the first, for a task whose worker or node died (an error in it is not retried)


def _train_task(row: Row, out_dir: str, device: str) -> Outcome:
    import ray

    use_assigned_cpus()
    outcome = train_row(row, Path(out_dir), device)
    outcome.node = ray.util.get_node_ip_address()
    return outcome


def task_shape(ray: Any, cpus_per_task: int | None, device: str | None) -> tuple[float, float, str]:
    """(CPUs, GPUs, device) of each training: a GPU each where the cluster has them, else the smallest
    node's CPUs (so that every node can take a task), or --cpus-per-task."""
    if gpus_to_use(ray, device):
        return 1.0, 1.0, "cuda"
    per_node = cpu_nodes(ray)
    if cpus_per_task is not None:
        most = math.floor(max(per_node))
        if not 1 <= cpus_per_task <= most:
            raise ClusterError(
                f"--cpus-per-task must be between 1 and {most} (the most CPUs a node of this cluster has), "
                f"not {cpus_per_task}"
            )
        return float(cpus_per_task), 0.0, "cpu"
    return float(math.floor(min(per_node))), 0.0, "cpu"


def run(
    address: str,
    plan: Callable[[Any], list[Row]],
    out_dir: Path,
    device: str | None,
    cpus_per_task: int | None,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Outcome]:
    """The outcomes of the rows that `plan(device)` gives, `device` being the one the tasks will train
    on (a row's training key, and the defaults of its options, depend on it)."""
    import torch

    with connected(address) as ray:
        cpus, gpus, task_device = task_shape(ray, cpus_per_task, device)
        rows = plan(torch.device(task_device))
        if not rows:
            return []
        remote = ray.remote(_train_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=RETRIES)
        pending = {remote.remote(row, str(out_dir.resolve()), task_device): row for row in rows}
        outcomes: list[Outcome] = []
        if progress is not None:
            progress(0, len(rows), "")
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            row = pending.pop(ready[0])
            try:
                outcomes.append(ray.get(ready[0]))
            except Exception as exc:  # the task's worker died RETRIES + 1 times: reported, the others go on
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                outcomes.append(
                    Outcome(
                        row.number,
                        row.name,
                        "failed",
                        error=f"row {row.number}: lost on the cluster ({first})",
                    )
                )
            if progress is not None:
                progress(len(outcomes), len(rows), row.name)
    return outcomes
