"""Jobs: journaled long work on two lanes, so that quick requests never wait behind training.

The `train` lane runs training and fine-tuning one job at a time; the `quick` lane runs inference (harmonize
or edit with a stored model, sample, export) and quick replies. Every job change is journaled before it is
reported; progress, results and errors go to each job's subscribers (one routing id per client) through the
server's thread-safe `send`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import queue
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
import torch

from editor_bridge import frames
from editor_bridge.errors import BridgeError
from editor_bridge.protocol import (
    ChannelOrder,
    Content,
    ErrorCode,
    ErrorReply,
    Header,
    JobInfo,
    JobState,
    ProgressEvent,
    ResultReply,
    content_type,
)
from engine.errors import (
    BadInputError,
    CancelledError,
    EngineError,
    IncompatibleModelError,
    ModelNotFoundError,
    out_of_memory,
)
from engine.files import disk_full_error, is_disk_full, reporting_full_disk
from engine.progress import Progress
from engine.serve.journal import JobRecord, Journal

log = logging.getLogger(__name__)

Identities = tuple[bytes, ...]
SendFn = Callable[..., None]  # BridgeServer.send(identities, content, *, parent=None, buffers=())
TRAIN, QUICK = "train", "quick"
PROGRESS_EVERY_S = 0.2  # at most this often per job, plus each stage's first and last iteration


def error_code(exc: BaseException) -> ErrorCode:
    """The wire code for an exception raised by request validation or by the work itself."""
    if isinstance(exc, BridgeError):
        return exc.code
    if isinstance(exc, CancelledError):
        return ErrorCode.CANCELLED
    if isinstance(exc, ModelNotFoundError):
        return ErrorCode.UNKNOWN_MODEL
    if isinstance(exc, BadInputError | IncompatibleModelError):
        return ErrorCode.INVALID_REQUEST
    if isinstance(exc, EngineError) or out_of_memory(exc) is not None or is_disk_full(exc):
        return ErrorCode.JOB_FAILED
    return ErrorCode.INTERNAL


def error_message(exc: BaseException) -> str:
    if isinstance(exc, BridgeError | EngineError):
        return str(exc)
    if (memory := out_of_memory(exc)) is not None:
        return str(memory)
    if is_disk_full(exc):  # one not already made a DiskFullError where it was met
        where = getattr(exc, "filename", None)
        return (
            str(disk_full_error(where))
            if where
            else "the disk holding the engine's home is full: free some space and try again"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"the engine cannot write {exc.filename or 'to its home'}: check the home folder's permissions"
    return f"internal engine error ({type(exc).__name__}); see the engine log"


class ThreadBudget:
    """Shares the CPU cores between the training lane and quick work.

    torch's intra-op thread count is per calling thread (OpenMP), so the training thread lowers its own
    count to one while quick work runs (checked after every training iteration) and takes all cores back
    afterwards; quick work always runs with all cores.
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self._quick = 0
        self._lock = threading.Lock()

    def quick_started(self) -> None:
        with self._lock:
            self._quick += 1

    def quick_finished(self) -> None:
        with self._lock:
            self._quick -= 1

    def for_training(self) -> int:
        with self._lock:
            return 1 if self._quick else self.threads


@dataclass
class Job:
    job_id: str
    request: Content
    buffers: list[Any]
    created: datetime
    lane: str
    model_id: str | None = None
    state: JobState = JobState.QUEUED
    subscribers: set[Identities] = field(default_factory=set)
    cancel: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False  # cancelled because the daemon stops: resumes on the next start
    progress: ProgressEvent | None = None
    error: ErrorReply | None = None
    last_sent: float = 0.0

    def info(self) -> JobInfo:
        return JobInfo(
            job_id=self.job_id,
            state=self.state,
            request_type=self.request.msg_type,
            created=self.created,
            progress=self.progress,
            error=self.error,
            model_id=self.model_id,
        )


@dataclass
class JobContext:
    """What a job's work function gets: where to write, how to report, when to stop."""

    job: Job
    work_dir: Path
    report: Callable[[Progress], None]

    @property
    def cancel(self) -> threading.Event:
        return self.job.cancel


Runner = Callable[[Job, JobContext], tuple[ResultReply, Sequence[Any]]]


class _Lane:
    def __init__(self, name: str, run: Callable[[Any], None]) -> None:
        self.name = name
        self.queue: queue.Queue[Any] = queue.Queue()
        self._run = run
        self.thread = threading.Thread(target=self._loop, name=f"lane-{name}", daemon=True)

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            self._run(item)


class JobManager:
    """Owns every job: submission, the two lanes, recovery after a restart, cancel, status and shutdown."""

    def __init__(self, journal: Journal, root: Path, send: SendFn, budget: ThreadBudget) -> None:
        self.journal, self.root, self._send, self.budget = journal, root, send, budget
        self.runner: Runner | None = None  # the work of each job type; set before `start`
        self._jobs: dict[str, Job] = {}
        self._held: Counter[tuple[str, str]] = Counter()  # (model id, request type) of queued quick work
        self._lock = threading.Lock()
        self._accepting = True
        self._lanes = {TRAIN: _Lane(TRAIN, self._run_train_item), QUICK: _Lane(QUICK, self._run_quick_item)}

    def start(self) -> None:
        for lane in self._lanes.values():
            lane.thread.start()

    # ---- submission and recovery ----

    def submit(
        self,
        request: Content,
        buffers: Sequence[Any],
        subscriber: Identities,
        lane: str,
        model_id: str | None = None,
    ) -> tuple[Job, int]:
        """Journal a new job (its buffers as files first) and queue it; returns it and its queue position."""
        job_id = "j" + uuid.uuid4().hex[:16]
        files = self.root / job_id
        try:
            _write_frames(files, "buf", buffers)
            record = self.journal.add(job_id, request.msg_type, request.model_dump(mode="json"), len(buffers))
        except BaseException:  # e.g. a full disk: no half-stored job is left behind (the caller replies)
            shutil.rmtree(files, ignore_errors=True)
            raise
        if model_id is not None:
            self.journal.update(job_id, JobState.QUEUED, model_id=model_id)
        job = Job(job_id, request, list(buffers), record.created, lane, model_id, subscribers={subscriber})
        with self._lock:
            self._jobs[job_id] = job
            position = sum(1 for j in self._jobs.values() if j.lane == lane and j.state in _WAITING) - 1
        self._lanes[lane].queue.put(job)
        return job, position

    def recover(self, lane_of: Callable[[Content], str]) -> list[Job]:
        """Queue again every job a previous daemon left queued, running or interrupted (oldest first)."""
        recovered = []
        for record in self.journal.pending():
            try:
                job = self._from_record(record, lane_of)
            except (OSError, ValueError) as exc:
                if isinstance(exc, pydantic.ValidationError):  # a request of an older protocol
                    exc = ValueError("it was sent by an older plugin or engine release: send it again")
                log.error("cannot recover job %s (%s); marking it failed", record.job_id, exc)
                error = {"code": ErrorCode.JOB_FAILED.value, "message": f"lost in a restart: {exc}"}
                self.journal.update(record.job_id, JobState.FAILED, error=error)
                continue
            if record.state is JobState.RUNNING:
                job.state = JobState.INTERRUPTED
                self.journal.update(job.job_id, JobState.INTERRUPTED)
            with self._lock:
                self._jobs[job.job_id] = job
            self._lanes[job.lane].queue.put(job)
            recovered.append(job)
            log.info(
                "recovered job %s (%s, was %s)", job.job_id, record.request_type.value, record.state.value
            )
        return recovered

    def _from_record(self, record: JobRecord, lane_of: Callable[[Content], str]) -> Job:
        cls = content_type(record.request_type.value)
        assert cls is not None
        request = cls.model_validate(record.request)
        buffers = [(self.root / record.job_id / f"buf{i}.bin").read_bytes() for i in range(record.n_buffers)]
        return Job(
            record.job_id, request, buffers, record.created, lane_of(request), record.model_id, record.state
        )

    def run_quick(self, task: Callable[[], None], holds: tuple[str, str] | None = None) -> None:
        """Run `task` (which does its own replying) on the quick lane, never behind training.

        `holds` (model id, request type) marks the model as in use until the task has ended.
        """
        if holds is None:
            self._lanes[QUICK].queue.put(task)
            return
        with self._lock:
            self._held[holds] += 1

        def held_task() -> None:
            try:
                task()
            finally:
                with self._lock:
                    self._held[holds] -= 1
                    if not self._held[holds]:
                        del self._held[holds]

        self._lanes[QUICK].queue.put(held_task)

    # ---- queries and control ----

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def unfinished(self) -> list[Job]:
        """Queued, interrupted and running jobs, oldest first."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.state in _WAITING or j.state is JobState.RUNNING]
        return sorted(jobs, key=lambda j: j.created)

    def active(self) -> list[JobInfo]:
        return [j.info() for j in self.unfinished()]

    def held(self, model_id: str) -> list[str]:
        """The request types of queued or running quick work that uses the model."""
        with self._lock:
            return [kind for (held_id, kind) in self._held if held_id == model_id]

    def subscribe(self, job_id: str, subscriber: Identities) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.subscribers.add(subscriber)
            return job

    def record(self, job_id: str) -> JobRecord | None:
        return self.journal.get(job_id)

    def result_buffers(self, job_id: str, n: int) -> list[bytes]:
        return [(self.root / job_id / f"result{i}.bin").read_bytes() for i in range(n)]

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued or running job; False when it has already ended."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in (*_WAITING, JobState.RUNNING):
                return False
            job.cancel.set()
            queued = job.state in _WAITING
            if queued:
                job.state = JobState.CANCELLED
        if queued:  # the lane skips it when it comes up
            self._fail(job, CancelledError(f"job {job_id} cancelled before it started"))
        return True

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stop taking work; running jobs checkpoint and become `interrupted` (they resume on restart)."""
        with self._lock:
            self._accepting = False
            running = [j for j in self._jobs.values() if j.state is JobState.RUNNING]
        for job in running:
            job.stopping = True
            job.cancel.set()
        for lane in self._lanes.values():
            lane.queue.put(None)
        deadline = time.monotonic() + timeout
        for lane in self._lanes.values():
            if lane.thread.is_alive():
                lane.thread.join(max(0.0, deadline - time.monotonic()))

    # ---- running ----

    def _run_quick_item(self, item: Any) -> None:
        self.budget.quick_started()
        try:
            torch.set_num_threads(self.budget.threads)
            if isinstance(item, Job):
                self._run_job(item)
            else:
                item()
        except Exception:
            log.exception("quick task failed")
        finally:
            self.budget.quick_finished()

    def _run_train_item(self, job: Job) -> None:
        try:
            self._run_job(job)
        except Exception:  # _run_job reports its own failures; this only keeps the lane alive
            log.exception("train lane: job %s", job.job_id)
        finally:
            torch.set_num_threads(self.budget.threads)
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()  # training's peak stays cached otherwise, for the engine's lifetime

    def _run_job(self, job: Job) -> None:
        with self._lock:
            if job.state is JobState.CANCELLED or not self._accepting:
                return  # cancelled while queued, or the daemon stops: it stays queued in the journal
            job.state = JobState.RUNNING
        work_dir = self.root / job.job_id
        context = JobContext(job, work_dir, lambda p: self._progress(job, p))
        start = time.monotonic()
        try:
            self.journal.update(job.job_id, JobState.RUNNING)
            assert self.runner is not None
            result, buffers = self.runner(job, context)
        except CancelledError:
            if job.stopping:
                job.state = JobState.INTERRUPTED
                self.journal.update(job.job_id, JobState.INTERRUPTED)
                log.info("job %s interrupted by shutdown; it resumes on the next start", job.job_id)
                return
            # Not training's own message: it names a --resume folder, and a cancelled job's work is dropped.
            self._fail(job, CancelledError(f"job {job.job_id} was cancelled; its work was discarded"))
            return
        except Exception as exc:
            if not isinstance(exc, BridgeError | EngineError):
                log.exception("job %s failed", job.job_id)
            self._fail(job, exc)
            return
        result = result.model_copy(update={"job_id": job.job_id, "elapsed_s": time.monotonic() - start})
        try:
            _write_frames(work_dir, "result", buffers)
            self.journal.update(
                job.job_id,
                JobState.DONE,
                model_id=result.model.model_id if result.model else None,
                result=result.model_dump(mode="json"),
            )
        except Exception as exc:  # a full disk, say: the client hears it, the lane goes on
            log.exception("job %s: cannot store its result", job.job_id)
            self._fail(job, exc)
            return
        with self._lock:
            job.state = JobState.DONE
            job.model_id = result.model.model_id if result.model else job.model_id
        self._drop_inputs(job)  # the results stay, for a client that asks again
        self.broadcast(job, result, buffers)

    def _fail(self, job: Job, exc: BaseException) -> None:
        """Record and report a failed or cancelled job; its inputs and work go (only an interrupted job
        resumes). Reporting never raises: a journal that cannot be written is logged, and the
        subscribers still hear of the failure."""
        code = error_code(exc)
        state = JobState.CANCELLED if code is ErrorCode.CANCELLED else JobState.FAILED
        error = ErrorReply(code=code, message=error_message(exc), job_id=job.job_id)
        with self._lock:
            job.state, job.error = state, error
        try:
            self.journal.update(job.job_id, state, error=error.model_dump(mode="json"))
        except Exception:
            log.exception("job %s: cannot journal its end (%s)", job.job_id, state.value)
        log.info("job %s %s: %s", job.job_id, state.value, error.message)
        self._drop_inputs(job)
        self.broadcast(job, error)

    def _drop_inputs(self, job: Job) -> None:
        """A finished job's input frames and training work, on disk and in memory; its folder too when
        nothing else (a result) is left in it."""
        work_dir = self.root / job.job_id
        for i in range(len(job.buffers)):
            (work_dir / f"buf{i}.bin").unlink(missing_ok=True)
        for folder in ("model", "finetuned"):
            shutil.rmtree(work_dir / folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: the results stay, for a client that asks again
            work_dir.rmdir()
        job.buffers = []

    def _progress(self, job: Job, p: Progress) -> None:
        if job.lane == TRAIN:
            threads = self.budget.for_training()
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
        buffers: list[Any] = []
        preview = None
        if p.preview is not None:
            rgb = np.ascontiguousarray(np.rint(p.preview * 255).astype(np.uint8))
            preview = frames.attach(buffers, rgb, ChannelOrder.RGB)
        event = ProgressEvent(
            job_id=job.job_id,
            stage=p.stage,
            n_stages=max(1, p.n_stages),
            iteration=p.iteration,
            iters=max(1, p.iters),
            losses={k: float(v) for k, v in p.losses.items()},
            eta_s=p.eta_s,
            preview=preview,
        )
        job.progress = event.model_copy(update={"preview": None})  # status replies carry no frames
        now = time.monotonic()
        # Every stage's first and last iteration, and a preview, always go out; the rest at most every
        # PROGRESS_EVERY_S.
        edge = p.iteration in (1, p.iters)
        if now - job.last_sent >= PROGRESS_EVERY_S or edge or preview is not None:
            job.last_sent = now
            self.broadcast(job, event, buffers)

    def broadcast(
        self, job: Job, content: Content, buffers: Sequence[Any] = (), parent: Header | None = None
    ) -> None:
        with self._lock:
            subscribers = list(job.subscribers)
        for identities in subscribers:
            try:
                self._send(identities, content, parent=parent, buffers=buffers)
            except BridgeError as exc:  # e.g. a result over --max-frame-mb: the client must not wait on
                log.warning("job %s: cannot send %s: %s", job.job_id, content.msg_type.value, exc)
                if isinstance(content, ErrorReply):
                    continue
                error = ErrorReply(
                    code=exc.code, message=f"the result cannot be sent: {exc}", job_id=job.job_id
                )
                try:
                    self._send(identities, error, parent=parent)
                except BridgeError:
                    log.exception("job %s: cannot send the error either", job.job_id)


_WAITING = (JobState.QUEUED, JobState.INTERRUPTED)


def _write_frames(folder: Path, prefix: str, buffers: Sequence[Any]) -> None:
    """A job's frames as files (`{prefix}{i}.bin`); a full disk is one line naming what they need."""
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    with reporting_full_disk(folder, sum(view.nbytes for view in views)):
        folder.mkdir(parents=True, exist_ok=True)
        for i, view in enumerate(views):
            (folder / f"{prefix}{i}.bin").write_bytes(view)
