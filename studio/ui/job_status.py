"""How a job's state reads on the Monitor tab: its status word, progress line, how it ended, and
which job the tab shows. Words come from the job's status column and the catalogue (diag.<CODE>),
never from the worker's exact message or code strings. No gradio or torch import.
"""

from __future__ import annotations

import html
import re
from typing import Any

from studio.i18n import t


def badge(status: str, lang: str = "en") -> str:
    return t(f"job.{status}", lang)


ACTIVE = ("running", "stopping")


def pin_for(job_id: int | None, jobs: list[dict]) -> dict | None:
    """What picking `job_id` by hand remembers: the job, and the newest job that existed then."""
    if job_id is None:
        return None
    return {"id": int(job_id), "newest": max((j["id"] for j in jobs), default=0)}


def pick_job(jobs: list[dict], pin: dict | None) -> int | None:
    """The job the Monitor shows: the one the user picked, until a newer job is created; otherwise
    the newest running job, else the newest job (jobs come newest first)."""
    ids = [j["id"] for j in jobs]
    if pin and pin.get("id") in ids and not any(i > pin.get("newest", 0) for i in ids):
        return pin["id"]
    running = [j["id"] for j in jobs if j["status"] in ACTIVE]
    return max(running) if running else (max(ids) if ids else None)


def _fmt_eta(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or seconds < 0:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def total_time(job: dict) -> float | None:
    """Seconds from start to end of a job that is no longer running."""
    start, end = job.get("started_at"), job.get("finished_at")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)) and end >= start:
        return end - start
    return None


def progress_html(job: dict, lang: str = "en") -> str:
    """A progress bar with step, it/s and ETA while the job runs, its total time once it ended
    (built server-side so it needs no custom JS)."""
    step, max_steps = job.get("step") or 0, job.get("max_steps")
    status = job["status"]
    unit = "_pictures" if job.get("kind") == "report" else ""  # a report card counts pictures drawn
    fraction = 1.0 if status == "succeeded" else (min(1.0, step / max_steps) if max_steps else 0.0)
    if status == "queued":
        text, fraction = t("monitor.waiting", lang), 0.0
    elif status in ACTIVE:
        it_s = f"{job['it_s']:.2f}" if isinstance(job.get("it_s"), (int, float)) else "–"
        text = t(f"monitor.progress{unit}", lang, step=step, max_steps=max_steps or "?", it_s=it_s,
                 eta=_fmt_eta(job.get("eta_s")))
    else:  # ended: an ETA would be stale, the total time is what is known
        text = t(f"monitor.progress{unit}_ended", lang, step=step, max_steps=max_steps or "?",
                 total=_fmt_eta(total_time(job)))
    return (f'<div class="studio-progress" data-status="{html.escape(status)}">'
            f'<div style="font-weight:600">{html.escape(badge(status, lang))} — {html.escape(text)}</div>'
            f'<div style="background:#ddd;border-radius:6px;height:14px;overflow:hidden" role="progressbar" '
            f'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{fraction * 100:.0f}" '
            f'aria-label="{html.escape(t("monitor.progress_label", lang))}">'
            f'<div style="background:#4c8bf5;height:14px;width:{fraction * 100:.1f}%"></div></div></div>')


def job_status_markdown(job: dict, lang: str = "en") -> str:
    """How a job ended, in the words of its status (cancelled, interrupted and failed differ), the
    reason, and what to do. The status column decides the words, not the worker's error codes; a
    catalogue code (diag.<CODE>) gives the reason and advice in the page's language. The worker's
    own message is English program output: other languages show it as a quoted detail."""
    message, code = job.get("error_message"), job.get("error_code")
    status = job.get("status") or ("failed" if message else "")
    if status == "succeeded" or (not message and status not in ("cancelled", "interrupted")):
        return message or ""
    known = bool(code) and f"diag.{code}.title" in _keys()
    word = t(f"monitor.ended.{status if status in ('cancelled', 'interrupted') else 'failed'}", lang)
    reason = message if lang == "en" else (t(f"diag.{code}.title", lang) if known else "")
    parts = [t("monitor.ended_line", lang, word=word, message=reason) if reason else f"**{word}**"]
    if message and lang != "en":
        fence = "`" * (max((len(run) for run in re.findall(r"`+", message)), default=0) + 1)
        parts.append(t("monitor.detail", lang, detail=f"{fence} {message} {fence}"))
    advice = t(f"diag.{code}.advice", lang) if known and lang != "en" else job.get("advice")
    if advice:
        parts.append(t("monitor.advice", lang, advice=advice))
    if status == "interrupted":
        parts.append(t("monitor.can_resume", lang))
    return "\n\n".join(parts)


def _keys() -> set[str]:
    from studio.i18n import catalogue

    return set(catalogue("en"))
