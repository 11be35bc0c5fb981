"""Writing files so that a crash or a full disk never leaves half of one, and a full disk is one line.

Every file the engine makes (images, weights, model.json, checkpoints, exported graphs, job frames) goes
through `atomic_write_bytes` or `write_files`: the bytes are made in memory first, written to a temporary
file beside the target and renamed over it. When the disk is full (or a quota is reached), the temporary
file is removed and the error says which file system and how much to free.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import DiskFullError

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _default_file_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _default_file_mode()  # what open() would give a new file: mkstemp's 0600 is not for results


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` is a write refused for want of space: ENOSPC/EDQUOT, or SQLite's SQLITE_FULL."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mount_point(path: Path) -> Path:
    path = _existing(path.resolve())
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def disk_full_error(path: str | os.PathLike[str], needed: int | None = None) -> DiskFullError:
    """The one-line error for a write of `needed` bytes (when known) to `path` that found its disk full."""
    path = Path(path)
    try:
        free = shutil.disk_usage(_existing(path)).free
        mount = _mount_point(path)
    except OSError:
        free, mount = None, None
    where = f"{mount} (writing {path})" if mount is not None else str(path)
    if needed is not None and free is not None:
        # At least a megabyte: file systems keep some blocks back, and the numbers move meanwhile.
        amount = f"free at least {max(1, math.ceil((needed - free) / 1e6))} MB"
    else:
        amount = "free some space"
    return DiskFullError(where, amount)


@contextmanager
def reporting_full_disk(path: str | os.PathLike[str], needed: int | None = None) -> Iterator[None]:
    """Turn a full disk met inside the block into `disk_full_error(path, needed)`."""
    try:
        yield
    except DiskFullError:
        raise
    except (OSError, sqlite3.OperationalError) as exc:
        if not is_disk_full(exc):
            raise
        raise disk_full_error(path, needed) from exc


def user_cache(name: str) -> Path:
    """The engine's folder `name` in the user's cache ($XDG_CACHE_HOME, else ~/.cache), as it is now."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "singan-studio" / name


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` through a temporary file and a rename: the old file or the new, never half.

    A full disk raises DiskFullError, with the temporary file removed.
    """
    path = Path(path)
    size = memoryview(data).nbytes
    created = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    with reporting_full_disk(path, size):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                os.fchmod(fd, FILE_MODE)
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except BaseException:
            for folder in created:  # the folders made for it, innermost first: a failed write leaves none
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise


def write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Write several files into `directory`, in order: all of them, or none (those already written are
    removed again when one fails). A full disk names the space the whole set needs."""
    written: list[Path] = []
    try:
        for name, data in files.items():
            atomic_write_bytes(directory / name, data)
            written.append(directory / name)
    except BaseException as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, DiskFullError):
            needed = sum(memoryview(data).nbytes for data in files.values())
            raise disk_full_error(directory, needed) from exc
        raise
