"""What a dataset remembers between visits, so a reload or a restart loses nothing typed.

- The Captions tab's words (trigger word, class word, captioner, trigger placement) are saved in
  the dataset folder (`captioning.json`) each time it is captioned.
- The Train tab's settings come from the newest job trained on that dataset (the job store keeps
  every job's resolved config), else the Train tab proposes defaults with the dataset's trigger.
- The Results tab's try-it prompt starts from the job's own first sample prompt and trigger word.

Plain functions of the data folder (no gradio, no torch), like handlers.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from studio.ui.handlers import UserError, dataset_dir

CAPTION_SETTINGS = "captioning.json"
DEFAULT_TRIGGER = "ohwx"
CAPTION_DEFAULTS = {"trigger": DEFAULT_TRIGGER, "class_word": "", "captioner": "basic", "placement": "start"}


def _folder(data_dir: Path, name: str | None) -> Path | None:
    try:
        return dataset_dir(data_dir, name)
    except UserError:
        return None


def save_caption_settings(data_dir: Path, name: str, **values: str) -> None:
    folder = _folder(data_dir, name)
    if folder is None:
        return
    saved = {k: str(v or "") for k, v in values.items() if k in CAPTION_DEFAULTS}
    tmp = folder / f".{CAPTION_SETTINGS}.tmp"
    tmp.write_text(json.dumps(saved, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, folder / CAPTION_SETTINGS)


def _saved_caption_settings(folder: Path) -> dict[str, str]:
    try:
        saved = json.loads((folder / CAPTION_SETTINGS).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in saved.items() if k in CAPTION_DEFAULTS and isinstance(v, str)} \
        if isinstance(saved, dict) else {}


def last_job(data_dir: Path, name: str | None, jobs: list[dict] | None = None) -> dict | None:
    """The newest job whose dataset is `name` (jobs come newest first from the store)."""
    folder = _folder(data_dir, name)
    if folder is None:
        return None
    if jobs is None:
        from studio.jobs import JobStore

        jobs = JobStore(data_dir).list_jobs()
    images = (folder / "images").resolve()
    for job in jobs:
        path = ((job.get("config") or {}).get("dataset") or {}).get("path")
        if path and Path(path).resolve() == images:
            return job
    return None


def caption_settings(data_dir: Path, name: str | None) -> dict[str, str]:
    """The Captions tab's words for this dataset: as last captioned, else the last job's trigger."""
    folder = _folder(data_dir, name)
    if folder is None:
        return dict(CAPTION_DEFAULTS)
    saved = _saved_caption_settings(folder)
    out = {**CAPTION_DEFAULTS, **saved}
    if "trigger" not in saved:
        job = last_job(data_dir, name)
        trigger = ((job or {}).get("config", {}).get("dataset") or {}).get("trigger_word") if job else None
        out["trigger"] = trigger or DEFAULT_TRIGGER
    return out


def train_trigger(data_dir: Path, name: str | None) -> str:
    """The trigger word the Train tab proposes when the dataset has no job yet."""
    return caption_settings(data_dir, name)["trigger"]


def try_it_prompt(job: dict | None) -> str:
    """The job's first sample prompt with its trigger word filled in, else 'a photo of <trigger>'."""
    cfg: dict[str, Any] = (job or {}).get("config") or {}
    trigger = ((cfg.get("dataset") or {}).get("trigger_word") or "").strip()
    prompts = [p for p in ((cfg.get("sample") or {}).get("prompts") or []) if isinstance(p, str) and p.strip()]
    if prompts:
        return prompts[0].replace("[trigger]", trigger).strip()
    return f"a photo of {trigger}" if trigger else "a photo"
