"""Presets (a subject's settings, a memory tier's settings) and `resolve`, which layers them:
defaults < subject preset < memory-tier preset < user config < --set overrides."""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from pathlib import Path

from . import gpu
from .gpu import MEMORY_TIERS
from .load import deep_merge, parse_override, parse_yaml, read_text
from .problems import ConfigError, Problem
from .schema import TrainConfig

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
PRESETS_DIR = REPO_ROOT / "presets"


@dataclass
class Preset:
    name: str
    title: str
    description: str
    guidance: dict
    config: dict
    kind: str  # "subject" or "memory"
    families: list[str] | None = None  # the model families it suits; None: every text-to-image family


def _preset_path(name: str, kind: str) -> Path:
    folder = PRESETS_DIR / ("memory" if kind == "memory" else "")
    return folder / f"{name}.yaml"


def list_presets(kind: str = "subject") -> list[str]:
    folder = PRESETS_DIR / "memory" if kind == "memory" else PRESETS_DIR
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _not_found(name: str, kind: str) -> Problem:
    if kind == "memory":
        known = [t for t in MEMORY_TIERS if t in list_presets(kind)]
        return Problem("", "tier_not_found", {"name": name, "valid": ", ".join(known)})
    known = list_presets(kind)
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    return Problem("", "preset_not_found_near" if match else "preset_not_found",
                   {"name": name, "valid": ", ".join(known), "suggestion": match[0] if match else None})


def load_preset(name: str, kind: str = "subject") -> Preset:
    path = _preset_path(name, kind)
    if not path.is_file():
        raise ConfigError(_not_found(name, kind))
    data = parse_yaml(read_text(path), str(path))
    unknown = set(data) - {"title", "description", "guidance", "config", "families"}
    if unknown:
        raise ConfigError(Problem(str(path), "preset_unknown_keys", {"keys": sorted(unknown)}))
    preset = Preset(name=name, title=data.get("title", name), description=data.get("description", ""),
                    guidance=data.get("guidance") or {}, config=data.get("config") or {}, kind=kind,
                    families=data.get("families"))
    TrainConfig.from_dict(preset.config)  # a preset must itself be a valid partial config
    return preset


def resolve(user: dict | None = None, preset: str | None = None, tier: str | None = None,
            overrides: list[str] = ()) -> TrainConfig:
    """defaults < subject preset < memory-tier preset < user config < --set overrides."""
    user = copy.deepcopy(user or {})
    for item in overrides:
        user = deep_merge(user, parse_override(item))
    preset = preset or user.get("preset") or ""
    merged: dict = {}
    if preset:
        merged = deep_merge(merged, load_preset(preset).config)
        merged["preset"] = preset
    warmup_from = f"the {preset} preset's" if "warmup_steps" in merged.get("schedule", {}) else "the default"
    tier = tier or user.get("memory", {}).get("tier") or merged.get("memory", {}).get("tier") or "auto"
    if tier == "auto":
        tier = gpu.detect_tier()
    merged = deep_merge(merged, load_preset(tier, "memory").config)
    merged = deep_merge(merged, user)
    merged.setdefault("memory", {})["tier"] = tier
    if preset:
        merged["preset"] = preset
    cfg = TrainConfig.from_dict(merged)
    if "warmup_steps" not in (user.get("schedule") or {}):
        _fit_warmup(cfg, warmup_from)
    return cfg


def _fit_warmup(cfg: TrainConfig, chosen_by: str) -> None:
    """A preset's or the default warm-up that would not fit a short run becomes a tenth of the run.
    Only a warm-up the user set is an error (validate), since only then is it the user's choice."""
    s = cfg.schedule
    if s.scheduler == "constant" or s.max_steps < 1 or s.warmup_steps < s.max_steps:
        return
    chosen = s.warmup_steps
    s.warmup_steps = s.max_steps // 10
    cfg.notes["schedule.warmup_steps"] = (f"fitted to {s.max_steps} steps (a tenth of the run): "
                                          f"{chosen_by} {chosen} would not fit")
