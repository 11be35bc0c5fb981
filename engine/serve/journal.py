"""The job journal: one SQLite row per job, so that queued, running and finished jobs survive a crash.

A job's state changes are committed before they are reported, so what a client was told is never ahead of
what a restarted daemon knows. Request and result bodies are stored as the protocol's JSON; their pixel
buffers live as files in the job's directory (see `jobs.JobFiles`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from editor_bridge.protocol import JobState, MsgType
from engine.errors import EngineError
from engine.files import disk_full_error, is_disk_full, reporting_full_disk

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    request_type TEXT NOT NULL,
    state TEXT NOT NULL,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    request TEXT NOT NULL,
    n_buffers INTEGER NOT NULL DEFAULT 0,
    model_id TEXT,
    error TEXT,
    result TEXT
)
"""

# States in which a job still has work to do; a restarted daemon runs them again.
PENDING = (JobState.QUEUED, JobState.RUNNING, JobState.INTERRUPTED)


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    request_type: MsgType
    state: JobState
    created: datetime
    request: dict
    n_buffers: int
    model_id: str | None = None
    error: dict | None = None  # an ErrorReply's fields
    result: dict | None = None  # a ResultReply's fields


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# Space kept back beside the journal, given up when the disk is full so that the end of a job can still be
# journaled (a job that failed for want of space must not stay `running`). A state change takes a few
# pages of SQLite's write-ahead log; this is room for hundreds.
RESERVE_BYTES = 4 * 2**20


class Journal:
    """A thread-safe handle on HOME/jobs.sqlite3 (WAL mode; every write commits at once)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.reserve = path.with_name(path.name + ".reserve")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.OperationalError as exc:
            self._db.close()
            if is_disk_full(exc):
                raise disk_full_error(path) from None
            raise damaged(path, exc) from None
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise damaged(path, exc) from None
        self._keep_reserve()

    def _keep_reserve(self) -> None:
        """Make the reserve file when it is missing and the disk has room for it twice over."""
        if self.reserve.is_file():
            return
        try:
            if shutil.disk_usage(self.path.parent).free < 2 * RESERVE_BYTES:
                return
            with open(self.reserve, "wb") as f:
                f.write(bytes(RESERVE_BYTES))  # written out, not sparse: the blocks must really be held
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            log.warning("cannot keep a reserve for the journal (%s)", exc)
            self.reserve.unlink(missing_ok=True)

    def _write(self, sql: str, args: tuple) -> None:
        """Run one write. On a full disk the reserve is given up and the write tried once more."""
        with self._lock:
            try:
                self._db.execute(sql, args)
                return
            except sqlite3.OperationalError as exc:
                if not is_disk_full(exc) or not self.reserve.is_file():
                    raise
            log.warning("the disk holding %s is full: giving up its reserve to journal a job", self.path)
            self.reserve.unlink(missing_ok=True)
            self._db.execute(sql, args)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, job_id: str, request_type: MsgType, request: dict, n_buffers: int) -> JobRecord:
        created = _now()
        with self._lock, reporting_full_disk(self.path):
            # New work is refused on a full disk (the reserve is only for ending jobs), and brings the
            # reserve back once there is room again.
            self._db.execute(
                "INSERT INTO jobs (job_id, request_type, state, created, updated, request, n_buffers) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, request_type.value, JobState.QUEUED.value, created, created, json.dumps(request),
                 n_buffers),
            )  # fmt: skip
        self._keep_reserve()
        return JobRecord(
            job_id, request_type, JobState.QUEUED, datetime.fromisoformat(created), request, n_buffers
        )

    def update(
        self,
        job_id: str,
        state: JobState,
        *,
        model_id: str | None = None,
        error: dict | None = None,
        result: dict | None = None,
    ) -> None:
        self._write(
            "UPDATE jobs SET state = ?, updated = ?, model_id = COALESCE(?, model_id), "
            "error = COALESCE(?, error), result = COALESCE(?, result) WHERE job_id = ?",
            (
                state.value,
                _now(),
                model_id,
                json.dumps(error) if error is not None else None,
                json.dumps(result) if result is not None else None,
                job_id,
            ),
        )

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return _record(row) if row else None

    def pending(self) -> list[JobRecord]:
        """Jobs with work left, oldest first."""
        with self._lock:
            return _pending(self._db)

    def recent(self, limit: int = 50) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs ORDER BY created DESC LIMIT ?", (limit,)
            ).fetchall()
        return [_record(r) for r in rows]


_COLUMNS = "job_id, request_type, state, created, request, n_buffers, model_id, error, result"


def _pending(db: sqlite3.Connection) -> list[JobRecord]:
    marks = ",".join("?" * len(PENDING))
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM jobs WHERE state IN ({marks}) ORDER BY created", [s.value for s in PENDING]
    ).fetchall()
    return [_record(r) for r in rows]


def read_pending(path: Path) -> list[JobRecord]:
    """The jobs with work left in the journal at `path`, for `engine status` without a daemon; [] if none.

    Opened read-write but never created or written to: a read-only connection would leave SQLite's -wal and
    -shm files behind in the home, where this one folds them back on closing.
    """
    if not path.is_file():
        return []
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)
    try:
        return _pending(db)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # nothing was ever journaled
            return []
        raise damaged(path, exc) from None
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from None
    finally:
        db.close()


def damaged(path: Path, exc: Exception) -> EngineError:
    return EngineError(
        f"the job journal {path} is unreadable ({exc}): move it aside (the jobs it lists are lost; "
        "models are not) and start the engine again"
    )


# Request types of protocol 3, journaled by an older engine: what they became in protocol 4.
_OLDER_TYPES = {
    "harmonize": MsgType.APPLY,
    "edit": MsgType.APPLY,
    "sample": MsgType.APPLY,
    "export_onnx": MsgType.APPLY,
    "finetune": MsgType.TRAIN,
}


def _record(row: tuple) -> JobRecord:
    job_id, request_type, state, created, request, n_buffers, model_id, error, result = row
    return JobRecord(
        job_id=job_id,
        request_type=_OLDER_TYPES.get(request_type) or MsgType(request_type),
        state=JobState(state),
        created=datetime.fromisoformat(created),
        request=json.loads(request),
        n_buffers=n_buffers,
        model_id=model_id,
        error=json.loads(error) if error else None,
        result=json.loads(result) if result else None,
    )
