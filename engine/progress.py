"""Training progress reports, and one-line progress bars for terminals (training, a command's steps).

Torch-free, so `engine batch` can draw without loading training code.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np


@dataclass
class Progress:
    """One progress report of any family's training; the CLI draws a bar from it and the daemon streams
    it to editors. A family without stages reports its epochs, or one stage."""

    stage: int  # 0-based stage being trained
    n_stages: int
    iteration: int  # iterations done in this stage
    iters: int
    losses: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    eta_s: float | None = None
    # A small current sample (H x W x 3 float in [0, 1], long side <= 128 px) now and then; None in the
    # other reports.
    preview: np.ndarray | None = None

    @property
    def fraction(self) -> float:
        return (self.stage + self.iteration / max(self.iters, 1)) / self.n_stages


ProgressFn = Callable[[Progress], None]


def bar_text(fraction: float, width: int = 28) -> str:
    filled = round(min(max(fraction, 0.0), 1.0) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


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
        self._drawn = False  # a line to end at close

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        done = p.iteration == p.iters
        if not self.enabled or (now - self._last < 0.2 and not done):
            return
        self._last = now
        rec = f"  rec {p.losses['rec']:.4f}" if "rec" in p.losses else ""
        bar = bar_text(p.fraction, self.width)
        line = (
            f"\r{self.label} stage {p.stage + 1}/{p.n_stages} {bar} {p.fraction:4.0%} "
            f"{p.iteration}/{p.iters}  elapsed {_clock(p.elapsed_s)}  left {_clock(p.eta_s)}{rec}"
        )
        self.stream.write(line.ljust(100))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the drawn line (nothing where none was drawn: an error before training says its line alone)."""
        if self._drawn:
            self._drawn = False
            self.stream.write("\n")
            self.stream.flush()


class StepBar:
    """For commands made of a few steps (sample, harmonize, edit, export): steps done of all, what runs now,
    and the time so far. Like ProgressBar it draws only on a terminal, and never when `quiet` (--json)."""

    def __init__(
        self, label: str, total: int, stream: TextIO | None = None, width: int = 28, quiet: bool = False
    ) -> None:
        self.label, self.total, self.width = label, max(1, total), width
        self.stream = stream or sys.stderr
        self.enabled = not quiet and self.stream.isatty()
        self.done, self.what = 0, ""
        self._start = time.monotonic()

    def step(self, what: str) -> None:
        """A new step begins (the one before it, if any, is done)."""
        if self.what:
            self.done += 1
        self.what = what
        self._draw()

    def close(self, finished: bool = True) -> None:
        """End the line; a finished command shows all steps done, a failed one stays where it stopped."""
        if self.what and finished:
            self.done, self.what = self.total, "done"
            self._draw()
        if self.enabled and self.what:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> StepBar:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(finished=exc_type is None)

    def _draw(self) -> None:
        if not self.enabled:
            return
        bar = bar_text(self.done / self.total, self.width)
        elapsed = _clock(time.monotonic() - self._start)
        line = f"\r{self.label} {bar} {self.done}/{self.total} {self.what}  elapsed {elapsed}"
        self.stream.write(line[:100].ljust(100))
        self.stream.flush()
