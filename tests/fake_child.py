"""What the torch-free stand-ins for the worker's child processes (fake_tryit.py, fake_report.py)
share: the child's command line, its SIGTERM exit code, the request it was given and its events."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path


def start():
    """(the request, the job's folder, emit(kind, **data)) for `CHILD REQUEST.json --run-dir DIR
    [--data-dir DATA]`; the request (with the data folder) is copied to DIR/seen.json so a test can
    check what the worker asked for, and SIGTERM exits 4 as the real children do."""
    parser = argparse.ArgumentParser()
    parser.add_argument("request")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--data-dir")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(4))
    request = json.loads(Path(args.request).read_text())
    out = Path(args.run_dir)
    (out / "seen.json").write_text(json.dumps({**request, "data_dir": args.data_dir}))
    metrics = open(out / "metrics.jsonl", "a")

    def emit(kind: str, **data) -> None:
        metrics.write(json.dumps({"type": kind, "time": time.time(), **data}) + "\n")
        metrics.flush()

    return request, out, emit
