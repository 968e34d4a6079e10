"""The Results tab's report card: the grids (checkpoints x strengths) of a finished job, how much
disk its kept checkpoints take, and promoting one of them to be the run's final LoRA. Making the
grids is a worker job (kind "report", studio/jobs/report.py) queued here and followed by its
progress; promoting runs `python -m studio report-card --promote` in a child process (it writes
and proves LoRA files: torch stays out of the UI process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from studio.i18n import t
from studio.ui.job_status import progress_html


def checkpoint_steps(run_dir: Path) -> tuple[list[int], int]:
    """(steps of the kept checkpoints, their bytes on disk), without torch."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return [], 0
    kept = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step") and (p / "meta.json").is_file())
    size = sum(f.stat().st_size for c in kept for f in c.iterdir() if f.is_file())
    return [int(p.name[len("step"):]) for p in kept], size


def card_view(job: dict | None, lang: str = "en") -> dict:
    from studio.report_card import stored

    if not job or not job.get("run_dir"):
        return {"grids": [], "summary": "", "steps": []}
    run_dir = Path(job["run_dir"])
    steps, size = checkpoint_steps(run_dir)
    lines = [t("card_grid.checkpoints", lang, count=len(steps), size_mb=round(size / 2**20, 1))
             if steps else t("card_grid.no_checkpoints", lang)]
    report = stored(run_dir)
    grids = []
    if report:
        for name, prompt in zip(report["grids"], report["prompts"]):
            path = run_dir / "report" / name
            if path.is_file():
                grids.append((str(path), prompt))
        rows = ", ".join(r["label"] if r["step"] is not None else t("card_grid.final", lang) for r in report["rows"])
        lines.insert(0, t("card_grid.legend", lang, rows=rows,
                          strengths=", ".join(f"{s:g}" for s in report["strengths"])))
    else:
        lines.insert(0, t("card_grid.none_yet", lang))
    return {"grids": grids, "summary": "\n\n".join(lines), "steps": steps}


def promote(job: dict | None, step, lang: str = "en", timeout: float = 900.0) -> str:
    from studio.ui.handlers import UserError

    if not job or job.get("status") != "succeeded":
        raise UserError(t("card_grid.promote_needs_success", lang))
    if step in (None, ""):
        raise UserError(t("card_grid.pick_step", lang))
    out = subprocess.run([sys.executable, "-m", "studio", "report-card", str(job["run_dir"]), "--promote",
                          str(int(step))], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise UserError(t("card_grid.promote_failed", lang, step=int(step),
                          reason=(out.stderr.strip().splitlines() or ["?"])[-1]))
    return t("card_grid.promoted", lang, step=int(step))


def queue_report(data_dir: Path, job_id, lang: str = "en") -> str:
    """Queue a report-card job for a succeeded training job; the worker draws it."""
    from studio.jobs import JobStateError, JobStore
    from studio.ui.handlers import UserError

    if job_id is None:
        raise UserError(t("results.none", lang))
    store = JobStore(data_dir)
    job = store.job(int(job_id))
    if job.status != "succeeded":
        raise UserError(t("card_grid.needs_success", lang))
    steps, _ = checkpoint_steps(Path(job.run_dir))
    try:
        new = store.create_report(int(job_id))
    except JobStateError:
        raise UserError(t("card_grid.already_queued", lang)) from None
    return t("card_grid.queued", lang, job=new, rows=len(steps) + 1)


def report_job(data_dir: Path, job_id) -> dict | None:
    """The newest report-card job of training job `job_id`, or None."""
    from studio.core.vocab import KIND_REPORT
    from studio.jobs import JobStore

    if job_id is None:
        return None
    found = [j for j in JobStore(data_dir).jobs() if j.kind == KIND_REPORT and j.parent_job_id == int(job_id)]
    return found[0].as_dict() if found else None


def report_progress(data_dir: Path, job_id, lang: str = "en") -> tuple[str, str, bool]:
    """(the report job's progress bar, how it ended if it did not succeed, whether it is still
    on its way) for training job `job_id`."""
    from studio.ui.job_status import ACTIVE, job_status_markdown

    job = report_job(data_dir, job_id)
    if job is None:
        return "", "", False
    ended = job_status_markdown(job, lang) if job["status"] not in ("succeeded", "queued", *ACTIVE) else ""
    return progress_html(job, lang), ended, job["status"] in ("queued", *ACTIVE)


def card_panel(data_dir: Path, job_id, lang: str = "en") -> dict:
    """Everything the Results tab's report-card section shows for training job `job_id`: the grids
    with their prompts, the legend and disk use, the checkpoints that can be promoted, and the
    report job's progress."""
    from studio.jobs import JobStore

    job = JobStore(data_dir).get_job(int(job_id)) if job_id is not None else None
    view = card_view(job, lang)
    bar, ended, active = report_progress(data_dir, job_id, lang)
    return {**view, "progress": bar, "ended": ended, "active": active}


def promote_confirmed(data_dir: Path, job_id, step, confirmed: bool, lang: str = "en") -> str:
    """Promote only once the user ticked that the final files will be replaced."""
    from studio.jobs import JobStore
    from studio.ui.handlers import UserError

    if job_id is None:
        raise UserError(t("results.none", lang))
    if not confirmed:
        raise UserError(t("card_grid.confirm_first", lang))
    return promote(JobStore(data_dir).get_job(int(job_id)), step, lang)
