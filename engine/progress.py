"""A one-line progress bar for terminals, fed by training progress reports."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from engine.training import Progress


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60:02d}:{rem % 60:02d}"


class ProgressBar:
    """Redraws at most a few times a second; draws nothing when the stream is not a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 28) -> None:
        self.label, self.width = label, width
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        done = p.iteration == p.iters
        if not self.enabled or (now - self._last < 0.2 and not done):
            return
        self._last = now
        filled = round(p.fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        rec = f"  rec {p.losses['rec']:.4f}" if "rec" in p.losses else ""
        line = (
            f"\r{self.label} stage {p.stage + 1}/{p.n_stages} [{bar}] {p.fraction:4.0%} "
            f"{p.iteration}/{p.iters}  elapsed {_clock(p.elapsed_s)}  left {_clock(p.eta_s)}{rec}"
        )
        self.stream.write(line.ljust(100))
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
