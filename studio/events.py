"""How the engine reports: a small event interface, a JSONL writer and a CLI progress bar.

The engine calls `reporter.emit(type, **fields)`; it never knows who listens. The worker
reads the JSONL file; a person at a terminal sees the progress bar.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Protocol

# Re-exported: the engine and the CLI take the exit codes from here.
from studio.core.vocab import (  # noqa: F401
    EXIT_CANCELLED, EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_OOM,
)


class Reporter(Protocol):
    def emit(self, type: str, **fields) -> None: ...


def _clean(value):
    """JSON has no NaN: write non-finite floats as strings so the line stays parseable."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class JsonlReporter:
    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")

    def emit(self, type: str, **fields) -> None:
        line = json.dumps(_clean({"type": type, "time": round(time.time(), 3), **fields}))
        self.file.write(line + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class ConsoleReporter:
    """One updating progress line with step, loss, rate and ETA; other events on their own lines."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last = 0.0

    def emit(self, type: str, **f) -> None:
        if type == "step":
            now = time.time()
            final = f["step"] == f["max_steps"]
            if self.tty or final or now - self.last > 5:
                self.last = now
                done = f["step"] / f["max_steps"]
                bar = "#" * int(done * 30)
                eta = f.get("eta_s")
                eta_text = f"{int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else "?"
                text = (f"[{bar:<30}] {f['step']}/{f['max_steps']} loss {f['loss']:.4f} "
                        f"{f.get('it_s') or 0:.2f} it/s ETA {eta_text}")
                self.stream.write(("\r" + text) if self.tty else text + "\n")
                if self.tty and final:
                    self.stream.write("\n")
        elif type in ("warning", "error"):
            advice = f" — {f['advice']}" if f.get("advice") else ""
            self.stream.write(f"\n{type.upper()} [{f.get('code')}] {f.get('message')}{advice}\n")
        elif type in ("sample", "checkpoint"):
            if not self.tty:
                self.stream.write(f"{type} at step {f['step']}: {f['path']}\n")
        elif type == "start":
            self.stream.write(f"Training {f['max_steps']} steps on {f['num_images']} images "
                              f"({f['device']}), from step {f['start_step']}\n")
        elif type == "done":
            self.stream.write(f"\n{f['status']}: {', '.join(f.get('files', [])) or 'no files'}\n")
        self.stream.flush()


class Broadcast:
    def __init__(self, *reporters):
        self.reporters = reporters

    def emit(self, type: str, **fields) -> None:
        for reporter in self.reporters:
            reporter.emit(type, **fields)
