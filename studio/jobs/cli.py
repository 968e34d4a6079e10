"""`python -m studio worker` and how the app starts and checks its worker."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from studio.core.paths import DATA_DIR_HELP, data_dir
from studio.jobs.process import worker_alive
from studio.jobs.worker import DEFAULT_CANCEL_TIMEOUT, Worker, WorkerAlreadyRunning, package_root

UI_FIRST_NICENESS = 10


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
        worker = Worker(data_dir(args.data_dir), poll_interval=args.poll_interval, gpus=gpus,
                        cancel_timeout=args.cancel_timeout)
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


def worker_running(folder: str | os.PathLike[str]) -> bool:
    """Whether a worker serves `folder` (its pid is alive and its heartbeat fresh). Never takes
    the worker's lock, so it cannot turn away a worker that is starting."""
    return worker_alive(Path(folder))


def ensure_worker(folder: str | os.PathLike[str]) -> subprocess.Popen | None:
    """Start a background worker for `folder` unless one is alive there. If two start at once,
    the one that loses the lock exits with a message and the other serves."""
    folder = Path(folder).resolve()
    if worker_alive(folder):
        return None
    folder.mkdir(parents=True, exist_ok=True)
    # The worker keeps the app's cwd (relative paths in configs mean the same to both) and
    # finds this checkout through PYTHONPATH; the HF token, if any, rides in the environment.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root(), env.get("PYTHONPATH", "")) if p)
    with open(folder / "worker.log", "ab") as worker_log:
        child = subprocess.Popen(
            [sys.executable, "-m", "studio.worker", "--data-dir", str(folder)],
            stdin=subprocess.DEVNULL, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
    # Training shares the machine with the page: at a lower CPU priority (inherited by the jobs it
    # starts) it yields to the UI's short bursts of work and loses almost nothing itself.
    try:
        os.setpriority(os.PRIO_PROCESS, child.pid, UI_FIRST_NICENESS)
    except OSError:
        pass
    return child
