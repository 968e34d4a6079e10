"""The job store: one SQLite file (`<data>/studio.db`) shared by the UI and the worker.

The UI writes jobs and control requests here; the worker claims jobs, copies the engine's
`metrics.jsonl` events in, and records how each run ended. Rules that keep it safe under
concurrent processes and crashes (see HARDENING_NOTES §5):

- WAL mode (readers never block the writer) and a busy timeout.
- Every read-then-write runs inside `BEGIN IMMEDIATE`: a deferred transaction that upgrades
  from read to write gets SQLITE_BUSY at once, whatever the busy timeout says.
- One connection per thread and process, opened lazily; a connection is never used across
  `fork` (the owning pid is checked on every use).
- Secrets never reach the file: every write goes through `redact()`.

This module must stay import-light (no torch): the UI imports it at start-up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from studio.core.secrets import REDACTED, redact  # noqa: F401  (re-exported)
from studio.core.vocab import (  # noqa: F401  (re-exported)
    ACTIVE_STATUSES, RESUMABLE_STATUSES, STATUSES, next_lower_tier,
)
from studio.diagnostics import known_code


BUSY_TIMEOUT_MS = 30_000

# Each entry upgrades the schema by one version; never edit an entry once released,
# append a new one instead.
MIGRATIONS: list[str] = [
    # 1: jobs and their engine events
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN
            ('queued','running','stopping','succeeded','failed','cancelled','interrupted')),
        resume INTEGER NOT NULL DEFAULT 0,
        resume_from TEXT,
        step INTEGER NOT NULL DEFAULT 0,
        max_steps INTEGER,
        it_s REAL,
        eta_s REAL,
        loss REAL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        heartbeat_at REAL,
        pid INTEGER,
        worker_id TEXT,
        run_dir TEXT,
        exit_code INTEGER,
        error_code TEXT,
        error_message TEXT,
        advice TEXT,
        files TEXT NOT NULL DEFAULT '[]',
        last_checkpoint TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        parent_job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        retry_tier INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        sample_requested INTEGER NOT NULL DEFAULT 0,
        save_requested INTEGER NOT NULL DEFAULT 0,
        events_offset INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_by_status ON jobs(status, id);
    CREATE TABLE events (
        job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        time REAL NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (job_id, seq)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class JobNotFound(KeyError):
    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return self.args[0]


class JobStateError(ValueError):
    """The job exists but is in a status where the requested action makes no sense."""


# --------------------------------------------------------------------------- helpers


def slugify(name: str, max_len: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:max_len].strip("-") or "job"


def _dump_config(config: Mapping[str, Any]) -> str:
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    try:
        return yaml.safe_dump(redact(dict(config)), sort_keys=False, allow_unicode=True)
    except yaml.YAMLError as exc:
        raise ValueError(f"config cannot be written as YAML: {exc}") from None


def _row_to_job(row: sqlite3.Row) -> dict[str, Any]:
    job = dict(row)
    job["config"] = yaml.safe_load(job["config"]) or {}
    job["files"] = json.loads(job["files"])
    for flag in ("resume", "retry_tier", "cancel_requested", "sample_requested", "save_requested"):
        job[flag] = bool(job[flag])
    return job


# --------------------------------------------------------------------------- the store


class JobStore:
    """Jobs and their events in `<data_dir>/studio.db`. Safe to share across threads and forks."""

    def __init__(self, data_dir: str | os.PathLike[str]):
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.data_dir / "studio.db"
        self._local = threading.local()
        self._migrate()

    # -- connections and transactions

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so that every write
        # transaction is IMMEDIATE, never Python's default DEFERRED.
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode never corrupts the file; a power cut can only lose the last commits.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            # Opened before a fork (or never): start fresh. The inherited object is kept alive
            # on purpose so it is never closed in this process (sqlite howtocorrupt §2.6).
            if getattr(local, "conn", None) is not None:
                _ABANDONED_AFTER_FORK.append(local.conn)
            local.conn = self._connect()
            local.pid = os.getpid()
        return local.conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path} has schema version {version} but this studio only knows up to "
                    f"{SCHEMA_VERSION}; upgrade the studio or use another data folder"
                )
            for script in MIGRATIONS[version:]:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        return self._conn().execute("SELECT version FROM schema_version").fetchone()[0]

    def integrity_check(self) -> str:
        return self._conn().execute("PRAGMA integrity_check").fetchone()[0]

    def _get(self, conn: sqlite3.Connection, job_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"job {job_id} does not exist")
        return row

    # -- UI API

    def create_job(
        self,
        name: str,
        config: Mapping[str, Any],
        *,
        parent_job_id: int | None = None,
        resume_from: str | None = None,
        retry_tier: bool = False,
    ) -> int:
        """Queue a new job. `resume_from` seeds it from another run's checkpoint directory."""
        if not name or not name.strip():
            raise ValueError("a job needs a non-empty name")
        config_text = _dump_config(config)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (name, config, created_at, parent_job_id, resume, resume_from,"
                " retry_tier) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (redact(name.strip()), config_text, time.time(), parent_job_id,
                 int(resume_from is not None), resume_from, int(retry_tier)),
            )
            return int(cursor.lastrowid)

    def list_jobs(self, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """All jobs, newest first (optionally only those in `statuses`)."""
        sql, params = "SELECT * FROM jobs", ()
        if statuses:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            params = tuple(statuses)
        rows = self._conn().execute(sql + " ORDER BY id DESC", params).fetchall()
        return [_row_to_job(r) for r in rows]

    def get_job(self, job_id: int) -> dict[str, Any]:
        return _row_to_job(self._get(self._conn(), job_id))

    def events(self, job_id: int, types: Sequence[str] | None = None, since_seq: int = 0) -> list[dict[str, Any]]:
        """Engine events of a job after `since_seq`, each shaped like its metrics.jsonl line
        plus `seq` (pass the last seq seen to poll only what is new)."""
        sql = "SELECT seq, type, time, data FROM events WHERE job_id = ? AND seq > ?"
        params: tuple[Any, ...] = (job_id, since_seq)
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params += tuple(types)
        rows = self._conn().execute(sql + " ORDER BY seq", params).fetchall()
        return [{**json.loads(r["data"]), "seq": r["seq"], "type": r["type"], "time": r["time"]} for r in rows]

    def request_cancel(self, job_id: int) -> str:
        """Queued jobs are cancelled at once; running ones move to `stopping` and the worker
        asks the engine to checkpoint and stop. Returns the new status."""
        with self._write() as conn:
            status = self._get(conn, job_id)["status"]
            if status == "queued":
                conn.execute("UPDATE jobs SET status='cancelled', finished_at=? WHERE id=?", (time.time(), job_id))
                return "cancelled"
            if status in ACTIVE_STATUSES:
                conn.execute("UPDATE jobs SET status='stopping', cancel_requested=1 WHERE id=?", (job_id,))
                return "stopping"
            raise JobStateError(f"job {job_id} is already {status}; nothing to cancel")

    def request_sample(self, job_id: int) -> None:
        self._request_flag(job_id, "sample_requested", "generate samples")

    def request_save(self, job_id: int) -> None:
        self._request_flag(job_id, "save_requested", "save a checkpoint")

    def _request_flag(self, job_id: int, column: str, what: str) -> None:
        with self._write() as conn:
            status = self._get(conn, job_id)["status"]
            if status != "running":
                raise JobStateError(f"job {job_id} is {status}; it can only {what} while running")
            conn.execute(f"UPDATE jobs SET {column}=1 WHERE id=?", (job_id,))

    def resume(self, job_id: int) -> None:
        """Re-queue an interrupted, cancelled or failed job to continue from its last checkpoint."""
        with self._write() as conn:
            row = self._get(conn, job_id)
            if row["status"] not in RESUMABLE_STATUSES:
                raise JobStateError(f"job {job_id} is {row['status']}; only interrupted, cancelled or failed jobs resume")
            if not row["last_checkpoint"]:
                raise JobStateError(f"job {job_id} has no checkpoint to resume from; re-run it instead")
            conn.execute(
                "UPDATE jobs SET status='queued', resume=1, pid=NULL, worker_id=NULL, finished_at=NULL,"
                " exit_code=NULL, error_code=NULL, error_message=NULL, advice=NULL,"
                " cancel_requested=0, sample_requested=0, save_requested=0 WHERE id=?",
                (job_id,),
            )

    def rerun_with(self, job_id: int, config: Mapping[str, Any]) -> int:
        """A new job (same name, fresh start) with an edited config; the old job is kept."""
        return self.create_job(self.get_job(job_id)["name"], config, parent_job_id=job_id)

    def duplicate(self, job_id: int) -> int:
        job = self.get_job(job_id)
        return self.create_job(f"{job['name']} (copy)", job["config"])

    def delete(self, job_id: int, delete_files: bool = True) -> None:
        """Remove a job and its events; with `delete_files`, also its run folder."""
        with self._write() as conn:
            row = self._get(conn, job_id)
            if row["status"] in ACTIVE_STATUSES:
                raise JobStateError(f"job {job_id} is {row['status']}; cancel it and wait before deleting")
            conn.execute("DELETE FROM events WHERE job_id=?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id=?", (job_id,))
        run_dir = row["run_dir"]
        if delete_files and run_dir:
            runs_root = (self.data_dir / "runs").resolve()
            target = Path(run_dir).resolve()
            # Never delete outside <data>/runs, whatever the row says.
            if target.parent == runs_root and target.is_dir():
                shutil.rmtree(target)

    # -- worker API

    def claim_next(self, worker_id: str) -> dict[str, Any] | None:
        """Atomically move the oldest queued job to `running` for this worker."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE status='queued' ORDER BY id LIMIT 1").fetchone()
            if row is None:
                return None
            run_dir = row["run_dir"] or str(self.data_dir / "runs" / f"{row['id']}-{slugify(row['name'])}")
            now = time.time()
            conn.execute(
                "UPDATE jobs SET status='running', worker_id=?, started_at=?, heartbeat_at=?, pid=NULL,"
                " run_dir=?, attempts=attempts+1 WHERE id=?",
                (worker_id, now, now, run_dir, row["id"]),
            )
            return _row_to_job(self._get(conn, row["id"]))

    def active_jobs(self) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM jobs WHERE status IN ('running','stopping') ORDER BY id").fetchall()
        return [_row_to_job(r) for r in rows]

    def set_pid(self, job_id: int, pid: int | None) -> None:
        with self._write() as conn:
            conn.execute("UPDATE jobs SET pid=?, heartbeat_at=? WHERE id=?", (pid, time.time(), job_id))

    def heartbeat(self, job_id: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE jobs SET heartbeat_at=? WHERE id=?", (time.time(), job_id))

    def take_control_requests(self, job_id: int) -> dict[str, bool]:
        """Pending sample/save requests (cleared here) and whether a cancel is pending (kept,
        because the worker must remember it until the child exits)."""
        row = self._get(self._conn(), job_id)
        if row["sample_requested"] or row["save_requested"]:
            # Write only when there is something to clear: this runs on every worker poll.
            with self._write() as conn:
                row = self._get(conn, job_id)
                conn.execute("UPDATE jobs SET sample_requested=0, save_requested=0 WHERE id=?", (job_id,))
        return {"cancel": bool(row["cancel_requested"]), "sample": bool(row["sample_requested"]),
                "save": bool(row["save_requested"])}

    def append_events(self, job_id: int, events: Sequence[Mapping[str, Any]], events_offset: int | None = None) -> None:
        """Store engine events (in order) and update the job's progress columns from them.
        `events_offset` records how far into metrics.jsonl the worker has read."""
        with self._write() as conn:
            job = self._get(conn, job_id)
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id=?", (job_id,)).fetchone()[0]
            progress: dict[str, Any] = {}
            for event in events:
                event = redact(dict(event))
                kind = str(event.pop("type", "unknown"))
                when = float(event.pop("time", time.time()) or time.time())
                seq += 1
                conn.execute("INSERT INTO events (job_id, seq, type, time, data) VALUES (?, ?, ?, ?, ?)",
                             (job_id, seq, kind, when, json.dumps(event, default=str)))
                progress.update(_progress_from_event(kind, event))
            if events_offset is not None:
                progress["events_offset"] = events_offset
            if progress:
                sets = ", ".join(f"{column}=?" for column in progress)
                conn.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*progress.values(), job["id"]))

    def finish(
        self,
        job_id: int,
        status: str,
        *,
        exit_code: int | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        advice: str | None = None,
        files: Sequence[str] | None = None,
    ) -> None:
        """Record how a run ended. Clears the pid and pending control requests."""
        if status not in STATUSES or status in ("queued",) + ACTIVE_STATUSES:
            raise ValueError(f"finish() needs a final status, got {status!r}")
        with self._write() as conn:
            job = self._get(conn, job_id)
            conn.execute(
                "UPDATE jobs SET status=?, exit_code=?, error_code=?, error_message=?, advice=?, files=?,"
                " finished_at=?, pid=NULL, resume_from=NULL,"
                " cancel_requested=0, sample_requested=0, save_requested=0 WHERE id=?",
                (status, exit_code, redact(error_code), redact(error_message), redact(advice),
                 json.dumps(redact(list(files)) if files is not None else json.loads(job["files"])),
                 time.time(), job_id),
            )


def _progress_from_event(kind: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """Which job columns an engine event updates (docs/architecture.md, Events)."""
    if kind == "start":
        return {"max_steps": event.get("max_steps"), "step": event.get("start_step") or 0}
    if kind == "step":
        return {k: event.get(k) for k in ("step", "max_steps", "loss", "it_s", "eta_s") if k in event}
    if kind == "checkpoint" and event.get("path"):
        return {"last_checkpoint": str(event["path"])}
    if kind == "error":
        return {"error_code": known_code(event.get("code")), "error_message": event.get("message"),
                "advice": event.get("advice")}
    if kind == "done" and isinstance(event.get("files"), list):
        return {"files": json.dumps(event["files"])}
    return {}


# Connections inherited through fork; referenced so that they are never closed in the child.
_ABANDONED_AFTER_FORK: list[sqlite3.Connection] = []
