"""Scale-out on Ray (optional: `pip install 'singan-studio[cluster]'`): `engine batch --cluster` streams a
folder through model replicas with Ray Data, `engine train-many --cluster` runs one Ray task per model.

Ray is imported only here and only when `--cluster` is given; without it the engine runs as before.
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.errors import BadInputError, EngineError

INSTALL_HINT = "pip install 'singan-studio[cluster]' (from a checkout: pip install -e '.[cluster]')"


class ClusterError(EngineError):
    """The cluster cannot be reached or used (not a problem of one file or row)."""

    exit_code = 2


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--cluster needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


@contextmanager
def connected(address: str) -> Iterator[Any]:
    """ray.init on an existing cluster (`auto`: RAY_ADDRESS, else the one `ray start` left on this machine;
    or an address such as 10.0.0.5:6379 or ray://head:10001), ray.shutdown after. Never starts a cluster:
    a job that quietly ran on a one-machine cluster of its own would look like a slow cluster."""
    ray = require_ray()
    if not address:
        raise BadInputError("--cluster needs auto or an ADDRESS (host:port of the head node)")
    _check_reachable(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reports to anyone from a studio's machines
    # This process's Ray core logs errors that it also raises, and on each actor start that Ray Data keeps
    # constructor arguments in the object store (they are this process's: they live as long as the job).
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            log_to_driver=False,  # the workers' logs stay in the cluster's log folder; errors come back
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(
            f"cannot connect to a Ray cluster at --cluster {address} ({first}): start one with "
            "`ray start --head` or give the head node's ADDRESS"
        ) from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _head(address: str) -> str | None:
    """host:port of the head that `address` names, where this can tell without Ray (ray.init would wait
    minutes for a head that is not there before saying so)."""
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"  # what `ray start` leaves
            try:
                address = current.read_text().strip()
            except OSError:
                return None  # ray.init says at once that it found no cluster
    address = address.removeprefix("ray://")
    return address if ":" in address and "/" not in address else None


def _check_reachable(address: str) -> None:
    head = _head(address)
    if head is None:
        return
    host, _, port = head.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "no answer"
        raise ClusterError(
            f"cannot connect to a Ray cluster at --cluster {address} (nothing answers at {head}: {reason}): "
            "start one with `ray start --head` or give the head node's ADDRESS"
        ) from None


def alive_nodes(ray: Any) -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]
