"""What the worker does for each kind of job: the input it writes into the run folder, the child
process it starts, and how it checks the child's outputs. Training runs `python -m studio train`
(docs/architecture.md); try-it runs studio/jobs/tryit.py, the report card studio/jobs/report.py.
All speak the same exit codes and
metrics.jsonl events, so one outcome table (studio/jobs/outcomes.py) reads both.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from studio.core.vocab import KIND_REPORT, KIND_TRAIN, KIND_TRYIT
from studio.jobs.record import Job


def validate_lora(path: Path) -> str | None:
    """None if `path` is a valid LoRA file, else what is wrong with it."""
    from studio.lora_files import read_modules  # imports torch: only once a run has ended

    if not path.is_file():
        return f"{path.name} is missing"
    try:
        read_modules(path)  # raises on anything a loader would refuse, whichever family wrote it
    except Exception as exc:  # any parse error means the file is unusable
        return f"{path.name} is not a valid LoRA file: {exc}"
    return None


def _listed(run_dir: Path, done: dict[str, Any] | None) -> list[str]:
    return [str(f) for f in (done or {}).get("files", [])]


def _writes_comfyui(run_dir: Path) -> bool:
    """Whether the run's config (written by `prepare`) asks for the ComfyUI file too."""
    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return True
    return bool(((config.get("save") or {}) if isinstance(config, dict) else {}).get("comfyui", True))


class TrainKind:
    name = KIND_TRAIN
    process = "training process"
    activity = "training"

    def __init__(self, data_dir: Path, train_command: Sequence[str] | None = None):
        self.data_dir = data_dir
        self.train_command = list(train_command) if train_command else None

    def prepare(self, job: Job, run_dir: Path) -> Path:
        config_path = run_dir / "config.yaml"
        config_path.write_text(yaml.safe_dump(job.config.to_dict(), sort_keys=False, allow_unicode=True))
        source = job.resume_from
        if source and Path(source).is_dir():
            # An OOM retry starts in a new run folder from its parent's checkpoint.
            target = run_dir / "checkpoints" / Path(source).name
            if not target.exists():
                shutil.copytree(source, target)
        return config_path

    def command(self, job: Job, config_path: Path, run_dir: Path) -> list[str]:
        """The child's argv. Only paths and flags: secrets travel by environment, never argv."""
        tail = [str(config_path), "--run-dir", str(run_dir), "--data-dir", str(self.data_dir)]
        tail += ["--resume"] if job.resume else []
        if self.train_command is not None:
            return self.train_command + tail
        num_gpus = job.config.memory.num_gpus
        if num_gpus > 1:
            return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
                    "--num_processes", str(num_gpus), "-m", "studio", "train", *tail]
        return [sys.executable, "-m", "studio", "train", *tail]

    def check_outputs(self, run_dir: Path, done: dict[str, Any] | None) -> tuple[list[str], str | None]:
        """(the run's files, None) when its LoRA files (two, or one with save.comfyui off) exist and
        validate, else (…, what is wrong)."""
        files = _listed(run_dir, done) or sorted(p.name for p in run_dir.glob("*.safetensors"))
        loras = [run_dir / f for f in files if f.endswith(".safetensors")]
        expected = 2 if _writes_comfyui(run_dir) else 1
        if len(loras) < expected:
            return files, f"only {len(loras)} of the {expected} LoRA files were written"
        problems = [p for p in (validate_lora(path) for path in loras) if p]
        return files, "; ".join(problems) if problems else None


class TryItKind:
    name = KIND_TRYIT
    process = "try-it process"
    activity = "the try-it run"
    IMAGES = ("with.png", "without.png")

    def __init__(self, data_dir: Path, tryit_command: Sequence[str] | None = None):
        self.data_dir = data_dir
        self.tryit_command = list(tryit_command) if tryit_command else [sys.executable, "-m", "studio.jobs.tryit"]

    def prepare(self, job: Job, run_dir: Path) -> Path:
        cfg = job.config
        request = {**job.request, "base": cfg.model.base, "revision": cfg.model.revision,
                   "width": cfg.sample.width, "height": cfg.sample.height, "steps": cfg.sample.steps,
                   "guidance": cfg.sample.guidance, "true_cfg": cfg.sample.true_cfg}
        path = run_dir / "request.json"
        path.write_text(json.dumps(request), encoding="utf-8")
        (run_dir / "status.json").unlink(missing_ok=True)
        return path

    def command(self, job: Job, request_path: Path, run_dir: Path) -> list[str]:
        return [*self.tryit_command, str(request_path), "--run-dir", str(run_dir), "--data-dir", str(self.data_dir)]

    def check_outputs(self, run_dir: Path, done: dict[str, Any] | None) -> tuple[list[str], str | None]:
        missing = [name for name in self.IMAGES if not (run_dir / name).is_file()]
        return list(self.IMAGES), (f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
                                   if missing else None)


REPORT_JOBS = "report-jobs"  # <run>/report-jobs/<job id>/: a report job's events and log


class ReportKind:
    """A finished run's report card (studio/report_card.py). The job's own folder is
    `<run>/report-jobs/<id>/`; the grids it draws go into `<run>/report/`."""

    name = KIND_REPORT
    process = "report-card process"
    activity = "the report card"

    def __init__(self, data_dir: Path, report_command: Sequence[str] | None = None):
        self.data_dir = data_dir
        self.report_command = list(report_command) if report_command else [sys.executable, "-m", "studio.jobs.report"]

    def prepare(self, job: Job, run_dir: Path) -> Path:
        path = run_dir / "request.json"
        path.write_text(json.dumps({**job.request, "run_dir": str(source_run(run_dir))}), encoding="utf-8")
        return path

    def command(self, job: Job, request_path: Path, run_dir: Path) -> list[str]:
        return [*self.report_command, str(request_path), "--run-dir", str(run_dir), "--data-dir", str(self.data_dir)]

    def check_outputs(self, run_dir: Path, done: dict[str, Any] | None) -> tuple[list[str], str | None]:
        """(the grids, None) when report.json and every grid it lists exist."""
        report = source_run(run_dir) / "report"
        try:
            grids = json.loads((report / "report.json").read_text(encoding="utf-8"))["grids"]
        except (OSError, ValueError, KeyError, TypeError):
            return [], "report/report.json is missing or unreadable"
        missing = [g for g in grids if not (report / g).is_file()]
        files = [f"report/{g}" for g in grids]
        return files, (f"{', '.join(missing)} missing from report/" if missing else None)


def source_run(report_job_dir: Path) -> Path:
    """The finished run a report job's folder belongs to."""
    return Path(report_job_dir).parent.parent
