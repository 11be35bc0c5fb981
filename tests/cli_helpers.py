"""The `engine` command in a subprocess, as a user runs it, and the JSON object it prints with --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "ENGINE_THREADS": "2"}


def run_engine(*args, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "engine.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or ENV, timeout=timeout)


def run_engines(*arg_lists, timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """Several `engine` commands at once (each in its own process, as run_engine runs one), in order."""
    cmds = [[sys.executable, "-m", "engine.cli", *map(str, args)] for args in arg_lists]
    env = {**ENV, "ENGINE_THREADS": "1"}
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in cmds
    ]
    done = []
    for cmd, proc in zip(cmds, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return done


def json_result(proc: subprocess.CompletedProcess) -> dict:
    """The --json result (the last line of stdout), or the command's stderr as the failure."""
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
