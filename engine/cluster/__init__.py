"""Scale-out on Ray (optional: `pip install 'singan-studio[cluster]'`): `engine batch --cluster` streams a
folder through model replicas with Ray Data, `engine train-many --cluster` runs one Ray task per model.

Ray is imported only here and only when `--cluster` is given; without it the engine runs as before.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import threading
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
    # ray.init retries for minutes against a server that accepts the connection but never completes Ray's
    # handshake; the command says so and ends instead (nothing has been written when it connects).
    timeout = float(os.environ.get("ENGINE_RAY_CONNECT_TIMEOUT", "60"))

    def give_up() -> None:
        sys.stderr.write(
            f"engine: error: no answer from a Ray cluster at --cluster {address} within {timeout:.0f} s: "
            "check that it is the head node's address (its GCS port: 6379 unless `ray start --port` said)\n"
        )
        sys.stderr.flush()
        os._exit(ClusterError.exit_code)

    watchdog = threading.Timer(timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            log_to_driver=False,  # the workers' logs stay in the cluster's log folder; errors come back
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if address == "auto" and not os.environ.get("RAY_ADDRESS"):
            raise ClusterError(
                "--cluster auto found no Ray cluster (none started on this machine, and RAY_ADDRESS is not "
                "set): start one with `ray start --head`, or give the head node's ADDRESS"
            ) from exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(
            f"cannot connect to a Ray cluster at --cluster {address} ({first}): start one with "
            "`ray start --head` or give the head node's ADDRESS"
        ) from exc
    finally:
        watchdog.cancel()
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


# An HTTP/2 client's connection preface and an empty SETTINGS frame: a Ray head's GCS (and its Ray Client
# server) speaks gRPC, whose server answers with a SETTINGS frame (type 4) of its own.
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _check_reachable(address: str) -> None:
    """Refuse at once an address where nothing answers, or something that is not a gRPC server (a web
    server, Ray's dashboard on 8265)."""
    head = _head(address)
    if head is None:
        return
    host, _, port = head.rpartition(":")
    advice = "start one with `ray start --head` or give the head node's ADDRESS"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=5) as conn:
            conn.settimeout(5)
            conn.sendall(_H2_HELLO)
            reply = conn.recv(9)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or "no answer"
        raise ClusterError(
            f"cannot connect to a Ray cluster at --cluster {address} (nothing answers at {head}: {reason}): "
            f"{advice}"
        ) from None
    if len(reply) < 4 or reply[3] != 0x04:
        raise ClusterError(
            f"cannot connect to a Ray cluster at --cluster {address}: {head} answers, but not as a Ray head "
            "(give its GCS port, 6379 unless `ray start --port` set another, or ray://HOST:10001)"
        )


def alive_nodes(ray: Any) -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


def gpus_to_use(ray: Any, device: str | None) -> int:
    """The cluster's GPUs where the work goes to them (default where it has any, or --device cuda), else
    0; --device cuda on a cluster without a GPU is refused."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device is not None and device.startswith("cuda") and gpus == 0:
        raise ClusterError("--device cuda, but the cluster has no GPU: leave --device out or use cpu")
    return gpus if device is None or device.startswith("cuda") else 0


def cpu_nodes(ray: Any) -> list[float]:
    """The CPUs of each live node that has at least one; a cluster with none is refused."""
    per_node = [c for c in (node["Resources"].get("CPU", 0.0) for node in alive_nodes(ray)) if c >= 1]
    if not per_node:
        raise ClusterError("the cluster has no node with a CPU to run on")
    return per_node


def use_assigned_cpus() -> None:
    """In a Ray worker: threads for the CPUs Ray gave it (Ray sets OMP_NUM_THREADS=1 in its workers).
    ENGINE_THREADS is read by engine.device.configure_threads (torch) and engine.standalone.thread_counts
    (onnxruntime)."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    os.environ["ENGINE_THREADS"] = str(max(1, int(cpus)))
