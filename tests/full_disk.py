"""A real small file system (tmpfs) that tests fill up, to see what the engine does when a disk is full."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def free(self) -> int:
        return shutil.disk_usage(self.path).free

    def fill(self, leave: int = 0) -> None:
        """Take all the free space but `leave` bytes (rounded down to whole pages by tmpfs)."""
        with open(self.filler, "ab") as f:
            while (room := self.free() - leave) > 0:
                try:
                    f.write(bytes(min(room, 1 << 20)))
                    f.flush()
                except OSError:
                    break

    def empty(self) -> None:
        self.filler.unlink(missing_ok=True)

    def files(self) -> list[str]:
        """Every file and folder on the disk but the filler, relative to it."""
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p != self.filler)


@contextlib.contextmanager
def small_disk(where: Path, size: str = "8m") -> Iterator[SmallDisk]:
    """Mount a tmpfs of `size` at `where` (as root; the test is skipped, saying why, where it cannot)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system to fill needs root (CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield SmallDisk(where)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
