"""The worker: the one process per data folder that owns the studio's child processes.

It claims queued jobs from the job store one at a time, runs each as a child process in its
own session (training: `python -m studio train`, or `accelerate launch` for several GPUs;
try-it: studio/jobs/tryit.py; report card: studio/jobs/report.py — see studio/jobs/kinds.py) so
a crash or OOM cannot take the worker or the UI down, copies the child's metrics.jsonl into the store, turns UI requests into
control files, and records how each run ended (studio/jobs/outcomes.py). On start-up it
reconciles jobs left running by a previous worker that died; on SIGTERM/SIGINT it lets the child
checkpoint, marks the job `interrupted`, exits. While it runs, the modification time of its
lock file is its heartbeat (`worker_alive`).

No torch import here: the worker only manages processes and files.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from studio.core.secrets import redact
from studio.core.vocab import CANCELLED, EVENT_WARNING, FAILED, INTERRUPTED, KIND_REPORT, KIND_TRAIN, KIND_TRYIT, SUCCEEDED
from studio.diagnostics import CATALOGUE
from studio.jobs import outcomes
from studio.jobs.kinds import ReportKind, TrainKind, TryItKind
from studio.jobs.process import HEARTBEAT_EVERY, lock_holder, pid_runs_in, signal_group, start_heartbeat, try_lock
from studio.jobs.record import Job
from studio.jobs.store import JobStore

DEFAULT_CANCEL_TIMEOUT = 60.0
DEFAULT_GRACE_SECONDS = 8.0  # Spaces give ~10 s between SIGTERM and SIGKILL (HARDENING_NOTES §3)


class WorkerAlreadyRunning(RuntimeError):
    pass


def grace_seconds_from_env() -> float:
    value = os.environ.get("STUDIO_GRACE_SECONDS")
    if not value:
        return DEFAULT_GRACE_SECONDS
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"STUDIO_GRACE_SECONDS must be a number of seconds, got {value!r}") from None


def log(message: str) -> None:
    """One line to stderr (worker.log when started by the app); secrets masked."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} worker: {redact(message)}", file=sys.stderr, flush=True)


def package_root() -> str:
    """The checkout this worker runs from: children import the same code through PYTHONPATH."""
    return str(Path(__file__).resolve().parents[2])


def child_env(gpus: Sequence[int] | None) -> dict[str, str]:
    """A child's environment: this process's, the checkout importable, `gpus` the visible devices."""
    env = dict(os.environ)  # HF_TOKEN, if the studio was given one, reaches the child here
    env.pop("STUDIO_DATA", None)  # the data folder travels as --data-dir: one source of truth
    env["PYTHONUNBUFFERED"] = "1"  # so train.log is current when we quote its tail
    # `-m studio` must import this same checkout even when it is not pip-installed.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root(), env.get("PYTHONPATH", "")) if p)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return env


def install_stop_handlers(handler) -> dict[int, Any]:
    """SIGTERM and SIGINT call `handler` (in the main thread only); returns the handlers they replace."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


class Worker:
    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        train_command: Sequence[str] | None = None,
        poll_interval: float = 0.5,
        gpus: Sequence[int] | None = None,
        *,
        cancel_timeout: float = DEFAULT_CANCEL_TIMEOUT,
        grace_seconds: float | None = None,
        tryit_command: Sequence[str] | None = None,
        report_command: Sequence[str] | None = None,
    ):
        """`train_command` replaces `[python, -m, studio, train]` and `tryit_command`
        `[python, -m, studio.jobs.tryit]`, `report_command` `[python, -m, studio.jobs.report]`
        (tests use stand-ins); `gpus` limits the devices given
        to children (CUDA_VISIBLE_DEVICES)."""
        self.data_dir = Path(data_dir).resolve()
        self.store = JobStore(self.data_dir)
        self.kinds = {KIND_TRAIN: TrainKind(self.data_dir, train_command),
                      KIND_TRYIT: TryItKind(self.data_dir, tryit_command),
                      KIND_REPORT: ReportKind(self.data_dir, report_command)}
        self.poll_interval = poll_interval
        self.gpus = list(gpus) if gpus is not None else None
        self.cancel_timeout = cancel_timeout
        self.grace_seconds = grace_seconds_from_env() if grace_seconds is None else grace_seconds
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._lock_fd: int | None = None
        self._beating = threading.Event()
        self._reconciled = False
        self._stop = False  # set by SIGTERM/SIGINT
        self._child: subprocess.Popen | None = None
        self._child_terminated_at: float | None = None

    # -- lifecycle

    def acquire(self) -> None:
        """Take the data folder's lock, start the heartbeat, reconcile what a previous worker left."""
        if self._lock_fd is None:
            fd = try_lock(self.data_dir)
            if fd is None:
                raise WorkerAlreadyRunning(
                    f"another worker (pid {lock_holder(self.data_dir)}) already serves {self.data_dir}; "
                    "stop it first or use another --data-dir"
                )
            self._lock_fd, self._beating = fd, threading.Event()
            start_heartbeat(fd, self._beating)
            log(f"serving {self.data_dir} (pid {os.getpid()})")
        if not self._reconciled:
            self.reconcile()
            self._reconciled = True

    def release(self) -> None:
        if self._lock_fd is not None:
            self._beating.set()
            os.close(self._lock_fd)  # closing the fd drops the flock
            self._lock_fd = None

    def run_forever(self) -> int:
        """Serve the queue until SIGTERM/SIGINT. Returns the process exit code."""
        # Handlers first: a SIGTERM during reconciliation must not kill us half-way through.
        previous = install_stop_handlers(self._on_stop_signal)
        try:
            self.acquire()
            while not self._stop:
                if self.run_once() is None:
                    time.sleep(self.poll_interval)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.release()
        return 0

    def run_once(self) -> int | None:
        """Claim the next queued job and run it to the end. Returns its id, or None."""
        self.acquire()
        job = self.store.claim_next(self.worker_id)
        if job is None:
            return None
        self._run_job(job)
        return job.id

    def stop(self) -> None:
        """Ask `run_forever` to return, exactly as SIGTERM does: a running child gets SIGTERM
        (the engine checkpoints) and its job becomes `interrupted`."""
        self._on_stop_signal(signal.SIGTERM, None)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._stop = True
        child = self._child
        if child is not None and child.poll() is None and self._child_terminated_at is None:
            # The engine checkpoints on SIGTERM and exits 4; _supervise waits `grace_seconds`.
            signal_group(child.pid, signal.SIGTERM)
            self._child_terminated_at = time.monotonic()

    # -- start-up reconciliation

    def reconcile(self) -> None:
        """Jobs marked running/stopping belong to a worker that died (we hold the lock now)."""
        reconcile(self.store, self.grace_seconds)

    # -- running one job

    def command_for(self, job: Job, config_path: Path, run_dir: Path) -> list[str]:
        """The child's argv. Only paths and flags: secrets travel by environment, never argv."""
        return self.kinds[job.kind].command(job, config_path, run_dir)

    def child_env(self) -> dict[str, str]:
        return child_env(self.gpus)

    def _start_child(self, job: Job) -> tuple[subprocess.Popen, Path]:
        run_dir = Path(job.run_dir)
        (run_dir / "control").mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "control").iterdir():  # requests meant for an earlier attempt
            stale.unlink()
        kind = self.kinds[job.kind]
        input_path = kind.prepare(job, run_dir)
        num_gpus = job.config.memory.num_gpus if job.kind == KIND_TRAIN else 1
        if self.gpus is not None and num_gpus > len(self.gpus):
            raise RuntimeError(f"the job asks for {num_gpus} GPUs but this worker has {len(self.gpus)}")
        with open(run_dir / "train.log", "ab") as child_log:
            child = subprocess.Popen(
                self.command_for(job, input_path, run_dir), stdin=subprocess.DEVNULL, stdout=child_log,
                stderr=subprocess.STDOUT, env=self.child_env(), start_new_session=True,
            )
        return child, run_dir

    def _run_job(self, job: Job) -> None:
        kind = self.kinds[job.kind]
        if job.config is None:  # stored by an older studio whose settings this one cannot read
            self.store.finish(job.id, FAILED, error_code="CONFIG_INVALID",
                              error_message=f"the job's settings are not valid: {job.config_problem}",
                              advice=CATALOGUE["CONFIG_INVALID"].advice)
            return
        try:
            child, run_dir = self._start_child(job)
        except Exception as exc:
            self.store.finish(job.id, FAILED, error_code="SPAWN_FAILED",
                              error_message=f"could not start {kind.activity}: {exc}",
                              advice=CATALOGUE["SPAWN_FAILED"].advice)
            log(f"job {job.id} failed to start: {exc}")
            return
        self._child, self._child_terminated_at = child, None
        if self._stop:  # a stop signal arrived between claim and spawn
            self._on_stop_signal(signal.SIGTERM, None)
        try:
            self.store.set_pid(job.id, child.pid)
            log(f"job {job.id} started (pid {child.pid}, run folder {run_dir})")
            forced = self._supervise(job, child, run_dir)
            self._ingest_metrics(job.id, run_dir)
            outcomes.record_exit(self.store, self.store.job(job.id), kind, child.returncode, run_dir, forced=forced,
                                 shutting_down=self._child_terminated_at is not None)
            ended = self.store.job(job.id)
            if job.kind == KIND_TRYIT and ended.status != SUCCEEDED:
                _tryit_status(run_dir, ended)
            log(f"job {job.id} {ended.status} (exit code {child.returncode})"
                + (f": {ended.error_message}" if ended.status != SUCCEEDED and ended.error_message else ""))
        finally:
            self._child = None

    def _supervise(self, job: Job, child: subprocess.Popen, run_dir: Path) -> bool:
        """Poll until the child exits; returns True if it had to be SIGKILLed."""
        control = run_dir / "control"
        # Training checkpoints when it sees the cancel flag; a try-it draw has nothing to save.
        cancel_timeout = self.cancel_timeout if job.kind == KIND_TRAIN else 0.0
        cancel_at: float | None = None
        cancel_sigterm_at: float | None = None
        forced = False
        last_beat = 0.0
        while child.poll() is None:
            now = time.monotonic()
            self._ingest_metrics(job.id, run_dir)
            requests = self.store.take_control_requests(job.id)
            for name in ("sample", "save"):
                if requests[name]:
                    (control / name).touch()
            if requests["cancel"] and cancel_at is None:
                (control / "cancel").touch()
                cancel_at = now
            if cancel_at is not None and cancel_sigterm_at is None and now - cancel_at >= cancel_timeout:
                signal_group(child.pid, signal.SIGTERM)  # the child ignored the flag file
                cancel_sigterm_at = now
            sigterm_at = self._child_terminated_at or cancel_sigterm_at
            if sigterm_at is not None and now - sigterm_at > self.grace_seconds and not forced:
                signal_group(child.pid, signal.SIGKILL)
                forced = True
            if now - last_beat > HEARTBEAT_EVERY:
                self.store.heartbeat(job.id)
                last_beat = now
            time.sleep(self.poll_interval)
        # Reap anything of the group still alive (e.g. accelerate workers after a launcher crash).
        signal_group(child.pid, signal.SIGKILL)
        return forced

    def _ingest_metrics(self, job_id: int, run_dir: Path) -> None:
        ingest_metrics(self.store, job_id, run_dir)


def reconcile(store: JobStore, grace_seconds: float) -> None:
    """Stop any orphaned child of a dead worker still running, copy its last events, and mark
    its job `interrupted` (or `cancelled` if the user had asked to cancel)."""
    for job in store.active_jobs():
        run_dir = job.run_dir
        orphan_alive = bool(job.pid and run_dir and pid_runs_in(job.pid, run_dir))
        if orphan_alive:
            signal_group(job.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_seconds
            while time.monotonic() < deadline and pid_runs_in(job.pid, run_dir):
                time.sleep(0.05)
            if pid_runs_in(job.pid, run_dir):
                signal_group(job.pid, signal.SIGKILL)
        if run_dir:
            ingest_metrics(store, job.id, Path(run_dir))
        job = store.job(job.id)
        log(f"job {job.id} was {job.status} when the previous worker died; reconciled")
        where = f" (last checkpoint: {job.last_checkpoint})" if job.last_checkpoint else " (no checkpoint yet)"
        if job.cancel_requested:
            store.finish(job.id, CANCELLED, error_message="cancelled while the worker was down" + where)
        else:
            reason = "its process was stopped" if orphan_alive else "its process was gone"
            store.finish(job.id, INTERRUPTED, error_code="WORKER_RESTARTED",
                         error_message=f"the worker restarted and {reason}{where}",
                         advice=outcomes.RESUME_ADVICE if job.last_checkpoint else None)


def _tryit_status(run_dir: Path, job: Job) -> None:
    """The Results tab polls status.json: say how a try-it ended when its child could not."""
    status = run_dir / "status.json"
    if job.status == CANCELLED or not status.is_file():
        status.write_text(json.dumps({"state": "failed", "error": job.error_message or job.status}))


def ingest_metrics(store: JobStore, job_id: int, run_dir: Path) -> None:
    """Copy new complete lines of metrics.jsonl into the store (offset kept in the store)."""
    path = run_dir / "metrics.jsonl"
    offset = store.job(job_id).events_offset
    try:
        if path.stat().st_size < offset:
            offset = 0  # the file was recreated
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return
    end = chunk.rfind(b"\n") + 1  # a partly written last line waits for the next poll
    if end == 0:
        return
    events = []
    for line in chunk[:end].splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = {"type": EVENT_WARNING, "code": "BAD_METRICS_LINE",
                     "message": f"unreadable metrics line: {line[:200].decode('utf-8', 'replace')}"}
        if isinstance(event, dict):
            events.append(event)
    store.append_events(job_id, events, events_offset=offset + end)
