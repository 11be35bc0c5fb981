"""The connection file through which clients find a running engine: JSON, written atomically, mode 0600."""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import stat
import sys
import tempfile
from pathlib import Path
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict

from editor_bridge.errors import ConnectionFileError, EngineNotRunning
from editor_bridge.protocol import PROTOCOL_VERSION

log = logging.getLogger(__name__)

APP_NAME = "singan-studio"
CONNECTION_FILE_NAME = "engine.json"
HOME_ENV = "ENGINE_HOME"
NOT_RUNNING = "no engine is running; start one with `engine serve`"


class ConnectionInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # newer daemons may add fields

    endpoint: str
    key: str
    signature_scheme: Literal["hmac-sha256"] = "hmac-sha256"
    protocol_version: int = PROTOCOL_VERSION
    pid: int
    engine_version: str = ""


def new_key() -> str:
    """A fresh 256-bit signing key, hex-encoded."""
    return secrets.token_hex(32)


def _explicit_home(home: str | os.PathLike[str] | None) -> Path | None:
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get(HOME_ENV)
    return Path(env).expanduser() if env else None


def default_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Where the engine keeps models, journal and logs: `home`, else $ENGINE_HOME, else the data dir."""
    explicit = _explicit_home(home)
    if explicit is not None:
        return explicit
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / APP_NAME


def runtime_dir(home: str | os.PathLike[str] | None = None) -> Path:
    """Where the connection file lives: under an explicit home, else $XDG_RUNTIME_DIR, else the data dir."""
    explicit = _explicit_home(home)
    if explicit is not None:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    # The runtime dir is per-user, private and cleared at logout: the right place for a key that dies with us.
    if xdg and Path(xdg).is_dir():
        return Path(xdg) / APP_NAME
    return default_home()


def connection_file_path(home: str | os.PathLike[str] | None = None) -> Path:
    return runtime_dir(home) / CONNECTION_FILE_NAME


def write_connection_file(
    info: ConnectionInfo,
    path: str | os.PathLike[str] | None = None,
    *,
    home: str | os.PathLike[str] | None = None,
) -> Path:
    """Write `info` atomically (temp file, fsync, rename) with mode 0600; returns the path."""
    target = Path(path) if path is not None else connection_file_path(home)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = json.dumps(info.model_dump(), indent=2).encode()
    # mkstemp creates the file 0600 from the start, so the key is never readable by others, not even briefly.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_connection_file(
    path: str | os.PathLike[str] | None = None, *, home: str | os.PathLike[str] | None = None
) -> ConnectionInfo:
    """Read the connection file at `path` (default: the one under `home`); EngineNotRunning if absent."""
    target = Path(path) if path is not None else connection_file_path(home)
    try:
        # One open file for both the mode and the text: a daemon starting meanwhile may remove or replace
        # the path between two separate calls.
        with open(target, encoding="utf-8") as f:
            mode = os.fstat(f.fileno()).st_mode
            text = f.read()
    except FileNotFoundError:
        raise EngineNotRunning(f"{NOT_RUNNING} (no connection file at {target})") from None
    except OSError as exc:
        raise ConnectionFileError(
            f"cannot read {target}: {exc.strerror}; check its owner and permissions"
        ) from None
    if sys.platform != "win32" and stat.S_IMODE(mode) & 0o077:
        log.warning(
            "%s is readable by other users; it holds the engine's key and should be mode 0600", target
        )
    try:
        return ConnectionInfo.model_validate(json.loads(text))
    except (ValueError, pydantic.ValidationError) as exc:
        raise ConnectionFileError(
            f"{target} is not a valid connection file ({type(exc).__name__}); restart the engine"
        ) from None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _pid_alive_windows(pid)
    try:
        os.kill(pid, 0)
    except OSError as exc:
        # EPERM: the process exists but belongs to someone else.
        return exc.errno == errno.EPERM
    return True


def _pid_alive_windows(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return False
    kernel32.CloseHandle(handle)
    return True


def is_stale(info: ConnectionInfo) -> bool:
    """True when the file's daemon is gone (crashed or killed without removing its file)."""
    return not pid_alive(info.pid)


def find_engine(home: str | os.PathLike[str] | None = None) -> ConnectionInfo:
    """The running engine's connection info; EngineNotRunning when there is none or its file is stale."""
    info = read_connection_file(home=home)
    if is_stale(info):
        raise EngineNotRunning(f"{NOT_RUNNING} (the engine with pid {info.pid} is gone)")
    return info


def remove_connection_file(
    path: str | os.PathLike[str] | None = None,
    *,
    home: str | os.PathLike[str] | None = None,
    pid: int | None = None,
) -> bool:
    """Remove the file; with `pid`, only when it still names that process (a newer daemon may own it now)."""
    target = Path(path) if path is not None else connection_file_path(home)
    if pid is not None:
        try:
            if read_connection_file(target).pid != pid:
                return False
        except ConnectionFileError:
            return False
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    return True
