"""train.log for every run: what a training process prints, kept in its run folder.

Under the worker the process's stdout and stderr already are the run's train.log (the worker
opens it for the child). Run from a terminal, they are copied there as well, so the file the
error messages point to ("see train.log") exists however the run was started.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

PROGRESS_EVERY = 5.0  # seconds between progress lines kept from a terminal's redrawn progress bar


class _Tee:
    """A text stream that writes to the terminal and to the log file."""

    def __init__(self, stream, log):
        self.stream, self.log, self.last_progress = stream, log, 0.0

    def write(self, text: str) -> int:
        self.stream.write(text)
        if text.startswith("\r"):  # a redraw of the terminal's progress line: keep one every few seconds
            now = time.monotonic()
            if now - self.last_progress < PROGRESS_EVERY:
                return len(text)
            self.last_progress = now
            text = text[1:] + "\n"
        if not self.log.closed:  # a library's log handler may outlive the run
            self.log.write(text)
            self.log.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _already_the_log(stream, path: Path) -> bool:
    try:
        return path.exists() and os.path.samestat(os.fstat(stream.fileno()), os.stat(path))
    except (OSError, ValueError, AttributeError):  # no real file behind the stream (e.g. captured by a test)
        return False


@contextmanager
def run_log(run_dir: Path):
    """Copy stdout and stderr into `run_dir`/train.log while the block runs (appending, as the worker does)."""
    path = Path(run_dir) / "train.log"
    if _already_the_log(sys.stderr, path):
        yield path
        return
    saved = sys.stdout, sys.stderr
    with open(path, "a", encoding="utf-8") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} python -m studio train\n")
        sys.stdout, sys.stderr = _Tee(saved[0], log), _Tee(saved[1], log)
        try:
            yield path
        finally:
            sys.stdout, sys.stderr = saved
