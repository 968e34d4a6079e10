"""The worker: the one process per data folder that owns training processes.

It claims queued jobs from the job store one at a time, runs each as a child process
(`python -m studio train`, or `accelerate launch` for several GPUs) in its own session so a
crash or OOM cannot take the worker or the UI down, copies the child's metrics.jsonl into the
store, turns UI requests into control files, and records how each run ended
(docs/architecture.md). On start-up it reconciles jobs left running by a previous worker
that died; on SIGTERM/SIGINT it lets the child checkpoint, marks the job `interrupted`, exits.

No torch import here: the worker only manages processes and files.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import yaml

from studio.diagnostics import CATALOGUE, known_code
from studio.core.paths import DATA_DIR_HELP, data_dir
from studio.core.secrets import redact
from studio.core.vocab import EXIT_CANCELLED, EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_OOM, next_lower_tier
from studio.jobs import JobStore

DEFAULT_CANCEL_TIMEOUT = 60.0
DEFAULT_GRACE_SECONDS = 8.0  # Spaces give ~10 s between SIGTERM and SIGKILL (HARDENING_NOTES §3)
HEARTBEAT_EVERY = 2.0
LOG_TAIL_CHARS = 2000



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


# --------------------------------------------------------------------------- the lock


def try_lock(data_dir: Path) -> int | None:
    """Take `data_dir/worker.lock`; return its fd, or None if another process holds it.

    flock is released by the kernel when the holder dies, even by kill -9, so a stale lock
    can never block a restart. The fd is not inherited by children (Python's default), so an
    orphaned training child cannot keep holding it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "worker.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _lock_holder(data_dir: Path) -> str:
    try:
        return (data_dir / "worker.lock").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- helpers


def _get(config: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _pid_runs_in(pid: int, run_dir: str) -> bool:
    """True if `pid` is alive, not a zombie, and its command line names `run_dir` — i.e. it
    is an orphaned training child of ours and not an unrelated process that reused the pid."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state != "Z" and os.fsencode(run_dir) in cmdline


def _signal_group(pid: int, sig: int) -> None:
    # The child leads its own session (start_new_session), so its pgid is its pid and this
    # reaches accelerate's per-GPU processes too.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _log_tail(run_dir: Path) -> str:
    try:
        with open(run_dir / "train.log", "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - LOG_TAIL_CHARS))
            text = handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-15:])


def validate_lora(path: Path) -> str | None:
    """None if `path` is a valid LoRA file, else what is wrong with it."""
    from studio.lora_files import validate_lora_file  # imports torch: only once a run has ended

    if not path.is_file():
        return f"{path.name} is missing"
    try:
        validate_lora_file(path)  # raises on anything a loader would refuse
    except Exception as exc:  # any parse error means the file is unusable
        return f"{path.name} is not a valid LoRA file: {exc}"
    return None


# --------------------------------------------------------------------------- the worker


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
    ):
        """`train_command` replaces `[python, -m, studio, train]` (tests use a fake trainer);
        `gpus` limits the devices given to children (CUDA_VISIBLE_DEVICES)."""
        self.data_dir = Path(data_dir).resolve()
        self.store = JobStore(self.data_dir)
        self.train_command = list(train_command) if train_command else None
        self.poll_interval = poll_interval
        self.gpus = list(gpus) if gpus is not None else None
        self.cancel_timeout = cancel_timeout
        self.grace_seconds = grace_seconds_from_env() if grace_seconds is None else grace_seconds
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._lock_fd: int | None = None
        self._reconciled = False
        self._stop = False  # set by SIGTERM/SIGINT
        self._child: subprocess.Popen | None = None
        self._child_terminated_at: float | None = None

    # -- lifecycle

    def acquire(self) -> None:
        """Take the data folder's lock and reconcile what a previous worker left behind."""
        if self._lock_fd is None:
            fd = try_lock(self.data_dir)
            if fd is None:
                raise WorkerAlreadyRunning(
                    f"another worker (pid {_lock_holder(self.data_dir)}) already serves {self.data_dir}; "
                    "stop it first or use another --data-dir"
                )
            self._lock_fd = fd
            log(f"serving {self.data_dir} (pid {os.getpid()})")
        if not self._reconciled:
            self.reconcile()
            self._reconciled = True

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the fd drops the flock
            self._lock_fd = None

    def run_forever(self) -> int:
        """Serve the queue until SIGTERM/SIGINT. Returns the process exit code."""
        # Handlers first: a SIGTERM during reconciliation must not kill us half-way through.
        previous = self._install_signal_handlers()
        try:
            self.acquire()
            while not self._stop:
                if self.run_once() is None:
                    time.sleep(self.poll_interval)
        finally:
            self._restore_signal_handlers(previous)
            self.release()
        return 0

    def run_once(self) -> int | None:
        """Claim the oldest queued job and run it to the end. Returns its id, or None."""
        self.acquire()
        job = self.store.claim_next(self.worker_id)
        if job is None:
            return None
        self._run_job(job)
        return job["id"]

    def stop(self) -> None:
        """Ask `run_forever` to return, exactly as SIGTERM does: a running child gets SIGTERM
        (the engine checkpoints) and its job becomes `interrupted`."""
        self._on_stop_signal(signal.SIGTERM, None)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._stop = True
        child = self._child
        if child is not None and child.poll() is None and self._child_terminated_at is None:
            # The engine checkpoints on SIGTERM and exits 4; _supervise waits `grace_seconds`.
            _signal_group(child.pid, signal.SIGTERM)
            self._child_terminated_at = time.monotonic()

    # -- start-up reconciliation

    def reconcile(self) -> None:
        """Jobs marked running/stopping belong to a worker that died (we hold the lock now).
        Stop any orphaned child still training, copy its last events, and mark the job
        `interrupted` (or `cancelled` if the user had asked to cancel)."""
        for job in self.store.active_jobs():
            run_dir = Path(job["run_dir"]) if job["run_dir"] else None
            pid = job["pid"]
            orphan_alive = bool(pid and run_dir and _pid_runs_in(pid, str(run_dir)))
            if orphan_alive:
                _signal_group(pid, signal.SIGTERM)
                deadline = time.monotonic() + self.grace_seconds
                while time.monotonic() < deadline and _pid_runs_in(pid, str(run_dir)):
                    time.sleep(0.05)
                if _pid_runs_in(pid, str(run_dir)):
                    _signal_group(pid, signal.SIGKILL)
            if run_dir:
                self._ingest_metrics(job["id"], run_dir)
            job = self.store.get_job(job["id"])
            log(f"job {job['id']} was {job['status']} when the previous worker died; reconciled")
            where = f" (last checkpoint: {job['last_checkpoint']})" if job["last_checkpoint"] else " (no checkpoint yet)"
            if job["cancel_requested"]:
                self.store.finish(job["id"], "cancelled", error_message="cancelled while the worker was down" + where)
            else:
                reason = "its process was stopped" if orphan_alive else "its process was gone"
                self.store.finish(
                    job["id"], "interrupted",
                    error_code="WORKER_RESTARTED",
                    error_message=f"the worker restarted and {reason}{where}",
                    advice="resume the job to continue from its last checkpoint" if job["last_checkpoint"] else None,
                )

    # -- running one job

    def command_for(self, job: dict[str, Any], config_path: Path, run_dir: Path) -> list[str]:
        """The child's argv. Only paths and flags: secrets travel by environment, never argv."""
        tail = [str(config_path), "--run-dir", str(run_dir)] + (["--resume"] if job["resume"] else [])
        if self.train_command is not None:
            return self.train_command + tail
        num_gpus = int(_get(job["config"], "memory.num_gpus", 1) or 1)
        if num_gpus > 1:
            return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
                    "--num_processes", str(num_gpus),
                    "-m", "studio", "train"] + tail
        return [sys.executable, "-m", "studio", "train"] + tail

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)  # HF_TOKEN, if the studio was given one, reaches the child here
        env["PYTHONUNBUFFERED"] = "1"  # so train.log is current when we quote its tail
        # `-m studio` must import this same checkout even when it is not pip-installed.
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        if self.gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in self.gpus)
        return env

    def _prepare_run_dir(self, job: dict[str, Any]) -> tuple[Path, Path]:
        run_dir = Path(job["run_dir"])
        (run_dir / "control").mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "control").iterdir():  # requests meant for an earlier attempt
            stale.unlink()
        config_path = run_dir / "config.yaml"
        config_path.write_text(yaml.safe_dump(redact(job["config"]), sort_keys=False, allow_unicode=True))
        source = job.get("resume_from")
        if source and Path(source).is_dir():
            # An OOM retry starts in a new run folder from its parent's checkpoint.
            target = run_dir / "checkpoints" / Path(source).name
            if not target.exists():
                shutil.copytree(source, target)
        return run_dir, config_path

    def _run_job(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        try:
            run_dir, config_path = self._prepare_run_dir(job)
            num_gpus = int(_get(job["config"], "memory.num_gpus", 1) or 1)
            if self.gpus is not None and num_gpus > len(self.gpus):
                raise RuntimeError(f"the job asks for {num_gpus} GPUs but this worker has {len(self.gpus)}")
            with open(run_dir / "train.log", "ab") as train_log:
                child = subprocess.Popen(
                    self.command_for(job, config_path, run_dir), stdin=subprocess.DEVNULL, stdout=train_log,
                    stderr=subprocess.STDOUT, env=self.child_env(), start_new_session=True,
                )
        except Exception as exc:
            self.store.finish(job_id, "failed", error_code="SPAWN_FAILED",
                              error_message=f"could not start training: {exc}",
                              advice=CATALOGUE["SPAWN_FAILED"].advice)
            log(f"job {job_id} failed to start: {exc}")
            return
        self._child, self._child_terminated_at = child, None
        if self._stop:  # a stop signal arrived between claim and spawn
            self._on_stop_signal(signal.SIGTERM, None)
        try:
            self.store.set_pid(job_id, child.pid)
            log(f"job {job_id} started (pid {child.pid}, run folder {run_dir})")
            forced = self._supervise(job_id, child, run_dir)
            self._ingest_metrics(job_id, run_dir)
            self._record_exit(self.store.get_job(job_id), child.returncode, run_dir, forced)
            ended = self.store.get_job(job_id)
            log(f"job {job_id} {ended['status']} (exit code {child.returncode})"
                + (f": {ended['error_message']}" if ended["status"] != "succeeded" and ended["error_message"] else ""))
        finally:
            self._child = None

    def _supervise(self, job_id: int, child: subprocess.Popen, run_dir: Path) -> bool:
        """Poll until the child exits; returns True if it had to be SIGKILLed."""
        control = run_dir / "control"
        cancel_at: float | None = None
        cancel_sigterm_at: float | None = None
        forced = False
        last_beat = 0.0
        while child.poll() is None:
            now = time.monotonic()
            self._ingest_metrics(job_id, run_dir)
            requests = self.store.take_control_requests(job_id)
            for name in ("sample", "save"):
                if requests[name]:
                    (control / name).touch()
            if requests["cancel"] and cancel_at is None:
                (control / "cancel").touch()
                cancel_at = now
            if cancel_at is not None and cancel_sigterm_at is None and now - cancel_at > self.cancel_timeout:
                _signal_group(child.pid, signal.SIGTERM)  # the engine ignored the flag file
                cancel_sigterm_at = now
            sigterm_at = self._child_terminated_at or cancel_sigterm_at
            if sigterm_at is not None and now - sigterm_at > self.grace_seconds and not forced:
                _signal_group(child.pid, signal.SIGKILL)
                forced = True
            if now - last_beat > HEARTBEAT_EVERY:
                self.store.heartbeat(job_id)
                last_beat = now
            time.sleep(self.poll_interval)
        # Reap anything of the group still alive (e.g. accelerate workers after a launcher crash).
        _signal_group(child.pid, signal.SIGKILL)
        return forced

    def _ingest_metrics(self, job_id: int, run_dir: Path) -> None:
        """Copy new complete lines of metrics.jsonl into the store (offset kept in the store)."""
        path = run_dir / "metrics.jsonl"
        offset = self.store.get_job(job_id)["events_offset"]
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
                event = {"type": "warning", "code": "BAD_METRICS_LINE",
                         "message": f"unreadable metrics line: {line[:200].decode('utf-8', 'replace')}"}
            if isinstance(event, dict):
                events.append(event)
        self.store.append_events(job_id, events, events_offset=offset + end)

    def _record_exit(self, job: dict[str, Any], code: int, run_dir: Path, forced: bool) -> None:
        job_id, finish = job["id"], self.store.finish
        error_events = self.store.events(job_id, types=["error"])
        # Only errors of this attempt count: an earlier attempt's error must not be reported.
        last_error = next((e for e in reversed(error_events) if e["time"] >= (job["started_at"] or 0)), None)
        done = next(iter(self.store.events(job_id, types=["done"])[-1:]), None)
        checkpoint = f" Last checkpoint: {job['last_checkpoint']}." if job["last_checkpoint"] else ""

        def failure_message(default: str) -> str:
            if last_error and last_error.get("message"):
                return str(last_error["message"])
            tail = _log_tail(run_dir)
            return f"{default}. Last lines of train.log:\n{tail}" if tail else default

        if code == EXIT_OK:
            problem = self._check_outputs(run_dir, done)
            if problem is None:
                files = [str(f) for f in (done or {}).get("files", [])] or _top_level_loras(run_dir)
                finish(job_id, "succeeded", exit_code=code, files=files)
            else:
                finish(job_id, "failed", exit_code=code, error_code="INVALID_OUTPUT",
                       error_message=f"training exited normally but {problem}",
                       advice=CATALOGUE["INVALID_OUTPUT"].advice)
        elif self._child_terminated_at is not None and not job["cancel_requested"]:
            how = "was killed after the grace period" if forced else "stopped"
            finish(job_id, "interrupted", exit_code=code, error_code="WORKER_SHUTDOWN",
                   error_message=f"the worker was shutting down and the training process {how}.{checkpoint}",
                   advice="resume the job to continue from its last checkpoint")
        elif job["cancel_requested"]:
            message = "cancelled" + (" (forced: it did not stop in time)" if forced or code < 0 else "")
            finish(job_id, "cancelled", exit_code=code, error_message=message + "." + checkpoint)
        elif code == EXIT_CANCELLED:
            finish(job_id, "cancelled", exit_code=code, error_message="cancelled." + checkpoint)
        elif code == EXIT_INTERRUPTED:
            finish(job_id, "interrupted", exit_code=code, error_code="INTERRUPTED",
                   error_message="training was interrupted by a signal." + checkpoint,
                   advice="resume the job to continue from its last checkpoint")
        elif code == EXIT_OOM:
            self._record_oom(job, failure_message("out of GPU memory"))
        elif code in (EXIT_FAILED, EXIT_CONFIG):
            default = "training failed" if code == EXIT_FAILED else "invalid config or command line"
            # Without an error event: a crash before the engine could report (INTERNAL), or a
            # command line / config refused before training (CONFIG_INVALID).
            fallback = "INTERNAL" if code == EXIT_FAILED else "CONFIG_INVALID"
            finish(job_id, "failed", exit_code=code,
                   error_code=known_code((last_error or {}).get("code") or fallback),
                   error_message=failure_message(default),
                   advice=(last_error or {}).get("advice") or CATALOGUE[fallback].advice)
        elif code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            hint = " (the system may have run out of RAM)" if -code == signal.SIGKILL else ""
            finish(job_id, "failed", exit_code=code, error_code="KILLED",
                   error_message=f"the training process was killed by {name}{hint}.{checkpoint}",
                   advice=CATALOGUE["KILLED"].advice)
        else:
            finish(job_id, "failed", exit_code=code, error_code="PROCESS_EXITED",
                   error_message=failure_message(f"training exited with unexpected code {code}"),
                   advice=CATALOGUE["PROCESS_EXITED"].advice)

    def _record_oom(self, job: dict[str, Any], message: str) -> None:
        config = job["config"]
        tier = _get(config, "memory.tier")
        lower = next_lower_tier(tier)
        if lower:
            advice = f"Out of GPU memory at memory tier '{tier}'. Try the next lower tier: '{lower}'."
        else:
            advice = (f"Out of GPU memory at memory tier '{tier}', and there is no lower tier. "
                      "Lower the resolution, batch size or LoRA rank, or use a larger GPU.")
        self.store.finish(job["id"], "failed", exit_code=EXIT_OOM, error_code="OUT_OF_MEMORY",
                          error_message=message, advice=advice)
        if lower and _get(config, "memory.auto_retry_lower_tier") is True:
            retry_config = json.loads(json.dumps(config))
            retry_config.setdefault("memory", {})["tier"] = lower
            checkpoint = job["last_checkpoint"]
            resume_from = str(Path(job["run_dir"]) / checkpoint) if checkpoint else None
            self.store.create_job(job["name"], retry_config, parent_job_id=job["id"],
                                  resume_from=resume_from, retry_tier=True)

    @staticmethod
    def _check_outputs(run_dir: Path, done: dict[str, Any] | None) -> str | None:
        """None when both LoRA files exist and validate, else what is wrong."""
        listed = [run_dir / f for f in (done or {}).get("files", [])] or [run_dir / f for f in _top_level_loras(run_dir)]
        loras = [p for p in listed if p.suffix == ".safetensors"]
        if len(loras) < 2:
            return f"only {len(loras)} of the 2 LoRA files were written"
        problems = [p for p in (validate_lora(path) for path in loras) if p]
        return "; ".join(problems) if problems else None


def _top_level_loras(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("*.safetensors"))


# --------------------------------------------------------------------------- entry points


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="studio worker", description="Run the background training worker.")
    _add_arguments(parser)
    return _run_from_args(parser.parse_args(argv))


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between checks")
    parser.add_argument("--gpus", default=None, help="comma-separated GPU indices to use (default: all)")
    parser.add_argument("--cancel-timeout", type=float, default=DEFAULT_CANCEL_TIMEOUT,
                        help="seconds a cancelled job may take to stop before it gets SIGTERM")


def _run_from_args(args: argparse.Namespace) -> int:
    gpus = [int(g) for g in args.gpus.split(",")] if args.gpus else None
    try:
        worker = Worker(data_dir(args.data_dir), poll_interval=args.poll_interval, gpus=gpus, cancel_timeout=args.cancel_timeout)
        return worker.run_forever()
    except WorkerAlreadyRunning as exc:
        print(f"studio worker: {exc}", file=sys.stderr)
        return 1


def add_worker_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register `studio worker` on the main CLI's subparsers."""
    parser = subparsers.add_parser("worker", help="run the background training worker for a data folder")
    _add_arguments(parser)
    parser.set_defaults(func=_run_from_args)
    return parser


UI_FIRST_NICENESS = 10


def ensure_worker(data_dir: str | os.PathLike[str]) -> subprocess.Popen | None:
    """Start a background worker for `data_dir` unless one already holds its lock."""
    data_dir = Path(data_dir).resolve()
    fd = try_lock(data_dir)
    if fd is None:
        return None
    os.close(fd)  # the worker takes it; if another app wins the race, ours exits with a message
    # The worker keeps the app's cwd (relative paths in configs mean the same to both) and
    # finds this checkout through PYTHONPATH; the HF token, if any, rides in the environment.
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    with open(data_dir / "worker.log", "ab") as worker_log:
        child = subprocess.Popen(
            [sys.executable, "-m", "studio.worker", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
    # Training shares the machine with the page: at a lower CPU priority (inherited by the jobs it
    # starts) it yields to the UI's short bursts of work and loses almost nothing itself.
    try:
        os.setpriority(os.PRIO_PROCESS, child.pid, UI_FIRST_NICENESS)
    except OSError:
        pass
    return child


if __name__ == "__main__":
    sys.exit(main())
