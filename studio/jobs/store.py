"""The job store: one SQLite file (`<data>/studio.db`) shared by the UI and the worker.

The UI writes jobs and control requests here; the worker claims jobs, copies the engine's
`metrics.jsonl` events in, and records how each run ended (studio/jobs/progress.py). The file's
schema and connection rules are in studio/jobs/schema.py. A job's config is checked against
`TrainConfig` when the job is created, so the worker and the UI read a typed record
(studio/jobs/record.py) instead of guessing defaults. Secrets never reach the file: every write
goes through `redact()`.

This package must stay import-light (no torch): the UI imports it at start-up.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from studio.config import TrainConfig
from studio.core.secrets import redact
from studio.core.vocab import ACTIVE_STATUSES, JOB_KINDS, KIND_REPORT, KIND_TRAIN, KIND_TRYIT, RESUMABLE_STATUSES, SUCCEEDED
from studio.jobs.progress import WorkerSide
from studio.jobs.record import Job, validated_config


class JobStateError(ValueError):
    """The job exists but is in a status where the requested action makes no sense."""


class JobStore(WorkerSide):
    """Jobs and their events in `<data_dir>/studio.db`. Safe to share across threads and forks."""

    # -- creating jobs

    def create_job(
        self,
        name: str,
        config: TrainConfig | Mapping[str, Any],
        *,
        parent_job_id: int | None = None,
        resume_from: str | None = None,
        retry_tier: bool = False,
        kind: str = KIND_TRAIN,
        request: Mapping[str, Any] | None = None,
        run_dir: str | None = None,
    ) -> int:
        """Queue a new job. `config` must be a valid TrainConfig (or its dict): a ConfigError names
        each wrong key. `resume_from` seeds it from another run's checkpoint directory."""
        if not name or not name.strip():
            raise ValueError("a job needs a non-empty name")
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}; the worker runs {', '.join(JOB_KINDS)}")
        config_text = yaml.safe_dump(validated_config(config).to_dict(), sort_keys=False, allow_unicode=True)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO jobs (name, config, created_at, parent_job_id, resume, resume_from,"
                " retry_tier, kind, request, run_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (redact(name.strip()), config_text, time.time(), parent_job_id, int(resume_from is not None),
                 resume_from, int(retry_tier), kind, json.dumps(redact(dict(request or {}))), run_dir),
            )
            return int(cursor.lastrowid)

    def create_tryit(self, source_job_id: int, lora: str, prompt: str, strength: float, seed: int,
                     image: str = "") -> int:
        """Queue a try-it job: draw `prompt` with and without `lora` (a file of the finished run
        `source_job_id`), on that run's base model and sample settings; for an edit LoRA `image` is
        the picture to edit. It writes into `<run>/tryit/<job id>/` and is listed, cancelled and
        deleted like any job."""
        source = self.job(source_job_id)
        if source.config is None:
            raise JobStateError(f"job {source_job_id} has settings this studio cannot read: {source.config_problem}")
        if not source.run_dir:
            raise JobStateError(f"job {source_job_id} never ran; it has no LoRA to try")
        request = {"source_job_id": source_job_id, "lora": str(lora), "prompt": prompt,
                   "strength": float(strength), "seed": int(seed)}
        if image:
            request["image"] = str(image)
        job_id = self.create_job(f"try {source.name}", source.config, parent_job_id=source_job_id,
                                 kind=KIND_TRYIT, request=request)
        with self._write() as conn:
            conn.execute("UPDATE jobs SET run_dir=? WHERE id=?",
                         (str(Path(source.run_dir) / "tryit" / str(job_id)), job_id))
        return job_id

    def create_report(self, source_job_id: int) -> int:
        """Queue a report card for the succeeded training job `source_job_id`: its kept checkpoints
        and final LoRA at several strengths (studio/report_card.py). The job's events and log go to
        `<run>/report-jobs/<job id>/`, the grids to `<run>/report/`."""
        source = self.job(source_job_id)
        if source.kind != KIND_TRAIN or source.status != SUCCEEDED or not source.run_dir:
            raise JobStateError(f"job {source_job_id} is a {source.status} {source.kind} job; "
                                "only a training job that succeeded has a report card")
        if source.config is None:
            raise JobStateError(f"job {source_job_id} has settings this studio cannot read: {source.config_problem}")
        waiting = [j.id for j in self.jobs(("queued",) + ACTIVE_STATUSES)
                   if j.kind == KIND_REPORT and j.parent_job_id == source_job_id]
        if waiting:
            raise JobStateError(f"job {source_job_id} already has a report card on the way (job {waiting[0]})")
        job_id = self.create_job(f"report {source.name}", source.config, parent_job_id=source_job_id,
                                 kind=KIND_REPORT, request={"source_job_id": source_job_id})
        with self._write() as conn:
            conn.execute("UPDATE jobs SET run_dir=? WHERE id=?",
                         (str(Path(source.run_dir) / "report-jobs" / str(job_id)), job_id))
        return job_id

    def rerun_with(self, job_id: int, config: TrainConfig | Mapping[str, Any]) -> int:
        """A new job (same name, fresh start) with an edited config; the old job is kept."""
        return self.create_job(self.job(job_id).name, config, parent_job_id=job_id)

    def duplicate(self, job_id: int) -> int:
        job = self.job(job_id)
        if job.kind != KIND_TRAIN:
            raise JobStateError(f"job {job_id} is a {job.kind} job; only training jobs are duplicated")
        return self.create_job(f"{job.name} (copy)", job.config)

    # -- reading

    def job(self, job_id: int) -> Job:
        return Job.from_row(self._get(self._conn(), job_id))

    def jobs(self, statuses: Sequence[str] | None = None) -> list[Job]:
        """All jobs, newest first (optionally only those in `statuses`)."""
        sql, params = "SELECT * FROM jobs", ()
        if statuses:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            params = tuple(statuses)
        return [Job.from_row(r) for r in self._conn().execute(sql + " ORDER BY id DESC", params).fetchall()]

    def get_job(self, job_id: int) -> dict[str, Any]:
        """`job(job_id)` as a plain dict (config as a dict)."""
        return self.job(job_id).as_dict()

    def list_jobs(self, statuses: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """`jobs(statuses)` as plain dicts, newest first."""
        return [j.as_dict() for j in self.jobs(statuses)]

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

    # -- requests from the UI

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
            row = self._get(conn, job_id)
            if row["kind"] != KIND_TRAIN:
                raise JobStateError(f"job {job_id} is a {row['kind']} job; only training jobs {what}")
            if row["status"] != "running":
                raise JobStateError(f"job {job_id} is {row['status']}; it can only {what} while running")
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
            # Never delete outside <data>/runs, whatever the row says: a run folder, or a try-it
            # or report-job folder inside one.
            inside = target.parent == runs_root or (target.parent.name in ("tryit", "report-jobs")
                                                    and target.parent.parent.parent == runs_root)
            if inside and target.is_dir():
                shutil.rmtree(target)
