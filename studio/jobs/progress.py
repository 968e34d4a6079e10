"""The worker's side of the job store: claiming jobs, heartbeats, control requests, engine
events and how a run ended. Every write goes through `redact()`: secrets never reach the file."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Mapping, Sequence

from studio.core.secrets import redact
from studio.core.vocab import (
    ACTIVE_STATUSES, EVENT_CHECKPOINT, EVENT_DONE, EVENT_ERROR, EVENT_START, EVENT_STEP, KIND_TRYIT, QUEUED, STATUSES,
)
from studio.diagnostics import known_code
from studio.jobs.record import Job
from studio.jobs.schema import Database


def slugify(name: str, max_len: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:max_len].strip("-") or "job"


class WorkerSide(Database):
    def claim_next(self, worker_id: str) -> Job | None:
        """Atomically move the next queued job to `running` for this worker: try-it jobs first
        (a few seconds of drawing should not wait behind hours of training), then the oldest."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE status=? ORDER BY kind=? DESC, id LIMIT 1",
                               (QUEUED, KIND_TRYIT)).fetchone()
            if row is None:
                return None
            run_dir = row["run_dir"] or str(self.data_dir / "runs" / f"{row['id']}-{slugify(row['name'])}")
            now = time.time()
            conn.execute(
                "UPDATE jobs SET status='running', worker_id=?, started_at=?, heartbeat_at=?, pid=NULL,"
                " run_dir=?, attempts=attempts+1 WHERE id=?",
                (worker_id, now, now, run_dir, row["id"]),
            )
            return Job.from_row(self._get(conn, row["id"]))

    def active_jobs(self) -> list[Job]:
        marks = ",".join("?" * len(ACTIVE_STATUSES))
        rows = self._conn().execute(f"SELECT * FROM jobs WHERE status IN ({marks}) ORDER BY id",
                                    ACTIVE_STATUSES).fetchall()
        return [Job.from_row(r) for r in rows]

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
        if status not in STATUSES or status in (QUEUED,) + ACTIVE_STATUSES:
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
    if kind == EVENT_START:
        return {"max_steps": event.get("max_steps"), "step": event.get("start_step") or 0}
    if kind == EVENT_STEP:
        return {k: event.get(k) for k in ("step", "max_steps", "loss", "it_s", "eta_s") if k in event}
    if kind == EVENT_CHECKPOINT and event.get("path"):
        return {"last_checkpoint": str(event["path"])}
    if kind == EVENT_ERROR:
        return {"error_code": known_code(event.get("code")), "error_message": event.get("message"),
                "advice": event.get("advice")}
    if kind == EVENT_DONE and isinstance(event.get("files"), list):
        return {"files": json.dumps(event["files"])}
    return {}
