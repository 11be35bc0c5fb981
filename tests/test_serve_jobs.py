"""The daemon's job manager in-process: what it tells the handlers about work in progress."""

from __future__ import annotations

import errno
import sqlite3
import threading
import time

import pytest

from editor_bridge.protocol import ApplyRequest, ErrorReply, JobState, MsgType, ProgressEvent, ResultReply
from engine.errors import CancelledError
from engine.progress import Progress
from engine.serve.jobs import TRAIN, JobManager, ThreadBudget
from engine.serve.journal import Journal


def _export(model_id: str) -> ApplyRequest:
    return ApplyRequest(operation="export", model_id=model_id)


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


class _FullDisk(Journal):
    """A journal on a disk that fills up for one job: every write about it fails."""

    doomed: set[str] = set()

    def update(self, job_id, *args, **kwargs):
        if job_id in self.doomed:
            raise sqlite3.OperationalError("database or disk is full")
        return super().update(job_id, *args, **kwargs)


def _manager(tmp_path, journal, runner):
    sent = []
    jobs = JobManager(
        journal, tmp_path / "jobs", lambda ids, content, **k: sent.append(content), ThreadBudget(1)
    )
    jobs.runner = runner
    jobs.start()
    return jobs, sent


def _wait_for(sent, n, timeout=30):
    deadline = time.monotonic() + timeout
    while len(sent) < n:
        assert time.monotonic() < deadline, sent
        time.sleep(0.01)


def test_a_full_disk_fails_the_job_with_advice_and_the_lane_goes_on(tmp_path):
    journal = _FullDisk(tmp_path / "jobs.sqlite3")

    marked = threading.Event()

    def runner(job, context):
        assert marked.wait(30)  # not before the test has filled the disk
        if job.job_id in journal.doomed:
            raise OSError(errno.ENOSPC, "No space left on device", str(context.work_dir / "checkpoint"))
        return ResultReply(path="done"), []

    jobs, sent = _manager(tmp_path, journal, runner)
    first, _ = jobs.submit(_export("m1"), [b"x" * 1024], (b"client",), TRAIN)
    journal.doomed.add(first.job_id)  # the disk fills up once the job is queued
    marked.set()
    _wait_for(sent, 1)
    assert isinstance(sent[0], ErrorReply) and "disk holding the engine's home is full" in sent[0].message
    assert first.state is JobState.FAILED and first.buffers == []
    assert not (tmp_path / "jobs" / first.job_id / "buf0.bin").exists()
    second, _ = jobs.submit(_export("m2"), [], (b"client",), TRAIN)
    _wait_for(sent, 2)  # the train lane survived
    assert isinstance(sent[1], ResultReply) and second.state is JobState.DONE
    jobs.shutdown(10)


def test_a_cancelled_job_lets_go_of_its_input_frames(tmp_path):
    started = threading.Event()

    def runner(job, context):
        started.set()
        job.cancel.wait(30)
        raise CancelledError("cancelled")

    jobs, sent = _manager(tmp_path, Journal(tmp_path / "jobs.sqlite3"), runner)
    job, _ = jobs.submit(_export("m1"), [b"x" * 4096], (b"client",), TRAIN)
    (tmp_path / "jobs" / job.job_id / "model" / "checkpoint").mkdir(parents=True)
    assert started.wait(30) and jobs.cancel(job.job_id)
    _wait_for(sent, 1)
    assert isinstance(sent[0], ErrorReply) and job.state is JobState.CANCELLED
    assert job.buffers == [] and not (tmp_path / "jobs" / job.job_id).exists()  # no empty folder either
    # Not training's "continue with --resume DIR": the daemon has dropped that folder.
    assert sent[0].message == f"job {job.job_id} was cancelled; its work was discarded"
    jobs.shutdown(10)


def test_a_job_that_cannot_be_stored_leaves_nothing_behind(tmp_path):
    class Unwritable(Journal):
        def add(self, *args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

    jobs, _ = _manager(tmp_path, Unwritable(tmp_path / "jobs.sqlite3"), lambda job, context: None)
    with pytest.raises(sqlite3.OperationalError):
        jobs.submit(_export("m1"), [b"x" * 1024], (b"client",), TRAIN)
    assert list((tmp_path / "jobs").iterdir()) == [] and jobs.active() == []
    jobs.shutdown(10)


def test_progress_is_thinned_but_each_stage_start_and_end_go_out(tmp_path):
    def runner(job, context):
        for stage in range(2):
            for iteration in range(1, 501):  # far faster than one report per PROGRESS_EVERY_S
                context.report(Progress(stage=stage, n_stages=2, iteration=iteration, iters=500))
        return ResultReply(path="done"), []

    jobs, sent = _manager(tmp_path, Journal(tmp_path / "jobs.sqlite3"), runner)
    jobs.submit(_export("m1"), [], (b"client",), TRAIN)
    _wait_for(sent, 1)
    deadline = time.monotonic() + 30
    while not isinstance(sent[-1], ResultReply):
        assert time.monotonic() < deadline, sent
        time.sleep(0.01)
    events = [(e.stage, e.iteration) for e in sent if isinstance(e, ProgressEvent)]
    assert {(0, 1), (0, 500), (1, 1), (1, 500)} <= set(events)
    assert len(events) < 100, len(events)  # thinned: 1000 reports in well under a second
    jobs.shutdown(10)


def test_a_job_journaled_by_an_older_release_fails_with_what_to_do(tmp_path):
    """Protocol 3 journaled `harmonize`, `export_onnx`... requests: after an upgrade they are read (as the
    apply requests they became) and marked failed, not resumed, and the daemon starts."""
    journal = Journal(tmp_path / "jobs.sqlite3")
    journal.add("j" + "0" * 16, MsgType.APPLY, {"model_id": "m1", "fp16": False}, 0)
    journal._db.execute("UPDATE jobs SET request_type = 'export_onnx'")
    journal._db.commit()
    jobs, _ = _manager(tmp_path, journal, lambda job, context: None)
    assert jobs.recover(lambda request: TRAIN) == []
    record = journal.get("j" + "0" * 16)
    assert record is not None and record.request_type is MsgType.APPLY and record.state is JobState.FAILED
    assert record.error["message"].endswith("sent by an older plugin or engine release: send it again")
    jobs.shutdown(10)
