"""What the Train tab checks before it queues a job, beyond studio.config.validate: where the
model comes from, no access token in any setting, a dataset with images. Problems are
studio.config.Problem, shown in the user's language."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from studio.config import Problem, TrainConfig, problems
from studio.i18n import render_problem, t
from studio.ui.handlers.common import UserError

HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")


def problems_markdown(found: list[Problem], lang: str = "en") -> str:
    return "\n".join(["**" + t("train.problems", lang) + "**"] + [f"- {render_problem(p, lang)}" for p in found])


def source_problems(cfg: TrainConfig) -> list[Problem]:
    """Where the model comes from, checked before anything is queued: 'demo', a hub id
    (owner/name) or a local diffusers folder; never an arbitrary server path (HARDENING_NOTES §1)."""
    found = []
    base = (cfg.model.base or "").strip()
    local = Path(base).expanduser()
    if base == "demo":
        pass
    elif HUB_ID_RE.match(base) and ".." not in base and not local.exists():
        pass
    elif not (local.is_dir() and (local / "model_index.json").is_file()):
        found.append(Problem("model.base", "model_source", {"value": base}))
    single = (cfg.model.transformer_file or "").strip()
    if single and not (single.endswith(".safetensors") and Path(single).expanduser().is_file()):
        found.append(Problem("model.transformer_file", "transformer_file", {"value": single}))
    return found


def token_problems(cfg: TrainConfig) -> list[Problem]:
    """Settings that hold something shaped like an access token: refused, never stored."""
    from studio.jobs import redact

    found: list[str] = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and redact(value) != value and key not in found:
            found.append(key)

    walk(cfg.to_dict(), "")
    return [Problem(key, "token_in_setting") for key in found]


def check_config(data_dir: Path, cfg: TrainConfig, lang: str = "en") -> None:
    """Validation plus what only the UI knows (a dataset with images); raises UserError."""
    found = problems(cfg) + source_problems(cfg) + token_problems(cfg)
    if found:
        raise UserError(problems_markdown(found, lang))
    images = Path(cfg.dataset.path) if cfg.dataset.path else None
    if images is None or not images.is_dir():
        raise UserError(t("train.no_dataset", lang))
    if not any(images.glob("*.png")):
        raise UserError(t("train.empty_dataset", lang, name=images.parent.name))
