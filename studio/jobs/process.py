"""Processes and files the worker manages: its lock, its heartbeat, its children.

No torch, no database: these helpers only look at /proc, signals and small files.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

LOCK_NAME = "worker.lock"
HEARTBEAT_EVERY = 2.0
# A worker whose heartbeat is older than this is taken for dead even if its pid is alive (a
# process that reused the pid, or a worker frozen for good).
HEARTBEAT_STALE_AFTER = 15.0
LOG_TAIL_CHARS = 2000


def try_lock(data_dir: Path) -> int | None:
    """Take `data_dir/worker.lock`; return its fd, or None if another process holds it.

    flock is released by the kernel when the holder dies, even by kill -9, so a stale lock
    can never block a restart. The fd is not inherited by children (Python's default), so an
    orphaned training child cannot keep holding it. The holder's pid is written into the file;
    its modification time is the worker's heartbeat (`start_heartbeat`).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def lock_holder(data_dir: Path) -> str:
    try:
        return (data_dir / LOCK_NAME).read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def start_heartbeat(fd: int, stop: threading.Event, every: float = HEARTBEAT_EVERY) -> threading.Thread:
    """Touch the held lock file every `every` seconds until `stop` is set (a thread, so a long
    reconciliation or a busy poll never makes a live worker look dead)."""
    def beat() -> None:
        while not stop.is_set():
            try:
                os.utime(fd)
            except OSError:
                pass
            stop.wait(every)

    thread = threading.Thread(target=beat, name="worker-heartbeat", daemon=True)
    thread.start()
    return thread


def pid_alive(pid: int) -> bool:
    """True if `pid` is a live process (not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def worker_alive(data_dir: Path, stale_after: float = HEARTBEAT_STALE_AFTER) -> bool:
    """Whether a worker serves `data_dir`: the pid in its lock file is alive and its heartbeat
    is fresh. Only reads: it never takes the lock, so a worker starting at this instant is
    never turned away."""
    path = Path(data_dir) / LOCK_NAME
    try:
        text, beat = path.read_text().strip(), path.stat().st_mtime
    except OSError:
        return False
    return text.isdigit() and pid_alive(int(text)) and time.time() - beat < stale_after


def pid_runs_in(pid: int, run_dir: str) -> bool:
    """True if `pid` is alive, not a zombie, and its command line names `run_dir` — i.e. it
    is an orphaned child of ours and not an unrelated process that reused the pid."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return pid_alive(pid) and os.fsencode(run_dir) in cmdline


def signal_group(pid: int, sig: int) -> None:
    # The child leads its own session (start_new_session), so its pgid is its pid and this
    # reaches accelerate's per-GPU processes too.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def log_tail(path: Path) -> str:
    """The last lines (at most LOG_TAIL_CHARS, 15 lines) of a child's log."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - LOG_TAIL_CHARS))
            text = handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-15:])
