"""The daemon's job manager in-process: what it tells the handlers about work in progress."""

from __future__ import annotations

import threading
import time

from engine.serve.jobs import JobManager, ThreadBudget
from engine.serve.journal import Journal


def test_quick_work_holds_its_model_until_it_ends(tmp_path):
    jobs = JobManager(
        Journal(tmp_path / "jobs.sqlite3"), tmp_path / "jobs", lambda *a, **k: None, ThreadBudget(1)
    )
    jobs.start()
    release, ended = threading.Event(), threading.Event()
    jobs.run_quick(lambda: release.wait(30), holds=("m1", "sample"))
    jobs.run_quick(ended.set, holds=("m1", "harmonize"))  # queued behind the first
    jobs.run_quick(lambda: None)  # holds nothing
    assert sorted(jobs.held("m1")) == ["harmonize", "sample"] and jobs.held("m2") == []
    release.set()
    assert ended.wait(30)
    deadline = time.monotonic() + 10
    while jobs.held("m1"):
        assert time.monotonic() < deadline, jobs.held("m1")
        time.sleep(0.01)
    jobs.shutdown(10)
