"""`python -m studio train` with faults injected through the engine's hooks (studio/hooks.py).

    faulty_trainer.py --faults FAULTS.json CONFIG.yaml --run-dir RUN_DIR [--resume]

FAULTS.json maps a run's `save.run_name` to a fault, read once when the run starts, so a
test can change it between runs while the worker waits, and other runs train normally:

    nan@N        the loss is NaN from step N+1 on (what an fp16 overflow does to a real run)
    oom@N        CUDA out of memory when step N+1 starts
    save_error   "No space left on device" on every checkpoint write, after its files are written
    sigterm@N    SIGTERM to this process once step N is done (the engine's own handler catches it)

Tests give the worker `[python, faulty_trainer.py, --faults, FILE]` as its train command;
in-process tests pass `FaultHooks(spec)` to `engine.train` directly.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

import yaml

from studio.hooks import TrainHooks


class FaultHooks(TrainHooks):
    def __init__(self, spec: str = ""):
        kind, _, at = spec.partition("@")
        if kind not in ("", "nan", "oom", "save_error", "sigterm") or (
                kind in ("nan", "oom", "sigterm") and not at.isdigit()):
            raise ValueError(f"unknown fault {spec!r}")
        self.kind, self.at = kind, int(at or 0)

    def on_step(self, step):
        if self.kind == "oom" and step == self.at:
            import torch

            raise torch.OutOfMemoryError(f"CUDA out of memory (injected at step {step + 1})")

    def on_loss(self, step, loss):
        return loss * float("nan") if self.kind == "nan" and step >= self.at else loss

    def on_step_end(self, step):
        if self.kind == "sigterm" and step == self.at:
            import signal

            signal.raise_signal(signal.SIGTERM)

    def on_checkpoint_write(self, step, folder):
        if self.kind == "save_error":
            raise OSError(errno.ENOSPC, "No space left on device (injected)")


def command(faults_file: Path) -> list[str]:
    """The worker's train command for runs whose faults `faults_file` lists."""
    return [sys.executable, str(Path(__file__).resolve()), "--faults", str(faults_file)]


def main(argv: list[str]) -> int:
    from studio.__main__ import build_parser, cmd_train

    parser = argparse.ArgumentParser()
    parser.add_argument("--faults", required=True)
    own, rest = parser.parse_known_args(argv)
    args = build_parser().parse_args(["train", *rest])
    run_name = ((yaml.safe_load(Path(args.config).read_text()) or {}).get("save") or {}).get("run_name", "")
    faults = json.loads(Path(own.faults).read_text()) if Path(own.faults).is_file() else {}
    return cmd_train(args, hooks=FaultHooks(faults.get(run_name, "")))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
