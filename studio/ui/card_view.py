"""The Results tab's report card: the grids (checkpoints x strengths) of a finished job, how much
disk its kept checkpoints take, and promoting one of them to be the run's final LoRA. Making the
grids is a worker job (kind "report"); promoting runs `python -m studio report-card --promote`
in a child process (it writes and proves LoRA files: torch stays out of the UI process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from studio.i18n import t


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
