"""The Results tab's try-it panel: queue a try-it job (with and without the LoRA, same seed, drawn
by the worker), read its result, and for an edit LoRA the picture it edits — by default the
first "before" image of the run's own dataset, or one the user gives (kept in the run folder so
the job can read it after the upload's temporary file is gone). No gradio or torch import."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from studio.i18n import t
from studio.ui.handlers import UserError
from studio.ui.runs import result_files, store

INPUTS = "tryit-inputs"  # <run>/tryit-inputs/<hash><suffix>: the pictures try-it edited


def default_input(job: dict | None) -> str | None:
    """The first pair's "before" image of the job's dataset; None when the dataset has no pairs."""
    from studio.data.pairs import find_pairs

    folder = (((job or {}).get("config") or {}).get("dataset") or {}).get("path")
    if not folder or not Path(folder).is_dir():
        return None
    pairs = find_pairs(folder).pairs
    return str(pairs[0].control) if pairs else None


def keep_input(run_dir: Path, path: str, lang: str = "en") -> str:
    """Copy the picture to edit into the run folder (named by its content) after checking it opens."""
    from PIL import Image

    source = Path(path)
    try:
        with Image.open(source) as im:
            im.verify()
    except (OSError, ValueError, Image.DecompressionBombError):
        raise UserError(t("results.try_bad_input", lang, name=source.name)) from None
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    kept = run_dir / INPUTS / f"{digest}{source.suffix.lower()}"
    if not kept.is_file():
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, kept)
    return str(kept)


def start_try_it(data_dir: Path, job_id: int | None, prompt: str, strength: float, seed: int,
                 lang: str = "en", image: str | None = None) -> Path:
    """Queue a try-it job (the worker draws with and without the LoRA; torch never loads in the UI
    process). Returns the folder it writes `with.png`, `without.png` (and for an edit LoRA
    `before.png`) and `status.json` to."""
    if job_id is None:
        raise UserError(t("results.none", lang))
    s = store(data_dir)
    job = s.get_job(int(job_id))
    loras = [f for f in result_files(job) if f.endswith(".safetensors") and not f.endswith("-comfyui.safetensors")]
    if not loras:
        raise UserError(t("results.no_files", lang))
    kept = keep_input(Path(job["run_dir"]), image, lang) if image else ""
    return Path(s.job(s.create_tryit(int(job_id), loras[0], prompt, strength, seed, image=kept)).run_dir)


def try_it_result(folder: str | None) -> dict[str, Any]:
    """{'state': 'running'|'done'|'failed', 'with': path, 'without': path, 'before': path or None,
    'error': text}."""
    if not folder:
        return {"state": "none"}
    status = Path(folder) / "status.json"
    if not status.is_file():
        return {"state": "running"}
    try:
        return json.loads(status.read_text(encoding="utf-8"))
    except ValueError:
        return {"state": "running"}
