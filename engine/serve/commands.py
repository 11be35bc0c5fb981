"""`engine serve`, `status`, `cancel` and `stop`: argument parsing for the daemon and talking to it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from engine.errors import EngineError

HOME_HELP = "where the engine keeps models, jobs and its connection file (default: $ENGINE_HOME, else the "
HOME_HELP += "user's data directory)"


class DaemonNotRunning(EngineError):
    exit_code = 3


def add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", type=Path, default=None, help=HOME_HELP)


def connect(home: Path | None, timeout: float = 10.0):
    """A Client for the daemon of `home`; DaemonNotRunning when there is none."""
    from editor_bridge import Client
    from editor_bridge.connection import default_home
    from editor_bridge.errors import EngineNotRunning
    from engine.serve.daemon import KEEP_FILE_EVERY_S, running_pid

    deadline = time.monotonic() + 3 * KEEP_FILE_EVERY_S
    while True:
        try:
            return Client.from_connection_file(home=home, timeout=timeout)
        except EngineNotRunning as exc:
            where = default_home(home)
            pid = running_pid(where)
            if not pid:
                raise DaemonNotRunning(f"{exc} (home {where}; `{serve_command(home)}`)") from None
            if time.monotonic() > deadline:  # a daemon holds the home but has not written its file again
                raise EngineError(
                    f"an engine runs for {where} (pid {pid}) but its connection file is missing and was not "
                    f"written again; stop it with `kill {pid}` and start it again"
                ) from None
            time.sleep(0.1)  # it writes the file again within KEEP_FILE_EVERY_S


def serve_command(home: Path | None) -> str:
    """How to start the engine these clients find. With no home, plain `engine serve`: given the default
    home explicitly, it would write its connection file there and not under $XDG_RUNTIME_DIR."""
    return "engine serve" if home is None else f"engine serve --home {home}"


def cmd_serve(args: argparse.Namespace) -> dict:
    from editor_bridge.connection import default_home
    from engine.serve.daemon import ServeConfig, check_endpoint, serve

    home = default_home(args.home)
    check_endpoint(args.endpoint, args.curve_keys)  # before anything is written into the home
    _check_home(home)
    _log_to(home)
    config = ServeConfig(
        home=args.home,  # None stays None: the connection file then goes where clients look for it
        endpoint=args.endpoint,
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        max_frame_bytes=args.max_frame_mb * 2**20,
        curve_dir=args.curve_keys,
    )
    serve(config)
    return {"stopped": True, "home": str(home)}


def _check_home(home: Path) -> None:
    """A home the engine cannot use is refused at once, with what to do, instead of failing later."""

    for path in (home, home / "models", home / "jobs", home / "logs"):
        if path.exists() and not path.is_dir():
            raise EngineError(f"{path} is a file, but the engine keeps a folder there: move the file away")
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = home / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EngineError(
            f"the engine cannot write its home {home} ({exc.strerror}): fix its permissions or free space, "
            "or choose another with --home"
        ) from None


class LogFile(logging.FileHandler):
    """The engine's log file. When it cannot be written (a full disk), that is said once on stderr instead
    of a traceback per line, and the lines go to stderr alone until it can be written again."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failing = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(self.format(record) + self.terminator)
            self.stream.flush()
        except OSError as exc:
            if not self.failing:
                print(f"engine: cannot write the log {self.baseFilename} ({exc.strerror})", file=sys.stderr)
            self.failing = True
        else:
            self.failing = False


def _log_to(home: Path) -> None:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    (home / "logs").mkdir(exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_file = LogFile(home / "logs" / "engine.log")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr), log_file]
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in handlers:
        handler.setFormatter(fmt)
        root.addHandler(handler)


def cmd_status(args: argparse.Namespace) -> dict:
    try:
        client = connect(args.home)
    except DaemonNotRunning as exc:
        # Still useful without a daemon: what is stored, and what the next start will resume.
        exc.details = stored_status(args.home)
        raise
    with client:
        status = client.status()
        models = client.list_models()
    return {
        "running": True,
        "pid": status.pid,
        "version": status.engine_version,
        "device": status.device,
        "home": status.home,
        "endpoint": client.endpoint,
        "uptime_s": round(status.uptime_s, 1),
        "jobs": [_job_line(j) for j in status.jobs],
        "models": [_model_line(m) for m in models],
    }


def stored_status(home: Path | None) -> dict:
    """What a home holds when no daemon runs: its models, and the jobs the next start resumes."""
    from editor_bridge.connection import default_home
    from editor_bridge.protocol import JobState
    from engine.serve.journal import read_pending
    from engine.serve.registry import Registry

    given, home = home, default_home(home)
    jobs = []
    for record in read_pending(home / "jobs.sqlite3"):
        # `running` in the journal of a daemon that is gone: it was interrupted.
        state = JobState.INTERRUPTED if record.state is JobState.RUNNING else record.state
        jobs.append(f"{record.job_id} {record.request_type.value} {state.value}")
    return {
        "running": False,
        "home": str(home),
        "start": serve_command(given),
        "jobs": jobs,
        "models": [_model_line(m) for m in Registry(home / "models", create=False).list()],
    }


def _model_line(m) -> str:
    size = f" {m.width}x{m.height}" if m.width and m.height else ""
    return f"{m.model_id} {m.name!r} {m.family} {m.task}{size}" + (" onnx" if m.has_onnx else "")


def _job_line(job) -> str:
    line = f"{job.job_id} {job.request_type.value} {job.state.value}"
    p = job.progress
    if p is not None:
        line += f" stage {p.stage + 1}/{p.n_stages} iter {p.iteration}/{p.iters}"
        if p.eta_s is not None:
            line += f" eta {p.eta_s:.0f}s"
    return line


def cmd_stop(args: argparse.Namespace) -> dict:
    from editor_bridge.connection import connection_file_path, pid_alive, read_connection_file
    from editor_bridge.errors import ConnectionFileError, RequestTimeout

    with connect(args.home) as client:
        pid = client.ping().pid
        try:
            client.shutdown()
            answered = True
        except RequestTimeout:  # its reply can be lost as the engine closes; whether it stops tells
            answered = False

    def still_there() -> bool:
        # The daemon removes its connection file as the last step of a clean stop.
        try:
            return read_connection_file(connection_file_path(args.home)).pid == pid and pid_alive(pid)
        except ConnectionFileError:
            return False

    deadline = time.monotonic() + args.timeout
    while still_there():
        if time.monotonic() > deadline:
            if not answered:
                raise EngineError(
                    f"the engine (pid {pid}) did not answer the stop request and still runs after "
                    f"{args.timeout:g} s; see its log, and stop its process if it hangs"
                )
            raise EngineError(
                f"the engine (pid {pid}) is still checkpointing after {args.timeout:g} s; it stops on "
                "its own, or wait longer with --timeout"
            )
        time.sleep(0.1)
    return {"stopped": pid}


def cmd_cancel(args: argparse.Namespace) -> dict:
    from editor_bridge.errors import RemoteError
    from editor_bridge.protocol import JobState

    with connect(args.home) as client:
        try:
            client.cancel(args.job_id)
        except RemoteError as exc:  # an unknown job id; the message says where to find the right one
            raise EngineError(str(exc)) from None
        # The engine stops a job at its next iteration; a cancelled job keeps no partial model.
        deadline = time.monotonic() + args.timeout
        while (state := client.job_status(args.job_id).state) in (JobState.QUEUED, JobState.RUNNING):
            if time.monotonic() > deadline:
                raise EngineError(
                    f"job {args.job_id} is still stopping after {args.timeout:g} s; it stops on its own "
                    "(`engine status` shows it), or wait longer with --timeout"
                )
            time.sleep(0.1)
    return {"job": args.job_id, "state": state.value}


def cmd_models_add(args: argparse.Namespace) -> dict:
    """Store a model trained elsewhere in the engine's home, where the editors' model lists find it (a
    running engine too: it looks again each time it lists its models)."""
    from editor_bridge.connection import default_home
    from engine.serve.registry import Registry

    home = default_home(args.home)
    source = Path(args.model_dir)
    name = args.name or source.resolve().name
    info = Registry(home / "models").add_copy(source, name)
    return {"model_id": info.model_id, "name": info.name, "family": info.family, "task": info.task}


def register(sub: argparse._SubParsersAction) -> None:
    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
        add_home(p)
        return p

    p = command("serve", "run the engine daemon in the foreground (Ctrl-C or SIGTERM stops it cleanly)")
    p.add_argument(
        "--endpoint",
        default="tcp://127.0.0.1:0",
        help="where to listen (default: a free loopback port; ipc://PATH also works). Other interfaces "
        "need --curve-keys",
    )
    p.add_argument("--curve-keys", type=Path, help="CurveZMQ keys: DIR/server.key_secret and DIR/clients/")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"], help="for inference")
    p.add_argument(
        "--precision", choices=["fp32", "bf16"], help="training precision (default: bf16 where supported)"
    )
    p.add_argument("--max-frame-mb", type=int, default=512, help="largest accepted image frame, in MiB")
    p.set_defaults(run=cmd_serve)

    p = command(
        "status",
        "show whether the engine runs (exit code 3 if not), its device, jobs and stored models",
    )
    p.set_defaults(run=cmd_status)

    p = command("cancel", "cancel one of the running engine's jobs (`engine status` lists their ids)")
    p.add_argument("job_id", metavar="JOB_ID")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the job to stop")
    p.set_defaults(run=cmd_cancel)

    models = sub.add_parser("models", help="manage the engine's stored models (`engine status` lists them)")
    actions = models.add_subparsers(dest="action", required=True)
    text = "store a copy of a model directory (from `engine train --out`) where the editors can pick it"
    p = actions.add_parser("add", help=text, description=text)
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
    add_home(p)
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--name", help="the name the editors show (default: the directory's name)")
    p.set_defaults(run=cmd_models_add)

    p = command("stop", "ask the running engine to stop (training is checkpointed first)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to exit")
    p.set_defaults(run=cmd_stop)
