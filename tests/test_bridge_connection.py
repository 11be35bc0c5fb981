"""The connection file: where it lives, 0600 permissions, atomic writes, clear errors, stale pids."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from editor_bridge import connection
from editor_bridge.client import Client
from editor_bridge.connection import (
    ConnectionInfo,
    connection_file_path,
    default_home,
    find_engine,
    is_stale,
    new_key,
    pid_alive,
    read_connection_file,
    remove_connection_file,
    write_connection_file,
)
from editor_bridge.errors import ConnectionFileError, EngineNotRunning, UnsupportedVersion
from editor_bridge.protocol import PROTOCOL_VERSION

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


def info(**kw) -> ConnectionInfo:
    return ConnectionInfo(**{"endpoint": "tcp://127.0.0.1:5555", "key": new_key(), "pid": os.getpid(), **kw})


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("ENGINE_HOME", "XDG_RUNTIME_DIR", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    return tmp_path


def test_written_file_is_private_json(tmp_path):
    path = write_connection_file(info(), tmp_path / "run" / "engine.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    data = json.loads(path.read_text())
    assert {"endpoint", "key", "signature_scheme", "protocol_version", "pid"} <= set(data)
    assert data["signature_scheme"] == "hmac-sha256" and len(data["key"]) == 64
    assert read_connection_file(path) == ConnectionInfo.model_validate(data)


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "engine.json"
    write_connection_file(info(endpoint="tcp://127.0.0.1:1"), path)
    write_connection_file(info(endpoint="tcp://127.0.0.1:2"), path)
    assert read_connection_file(path).endpoint == "tcp://127.0.0.1:2"
    assert os.listdir(tmp_path) == ["engine.json"]


def test_missing_file_says_how_to_start_an_engine(tmp_path):
    with pytest.raises(EngineNotRunning, match="no engine is running; start one with `engine serve`"):
        read_connection_file(tmp_path / "nope.json")


def test_corrupt_file_is_a_typed_error(tmp_path):
    path = tmp_path / "engine.json"
    path.write_text("{not json")
    with pytest.raises(ConnectionFileError, match="not a valid connection file"):
        read_connection_file(path)
    path.write_text(json.dumps({"endpoint": "x"}))
    with pytest.raises(ConnectionFileError):
        read_connection_file(path)


def test_world_readable_file_is_warned_about(tmp_path, caplog):
    path = write_connection_file(info(), tmp_path / "engine.json")
    path.chmod(0o644)
    read_connection_file(path)
    assert "should be mode 0600" in caplog.text


def test_home_resolution(clean_env, monkeypatch):
    tmp = clean_env
    assert default_home() == tmp / "user" / ".local" / "share" / "singan-studio"
    assert connection_file_path() == default_home() / "engine.json"
    runtime = tmp / "xdg-run"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert connection_file_path() == runtime / "singan-studio" / "engine.json"
    monkeypatch.setenv("ENGINE_HOME", str(tmp / "env-home"))
    assert default_home() == tmp / "env-home"
    assert connection_file_path() == tmp / "env-home" / "engine.json"
    assert default_home(tmp / "arg-home") == tmp / "arg-home"  # --home beats the environment
    assert connection_file_path(tmp / "arg-home") == tmp / "arg-home" / "engine.json"


def test_write_and_read_under_home(clean_env):
    home = clean_env / "h"
    path = write_connection_file(info(), home=home)
    assert path == home / "engine.json"
    assert find_engine(home).pid == os.getpid()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_pid_detection(tmp_path):
    assert pid_alive(os.getpid()) and not pid_alive(0) and not pid_alive(-5)
    dead = _dead_pid()
    assert is_stale(info(pid=dead)) and not is_stale(info())
    write_connection_file(info(pid=dead), home=tmp_path)
    with pytest.raises(EngineNotRunning, match=f"pid {dead} is gone"):
        find_engine(tmp_path)
    with pytest.raises(EngineNotRunning, match="start one with `engine serve`"):
        Client.from_connection_file(home=tmp_path)


def test_client_refuses_another_protocol_version(tmp_path):
    write_connection_file(info(protocol_version=99), home=tmp_path)
    with pytest.raises(UnsupportedVersion, match="protocol 99.*newer.*reinstall the plugin"):
        Client.from_connection_file(home=tmp_path)
    # An engine still running from before an update: restarting it is the fix.
    write_connection_file(info(protocol_version=PROTOCOL_VERSION - 1), home=tmp_path)
    with pytest.raises(UnsupportedVersion, match="older.*`engine stop`, then `engine serve`"):
        Client.from_connection_file(home=tmp_path)


def test_remove_only_own_file(tmp_path):
    path = write_connection_file(info(pid=os.getpid()), tmp_path / "engine.json")
    assert not remove_connection_file(path, pid=os.getpid() + 1)  # a newer daemon's file stays
    assert path.exists()
    assert remove_connection_file(path, pid=os.getpid())
    assert not remove_connection_file(path)


def test_keys_are_fresh_and_long():
    assert len({new_key() for _ in range(10)}) == 10
    assert all(len(k) == 64 for k in (new_key(),))


def test_unknown_extra_fields_are_tolerated(tmp_path):
    path = Path(tmp_path / "engine.json")
    path.write_text(json.dumps({**info().model_dump(), "transport": "tcp", "curve_public_key": "x"}))
    os.chmod(path, 0o600)
    assert read_connection_file(path).pid == os.getpid()
    assert connection.NOT_RUNNING.startswith("no engine is running")


def test_reading_while_a_daemon_removes_and_rewrites_the_file(tmp_path):
    """A plugin polling for a restarting engine sees either an engine or "not running", never a crash."""
    import threading
    import time

    path = tmp_path / "engine.json"
    stop = threading.Event()

    def churn() -> None:  # a daemon removing a stale file and writing its own, over and over
        while not stop.is_set():
            write_connection_file(info(), path)
            time.sleep(0)  # (a chance for the reader to find it there: threads switch unevenly)
            path.unlink(missing_ok=True)
            time.sleep(0)

    writer = threading.Thread(target=churn)
    writer.start()
    outcomes: set[str] = set()
    reads, deadline = 0, time.monotonic() + 30
    try:  # at least 20000 reads, and on until both outcomes came (or 30 s)
        while reads < 20000 or (len(outcomes) < 2 and time.monotonic() < deadline):
            reads += 1
            try:
                read_connection_file(path)
                outcomes.add("read")
            except EngineNotRunning:
                outcomes.add("not running")
    finally:
        stop.set()
        writer.join()
    assert outcomes == {"read", "not running"}
