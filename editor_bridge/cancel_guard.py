"""Cancels a plug-in's engine job when the plug-in process dies before the job ends.

GIMP's Cancel button (beside a plug-in's progress in the status bar) does not ask the plug-in to stop: GIMP
writes a quit message the busy plug-in never reads, then kills the process with SIGKILL. No code of the dying
plug-in runs, so the job would go on training in the engine. A small watcher process, in its own session so
the kill does not reach it, holds the other end of a pipe: the plug-in tells it each job id and "done" at the
end; end of file without "done" means the plug-in was killed, and the watcher cancels the job. The same
covers GIMP quitting or crashing mid-job.

    python -m editor_bridge.cancel_guard --home HOME      reads "job ID" / "done" lines on stdin
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from typing import IO

from editor_bridge.errors import BridgeError

# Windows: start helper processes without a console window (0, no flag, elsewhere).
NO_WINDOW = getattr(subprocess, "CREATE_NO_WINDOW", 0)

log = logging.getLogger(__name__)


class CancelGuard:
    """The plug-in's side: start it before the job, `watch(job_id)` once the engine accepted it, `close()`."""

    def __init__(self, home: str | None, timeout_s: float = 10.0) -> None:
        command = [sys.executable, "-m", "editor_bridge.cancel_guard", "--timeout", str(timeout_s)]
        if home:
            command += ["--home", home]
        # The watcher imports editor_bridge and its wheels from wherever this plug-in found them.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=env,
            text=True,
            start_new_session=sys.platform != "win32",  # out of the reach of a kill of our process group
            creationflags=NO_WINDOW,
        )

    def watch(self, job_id: str) -> None:
        self._say(f"job {job_id}")

    def close(self) -> None:
        """The plug-in finished (well or not): the watcher exits without cancelling anything."""
        self._say("done")
        stdin = self._process.stdin
        if stdin is not None and not stdin.closed:
            stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            log.warning("cancel guard %d did not exit; leaving it", self._process.pid)

    def __enter__(self) -> CancelGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _say(self, line: str) -> None:
        stdin = self._process.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(line + "\n")
            stdin.flush()
        except OSError as exc:  # the watcher died: the plug-in itself must not fail for it
            log.warning("cancel guard unreachable: %s", exc)


def watch(lines: IO[str]) -> str | None:
    """The job to cancel once `lines` ends: the last one announced, unless the plug-in said "done"."""
    job_id = None
    for line in lines:
        word, _, arg = line.strip().partition(" ")
        if word == "done":
            return None
        if word == "job" and arg:
            job_id = arg
    return job_id


def cancel_job(job_id: str, home: str | None, timeout_s: float) -> bool:
    from editor_bridge.plugin_runner import Settings, connect

    try:
        with connect(Settings(home=home, timeout_s=timeout_s)) as client:
            client.cancel(job_id)
    except BridgeError as exc:  # already finished, or the engine is gone: nothing left to stop
        log.warning("could not cancel job %s: %s", job_id, exc)
        return False
    log.info("cancelled job %s: its plug-in ended before it", job_id)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m editor_bridge.cancel_guard")
    parser.add_argument("--home", default=None)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="singan cancel guard: %(message)s")
    job_id = watch(sys.stdin)
    if job_id is not None:
        cancel_job(job_id, args.home, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
