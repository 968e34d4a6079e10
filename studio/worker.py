"""`python -m studio.worker`: the background worker (studio/jobs/worker.py), under its old name.

The worker, its process helpers and its command line live in studio/jobs/; the names are
re-exported here because the app, the tests and users' scripts import them from this module.
"""

from __future__ import annotations

import sys

from studio.jobs.cli import (  # noqa: F401
    UI_FIRST_NICENESS, _add_arguments, _run_from_args, add_worker_command, ensure_worker, main, worker_running,
)
from studio.jobs.kinds import validate_lora  # noqa: F401
from studio.jobs.process import (  # noqa: F401
    HEARTBEAT_EVERY, LOG_TAIL_CHARS, lock_holder, pid_runs_in, signal_group, try_lock, worker_alive,
)
from studio.jobs.worker import (  # noqa: F401
    DEFAULT_CANCEL_TIMEOUT, DEFAULT_GRACE_SECONDS, Worker, WorkerAlreadyRunning, grace_seconds_from_env, log,
)

if __name__ == "__main__":
    sys.exit(main())
