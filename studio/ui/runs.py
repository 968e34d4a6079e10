"""Plain functions behind the Monitor and Results tabs: they read the job store and run folders.

Everything here is a read of state the worker writes (job rows, engine events, run files), so
two browser tabs, or a page reopened later, show the same truth. No gradio or torch import.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import yaml
from typing import Any

import numpy as np

from studio.i18n import t
from studio.ui.handlers import UserError
from studio.ui.job_status import badge, job_status_markdown, progress_html
from studio.ui.remembered import try_it_prompt

log = logging.getLogger("studio.ui")
LOG_TAIL_LINES = 40
SMOOTHING = 0.9  # EMA weight of the smoothed loss curve


def store(data_dir: Path):
    from studio.jobs import JobStore

    return JobStore(data_dir)


def job_rows(data_dir: Path, lang: str = "en", jobs: list[dict] | None = None) -> list[list[Any]]:
    rows = []
    for job in store(data_dir).list_jobs() if jobs is None else jobs:
        progress = f"{job['step'] or 0}/{job['max_steps'] or '?'}"
        loss = f"{job['loss']:.4f}" if isinstance(job.get("loss"), (int, float)) else ""
        rows.append([job["id"], job["name"], badge(job["status"], lang), progress, loss])
    return rows


def job_choices(data_dir: Path, statuses: tuple[str, ...] | None = None, lang: str = "en",
                jobs: list[dict] | None = None) -> list[tuple[str, int]]:
    if jobs is None:
        jobs = store(data_dir).list_jobs(statuses)
    elif statuses:
        jobs = [j for j in jobs if j["status"] in statuses]
    return [(f"#{j['id']} {j['name']} · {badge(j['status'], lang)}", j["id"]) for j in jobs]


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    out, last = [], None
    for v in values:
        last = v if last is None else weight * last + (1 - weight) * v
        out.append(last)
    return out


def curves(events: list[dict], lang: str = "en") -> tuple[dict[str, list], dict[str, list]]:
    """(loss table with raw + smoothed series, learning-rate table) as column dicts."""
    steps = [e for e in events if e.get("type") == "step" and isinstance(e.get("loss"), (int, float))]
    xs = [int(e["step"]) for e in steps]
    losses = [float(e["loss"]) for e in steps]
    raw, smoothed = t("monitor.series_raw", lang), t("monitor.series_smooth", lang)
    loss = {"step": xs + xs, "loss": losses + smooth(losses), "series": [raw] * len(xs) + [smoothed] * len(xs)}
    lr_steps = [e for e in steps if isinstance(e.get("lr"), (int, float))]
    lr = {"step": [int(e["step"]) for e in lr_steps], "lr": [float(e["lr"]) for e in lr_steps]}
    return loss, lr


def compare_curves(data_dir: Path, job_ids: list[int] | None) -> dict[str, list]:
    """Smoothed loss of several jobs, one colour each."""
    s = store(data_dir)
    out: dict[str, list] = {"step": [], "loss": [], "job": []}
    for job_id in job_ids or []:
        try:
            name = f"#{job_id} {s.get_job(int(job_id))['name']}"
        except KeyError:
            continue
        steps = [e for e in s.events(int(job_id), types=["step"]) if isinstance(e.get("loss"), (int, float))]
        out["step"] += [int(e["step"]) for e in steps]
        out["loss"] += smooth([float(e["loss"]) for e in steps])
        out["job"] += [name] * len(steps)
    return out


_COLOURS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float)


def heatmap(events: list[dict], min_width: int = 480) -> tuple[np.ndarray | None, list[str]]:
    """Per-block gradient norms over steps as an RGB image (rows = blocks, columns = steps)."""
    rows = [e for e in events if e.get("type") == "step" and isinstance(e.get("block_grad_norms"), dict)
            and e["block_grad_norms"]]
    if not rows:
        return None, []
    blocks = sorted({b for e in rows for b in e["block_grad_norms"]}, key=_block_order)
    grid = np.full((len(blocks), len(rows)), np.nan)
    for j, e in enumerate(rows):
        for i, b in enumerate(blocks):
            v = e["block_grad_norms"].get(b)
            if isinstance(v, (int, float)) and v > 0 and np.isfinite(v):
                grid[i, j] = np.log10(v)
    lo, hi = np.nanmin(grid) if np.isfinite(grid).any() else 0.0, np.nanmax(grid) if np.isfinite(grid).any() else 1.0
    norm = np.nan_to_num((grid - lo) / (hi - lo if hi > lo else 1.0), nan=0.0)
    # Piecewise-linear viridis-like map: enough to tell hot blocks from cold ones.
    pos = norm * (len(_COLOURS) - 1)
    idx = np.clip(pos.astype(int), 0, len(_COLOURS) - 2)
    frac = (pos - idx)[..., None]
    rgb = (_COLOURS[idx] * (1 - frac) + _COLOURS[idx + 1] * frac).astype(np.uint8)
    scale_x = max(1, min_width // max(1, len(rows)))
    scale_y = max(4, 240 // max(1, len(blocks)))
    return np.repeat(np.repeat(rgb, scale_y, axis=0), scale_x, axis=1), blocks


def _block_order(name: str) -> tuple:
    parts = name.replace("-", ".").replace("_", ".").split(".")
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)


def samples(job: dict, events: list[dict], lang: str = "en", step: int | None = None) -> list[tuple[str, str]]:
    """(image path, 'step N · prompt') for each sample event whose file exists (only those of
    `step` if given), newest first."""
    run_dir = Path(job.get("run_dir") or "")
    out = []
    for e in events:
        if e.get("type") != "sample" or not e.get("path") or (step is not None and e.get("step") != step):
            continue
        path = (run_dir / e["path"]).resolve()
        if path.is_file() and run_dir.resolve() in path.parents:
            out.append((str(path), t("monitor.sample_caption", lang, step=e.get("step"), prompt=e.get("prompt", ""))))
    return out[::-1]


def log_tail(job: dict, lines: int = LOG_TAIL_LINES) -> str:
    path = Path(job.get("run_dir") or "") / "train.log"
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 64_000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def job_view(data_dir: Path, job_id: int | None, lang: str = "en") -> dict[str, Any]:
    """Everything the Monitor tab shows for one job."""
    if job_id is None:
        return {"progress": t("monitor.no_job", lang), "loss": None, "lr": None, "heatmap": None, "blocks": [],
                "samples": [], "log": "", "status": "", "job": None}
    s = store(data_dir)
    job = s.get_job(int(job_id))
    events = s.events(int(job_id), types=["step", "sample"])
    loss, lr = curves(events, lang)
    image, blocks = heatmap(events)
    return {"progress": progress_html(job, lang), "loss": loss, "lr": lr, "heatmap": image, "blocks": blocks,
            "samples": samples(job, events, lang), "log": log_tail(job), "status": job_status_markdown(job, lang),
            "job": job}


def control(data_dir: Path, job_id: int | None, action: str, lang: str = "en") -> str:
    """cancel / sample / save / resume a job; JobStateError messages become UserError."""
    from studio.jobs import JobNotFound, JobStateError

    if job_id is None:
        raise UserError(t("monitor.no_job", lang))
    s = store(data_dir)
    try:
        if action == "cancel":
            return t("monitor.cancel_sent", lang, status=badge(s.request_cancel(int(job_id)), lang))
        if action == "sample":
            s.request_sample(int(job_id))
            return t("monitor.sample_sent", lang)
        if action == "save":
            s.request_save(int(job_id))
            return t("monitor.save_sent", lang)
        if action == "resume":
            s.resume(int(job_id))
            return t("monitor.resumed", lang, job_id=job_id)
    except (JobStateError, JobNotFound) as exc:
        raise UserError(str(exc)) from None
    raise ValueError(f"unknown action {action!r}")


def job_config_yaml(data_dir: Path, job_id: int | None, lang: str = "en") -> str:
    if job_id is None:
        raise UserError(t("monitor.no_job", lang))
    return yaml.safe_dump(store(data_dir).get_job(int(job_id))["config"], sort_keys=False, allow_unicode=True)


def manage(data_dir: Path, job_id: int | None, action: str, lang: str = "en", config_yaml: str = "",
           confirmed: bool = False) -> str:
    """duplicate / rerun (with edited settings, validated like the Train tab) / delete (confirmed)."""
    from studio.config import ConfigError, TrainConfig
    from studio.jobs import JobNotFound, JobStateError
    from studio.ui.handlers import check_config, problems_markdown

    if job_id is None:
        raise UserError(t("monitor.no_job", lang))
    s, job_id = store(data_dir), int(job_id)
    try:
        if action == "duplicate":
            return t("monitor.duplicated", lang, job_id=s.duplicate(job_id), source=job_id)
        if action == "rerun":
            try:
                cfg = TrainConfig.from_yaml(config_yaml, "settings")
            except ConfigError as exc:
                raise UserError(problems_markdown(exc.items, lang)) from None
            check_config(data_dir, cfg, lang)
            return t("monitor.rerun_queued", lang, job_id=s.rerun_with(job_id, cfg.to_dict()), source=job_id)
        if action == "delete":
            if not confirmed:
                raise UserError(t("monitor.delete_needs_confirm", lang))
            s.delete(job_id, delete_files=True)
            return t("monitor.deleted", lang, job_id=job_id)
    except (JobStateError, JobNotFound) as exc:
        raise UserError(str(exc)) from None
    raise ValueError(f"unknown action {action!r}")


from studio.jobs.cli import worker_running  # noqa: E402,F401  (heartbeat and pid; never the lock)


# ================================================================= Results tab


def result_files(job: dict) -> list[str]:
    """Both LoRA files, the model card (README.md) and the config of a finished run (absolute
    paths inside its run folder)."""
    run_dir = Path(job.get("run_dir") or "")
    if not run_dir.is_dir():
        return []
    files = sorted(p for p in run_dir.glob("*.safetensors") if p.is_file())
    extra = [p for p in (write_model_card(run_dir) if files else None, run_dir / "config.yaml") if p and p.is_file()]
    return [str(p) for p in files + extra]


def write_model_card(run_dir: Path) -> Path | None:
    """README.md beside the LoRA files: the same card `publish` uploads (studio.publish.model_card),
    written once per set of LoRA files so it can be downloaded with them."""
    from studio.publish import model_card as hub_card

    card = run_dir / "README.md"
    newest = max((p.stat().st_mtime for p in run_dir.glob("*.safetensors")), default=0.0)
    if card.is_file() and card.stat().st_mtime >= newest:
        return card
    try:
        text = hub_card(run_dir)
    except Exception as exc:  # noqa: BLE001 - a run without valid LoRA files simply has no card
        log.info("no model card for %s: %s", run_dir, exc)
        return None
    tmp = run_dir / ".README.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, card)
    return card


def model_card(job: dict, lang: str = "en") -> str:
    from studio.ui.handlers import licence_text

    cfg = job["config"]
    name = cfg.get("save", {}).get("run_name") or job["name"]
    base = cfg.get("model", {}).get("base", "demo")
    # Name the files that exist (the worker may have named the run differently from the config).
    loras = [Path(f).name for f in result_files(job) if f.endswith(".safetensors")]
    comfy = next((f for f in loras if f.endswith("-comfyui.safetensors")), f"{name}-comfyui.safetensors")
    plain = next((f for f in loras if not f.endswith("-comfyui.safetensors")), f"{name}.safetensors")
    lines = [t("card.title", lang, name=plain.removesuffix(".safetensors"))]
    if cfg.get("dataset", {}).get("trigger_word"):
        lines.append(t("card.trigger", lang, trigger=cfg["dataset"]["trigger_word"]))
    promoted = promoted_step(Path(job.get("run_dir") or ""))  # the final LoRA is then that checkpoint's
    lines += [t("card.base", lang, base=base), t("card.licence", lang, licence=licence_text(base, lang)),
              *([t("card.promoted", lang, step=promoted)] if promoted is not None else []),
              t("card.steps", lang, steps=promoted or job.get("step") or cfg.get("schedule", {}).get("max_steps"),
                resolution=cfg.get("dataset", {}).get("resolution"), rank=cfg.get("lora", {}).get("rank"),
                lr=cfg.get("optimizer", {}).get("lr")),
              (t("card.usage", lang, file=plain, comfy=comfy) if comfy in loras or cfg.get("save", {}).get("comfyui", True)
               else t("card.usage_diffusers", lang, file=plain)),
              t("card.samples", lang)]
    return "\n\n".join(lines)


def promoted_step(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "promoted.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def result_view(data_dir: Path, job_id: int | None, lang: str = "en") -> dict[str, Any]:
    if job_id is None:
        return {"files": [], "card": t("results.none", lang), "samples": [], "prompt": try_it_prompt(None)}
    s = store(data_dir)
    job = s.get_job(int(job_id))
    files = result_files(job)
    card = model_card(job, lang)
    if not any(f.endswith(".safetensors") for f in files):
        card = t("results.no_files", lang) + "\n\n" + card
    else:  # download links only for files that are proven (studio/verify.py)
        checks = verified(Path(job["run_dir"]))
        card = checklist_markdown(checks, lang) + "\n\n" + card
        files = downloadable(files, checks)
    events = s.events(int(job_id), types=["sample"])
    # Only the last step's samples belong on the card.
    last = max((e.get("step", 0) for e in events if e.get("type") == "sample"), default=None)
    return {"files": files, "card": card, "samples": samples(job, events, lang, step=last),
            "prompt": try_it_prompt(job)}


def verified(run_dir: Path, timeout: float = 600.0) -> list:
    """The run's checklist: kept in verify.json by the training run, else made now by
    `python -m studio verify` in a child process (the UI process never imports torch)."""
    from studio.verify import stored_checks

    checks = stored_checks(run_dir)
    if checks is None:
        try:
            subprocess.run([sys.executable, "-m", "studio", "verify", str(run_dir)], capture_output=True,
                           timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return []
        checks = stored_checks(run_dir)
    return checks or []


def downloadable(files: list[str], checks: list) -> list[str]:
    """All of a run's files when its checklist passed, else only those that are not the LoRA."""
    if checks and all(c.ok for c in checks):
        return files
    return [f for f in files if not f.endswith((".safetensors", "README.md"))]


VERIFY_LINES = {check_id: f"verify.{check_id}" for check_id in (
    "readable_diffusers", "readable_comfyui", "diffusers_keys", "comfyui_keys", "same_delta", "files")}


def checklist_markdown(checks: list, lang: str = "en") -> str:
    if not checks:
        return t("verify.unknown", lang)
    lines = [f"**{t('verify.heading', lang)}**"]
    for check in checks:
        lines.append(f"- {'✅' if check.ok else '❌'} {t(VERIFY_LINES.get(check.id, 'verify.files'), lang)}")
        lines += ["    - `" + p.replace("`", "'") + "`" for p in check.problems[:6]]
    if not all(c.ok for c in checks):
        lines.append(t("verify.failed", lang))
    return "\n".join(lines)


def publish(data_dir: Path, job_id: int | None, repo_id: str, token: str, private: bool, lang: str = "en") -> str:
    """Upload a finished run with studio.publish (if installed). The token is used and dropped:
    never stored, never logged, never put in an exception message."""
    if job_id is None:
        raise UserError(t("results.none", lang))
    repo_id = (repo_id or "").strip()
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(t("results.bad_repo", lang))
    token = (token or "").strip() or os.environ.get("HF_TOKEN", "")
    if not token:
        raise UserError(t("results.no_token", lang))
    from studio.publish import publish_run  # loads huggingface_hub only when someone publishes

    job = store(data_dir).get_job(int(job_id))
    try:
        url = publish_run(Path(job["run_dir"]), repo_id, token, private=bool(private))
    except Exception as exc:  # the library's message may quote the request; strip the token
        raise UserError(t("common.error", lang, error=str(exc).replace(token, "[REDACTED]"))) from None
    return t("results.published", lang, url=url)
