"""The daemon's lifecycle: one per home (file lock), bind, connection file, recover jobs, serve, stop.

SIGTERM and Ctrl-C end the loop; running training then checkpoints and is journaled `interrupted`, and the
next start resumes it. After a kill -9 the lock dies with the process, and the next start finds the jobs
left `running` in the journal and resumes them the same way.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import zmq

from editor_bridge.connection import (
    ConnectionInfo,
    connection_file_path,
    default_home,
    new_key,
    pid_alive,
    read_connection_file,
    remove_connection_file,
    write_connection_file,
)
from editor_bridge.errors import ConnectionFileError
from editor_bridge.server import BridgeServer
from editor_bridge.wire import DEFAULT_MAX_FRAME_BYTES
from engine.errors import EngineError
from engine.files import reporting_full_disk

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "tcp://127.0.0.1:0"
LOCK_FILE = "engine.lock"  # held while a daemon runs; holds its pid
KEEP_FILE_EVERY_S = 1.0  # how often the daemon makes sure its connection file is there


class DaemonAlreadyRunning(EngineError):
    exit_code = 3


class InsecureEndpoint(EngineError):
    pass


@dataclass(frozen=True)
class ServeConfig:
    """How the daemon serves; everything it keeps lives under `home`."""

    # As the user gave it: None means $ENGINE_HOME or the default data dir for the models, and
    # $XDG_RUNTIME_DIR (where set) for the connection file, exactly where clients given no home look.
    home: Path | None
    endpoint: str = DEFAULT_ENDPOINT
    device: str | None = None
    backend: str = "onnxruntime"
    precision: str | None = None  # training precision; None: engine.device.default_precision
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    curve_dir: Path | None = None  # server.key_secret, and clients/*.key of the clients let in


def engine_version() -> str:
    try:
        return metadata.version("singan-studio")
    except metadata.PackageNotFoundError:
        return "dev"


def is_loopback(endpoint: str) -> bool:
    """ipc:// and inproc:// stay on this machine; tcp:// only on a loopback address."""
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("ipc", "inproc"):
        return True
    host = urlsplit(endpoint).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # an interface name or "*": not loopback


def check_endpoint(endpoint: str, curve_dir: Path | None) -> None:
    if not is_loopback(endpoint) and curve_dir is None:
        raise InsecureEndpoint(
            f"{endpoint} is reachable from other machines; the engine listens there only with CurveZMQ "
            "encryption: pass --curve-keys DIR (see docs/serve.md), or use tcp://127.0.0.1:PORT"
        )


class HomeLock:
    """An exclusive lock on HOME/engine.lock for the daemon's lifetime; the OS drops it when we die."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock and write this process's id into the file (for `running_pid`)."""
        self._file = open(self.path, "a+")  # noqa: SIM115 (held open for the daemon's lifetime)
        if sys.platform == "win32":
            import msvcrt

            try:
                msvcrt.locking(self._file.fileno(), msvcrt.LK_NBLCK, 1)
            except OSError:
                return False
        else:
            import fcntl

            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def running_pid(home: Path) -> int | None:
    """The id of the daemon that holds HOME's lock, or None when none does (found without the connection
    file, which a user may have deleted)."""
    path = home / LOCK_FILE
    if not path.is_file() or sys.platform == "win32":
        return None
    import fcntl

    with open(path) as f:
        try:
            # Shared, and let go at once: a daemon starting this very moment is not kept out by it.
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = f.read().strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return None


def _already_running(home: Path, connection_file: Path) -> DaemonAlreadyRunning:
    try:
        info = read_connection_file(connection_file)
        where = f"pid {info.pid}, {info.endpoint}" if pid_alive(info.pid) else None
    except ConnectionFileError:
        where = None
    if where is None:
        pid = running_pid(home)
        where = f"pid {pid}, starting up or writing its connection file again" if pid else "starting up"
    return DaemonAlreadyRunning(
        f"an engine is already running for {home} ({where}); use it, or stop it with "
        f"`engine stop --home {home}`"
    )


class ConnectionFileKeeper:
    """Writes the connection file again when it has gone (deleted by a user or a clean-up script) or no
    longer names this daemon: without it no client, `engine status` or `engine stop` finds the engine."""

    def __init__(self, info: ConnectionInfo, path: Path) -> None:
        self.info, self.path = info, path

    def write(self) -> None:
        with reporting_full_disk(self.path):
            write_connection_file(self.info, self.path)

    def check(self) -> None:
        try:
            if read_connection_file(self.path) == self.info:
                return
        except ConnectionFileError:
            pass
        log.warning("the connection file %s was removed or changed; writing it again", self.path)
        self.write()


def _curve_context(curve_dir: Path) -> tuple[zmq.Context[Any], Any]:
    """A context whose next socket is a CurveZMQ server that admits only the clients in curve_dir/clients."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    if not zmq.has("curve"):
        raise InsecureEndpoint("this libzmq has no CurveZMQ support; listen on 127.0.0.1 only")
    secret = curve_dir / "server.key_secret"
    clients = curve_dir / "clients"
    if not secret.is_file() or not clients.is_dir():
        raise InsecureEndpoint(
            f"{curve_dir} needs server.key_secret and a clients/ folder of client public keys "
            "(create them with `python -m zmq.auth` helpers; see docs/serve.md)"
        )
    public, private = zmq.auth.load_certificate(secret)
    ctx = zmq.Context()
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(clients))
    ctx.setsockopt(zmq.CURVE_SERVER, 1)
    ctx.setsockopt(zmq.CURVE_PUBLICKEY, public)
    ctx.setsockopt(zmq.CURVE_SECRETKEY, private)
    return ctx, auth


def serve(config: ServeConfig) -> None:
    """Run the daemon in the foreground until SIGTERM, Ctrl-C or a shutdown request."""
    home = default_home(config.home)
    check_endpoint(config.endpoint, config.curve_dir)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = HomeLock(home)
    if not lock.acquire():
        lock.release()
        raise _already_running(home, connection_file_path(config.home))
    try:
        _serve_locked(config, home)
    finally:
        lock.release()


def write_capabilities(home: Path) -> None:
    """HOME/capabilities.json: what this engine can do, from which the plugins build their menus at the
    editor's next start (the ping reply carries the same)."""
    import json

    from editor_bridge.plugin_runner import CAPABILITIES_FILE
    from engine import families
    from engine.files import atomic_write_bytes

    try:
        atomic_write_bytes(home / CAPABILITIES_FILE, json.dumps(families.capabilities(), indent=1).encode())
    except OSError as exc:  # the menus stay those of the file installed with the plugin
        log.warning("cannot write %s: %s", home / CAPABILITIES_FILE, exc)


def _serve_locked(config: ServeConfig, home: Path) -> None:
    # Heavy imports only once we know this daemon will run.
    import torch

    from engine.device import configure_threads, select_device
    from engine.precision import Precision
    from engine.serve.handlers import Handlers, lane_of
    from engine.serve.jobs import JobManager, ThreadBudget
    from engine.serve.journal import Journal
    from engine.serve.registry import Registry

    stale = connection_file_path(config.home)  # not `home`: see ServeConfig.home
    if stale.exists():
        log.info("removing the connection file of a previous engine that did not stop cleanly")
        remove_connection_file(stale)
    configure_threads()
    device = select_device(config.device)
    budget = ThreadBudget(torch.get_num_threads())
    key = new_key()
    stop = threading.Event()
    context, auth = (None, None)
    if config.curve_dir is not None:
        context, auth = _curve_context(config.curve_dir)
    journal = Journal(home / "jobs.sqlite3")
    registry = Registry(home / "models")
    server = BridgeServer(key, config.endpoint, context=context, max_frame_bytes=config.max_frame_bytes)
    if context is not None:
        context.sockopts.clear()  # only the ROUTER is a Curve server
    jobs = JobManager(journal, home / "jobs", server.send, budget)
    precision = Precision(config.precision) if config.precision else None  # None: per model, see _resolve
    handlers = Handlers(
        server, jobs, registry, device, config.backend, precision, home, stop, engine_version()
    )
    jobs.runner = handlers.run_job
    # Before anything can be resumed or the connection file tells clients (and `kill`) the engine is up: a
    # SIGTERM from then on stops it cleanly, through `stop`.
    _install_signal_handlers(stop)
    recovered = jobs.recover(lane_of)
    jobs.start()
    write_capabilities(home)
    info = ConnectionInfo(endpoint=server.endpoint, key=key, pid=os.getpid(), engine_version=engine_version())
    path = stale
    keeper = ConnectionFileKeeper(info, path)
    try:
        keeper.write()
        log.info(
            "engine %s serving on %s (device %s, %s training, backend %s, home %s, %d models, %d jobs "
            "resumed); connection file %s",
            engine_version(), server.endpoint, device, precision.value if precision else "auto",
            config.backend, home,
            len(registry), len(recovered), path,
        )  # fmt: skip
        server.serve(handlers.dispatch, stop, poll_s=0.05, every=(KEEP_FILE_EVERY_S, keeper.check))
    finally:
        log.info("stopping: checkpointing running work")
        start = time.monotonic()
        jobs.shutdown()
        remove_connection_file(path, pid=os.getpid())
        server.close()
        journal.close()
        if auth is not None:
            auth.stop()
        if context is not None:
            context.term()
        log.info("stopped cleanly in %.1f s", time.monotonic() - start)


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, _frame: object) -> None:
        log.info("got %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
