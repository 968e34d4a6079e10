"""What every worker child besides training shares (try-it, the report card): its command line
(`REQUEST.json --run-dir FOLDER --data-dir DATA`), its events file, a stop on SIGTERM with the
usual exit code, and the mapping of an exception to a catalogue code and exit code."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from studio.core.paths import DATA_DIR_HELP, data_dir
from studio.core.vocab import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OOM
from studio.diagnostics import StudioError
from studio.events import JsonlReporter


@dataclass
class Child:
    request: dict
    out: Path              # the job's folder: events, log, outputs
    data_dir: Path
    reporter: JsonlReporter


def start(argv: list[str], prog: str, run_dir_help: str) -> Child:
    """Parse the command line, read the request, open the events file; SIGTERM (cancel or
    shutdown) ends the child between two pictures with the interrupted exit code."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("request")
    parser.add_argument("--run-dir", help=run_dir_help)
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    args = parser.parse_args(argv)
    request_path = Path(args.request)
    out = Path(args.run_dir) if args.run_dir else request_path.parent
    out.mkdir(parents=True, exist_ok=True)
    request = json.loads(request_path.read_text(encoding="utf-8"))
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(EXIT_INTERRUPTED))
    return Child(request, out, data_dir(args.data_dir), JsonlReporter(out / "metrics.jsonl"))


def code_of(exc: BaseException, known: dict[type, str] | None = None) -> tuple[str, int]:
    """(catalogue code, exit code) of an exception: a StudioError's own code, out of memory,
    a `known` exception class's code, a model that cannot load, else INTERNAL."""
    from studio.models import ModelError

    if isinstance(exc, StudioError):
        return exc.code, EXIT_FAILED
    if type(exc).__name__ == "OutOfMemoryError":
        return "OUT_OF_MEMORY", EXIT_OOM
    for cls, code in (known or {}).items():
        if isinstance(exc, cls):
            return code, EXIT_FAILED
    return ("MODEL_MISSING" if isinstance(exc, ModelError) else "INTERNAL"), EXIT_FAILED
