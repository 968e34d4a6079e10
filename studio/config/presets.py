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
    families: list[str] | None = None  # the families (or family-variant names) it suits; None: every text-to-image one

    def suits(self, family, variant: str = "") -> bool:
        """Whether this preset is offered for `family` (a Family) and its `variant` ('' for any)."""
        if self.families is None:
            return family.kind == "text-to-image"
        from studio.families.choice import lookup

        for entry in self.families:
            named = lookup(entry)
            if named and named[0].name == family.name and (not named[1] or not variant or named[1] == variant):
                return True
        return False


def _preset_path(name: str, kind: str) -> Path:
    folder = PRESETS_DIR / ("memory" if kind == "memory" else "")
    return folder / f"{name}.yaml"


def list_presets(kind: str = "subject", family=None, variant: str = "") -> list[str]:
    """The presets of a kind; with `family` (a Family or a model.family name), only those that suit it."""
    folder = PRESETS_DIR / "memory" if kind == "memory" else PRESETS_DIR
    names = sorted(p.stem for p in folder.glob("*.yaml"))
    if family is None or kind == "memory":
        return names
    if isinstance(family, str):
        from studio.families.choice import lookup

        found = lookup(family)
        if found is None:
            return names
        family, variant = found[0], variant or found[1]
    return [name for name in names if load_preset(name, kind).suits(family, variant)]


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
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _LOADED:
        _LOADED[key] = _parse_preset(name, kind, path)
    return copy.deepcopy(_LOADED[key])


# Presets read and checked once per version of their file: a dataset pick or a page load asks for
# several, and parsing and validating YAML costs milliseconds each while a job trains.
_LOADED: dict[tuple[str, int, int], Preset] = {}


def _parse_preset(name: str, kind: str, path: Path) -> Preset:
    data = parse_yaml(read_text(path), str(path))
    unknown = set(data) - {"title", "description", "guidance", "config", "families"}
    if unknown:
        raise ConfigError(Problem(str(path), "preset_unknown_keys", {"keys": sorted(unknown)}))
    preset = Preset(name=name, title=data.get("title", name), description=data.get("description", ""),
                    guidance=data.get("guidance") or {}, config=data.get("config") or {}, kind=kind,
                    families=_families(data.get("families"), path))
    TrainConfig.from_dict(preset.config)  # a preset must itself be a valid partial config
    return preset


def chosen_family(model: dict):
    """(family, variant or '') a config's model section chooses, or None (studio/families/choice.py)."""
    from studio.families.choice import chosen

    return chosen(model)


def _families(value, path: Path) -> list[str] | None:
    """A preset's `families:` list, each entry a family the registry knows."""
    if value is None:
        return None
    from studio.families.choice import accepted_names, lookup

    entries = value if isinstance(value, list) else [value]
    unknown = [str(e) for e in entries if not isinstance(e, str) or lookup(e) is None]
    if unknown or not entries:
        raise ConfigError(Problem(str(path), "preset_unknown_family",
                                  {"names": ", ".join(unknown) or "(none)",
                                   "valid": ", ".join(n for n in accepted_names() if n != "auto")}))
    return [str(e) for e in entries]


def resolve(user: dict | None = None, preset: str | None = None, tier: str | None = None,
            overrides: list[str] = ()) -> TrainConfig:
    """defaults < subject preset < the model family's overrides < memory-tier preset < user config
    < --set overrides. The family is the one `model.family` names, or for 'auto' the one the base
    model's files (or its published hub id) show, when that is known without the network."""
    user = copy.deepcopy(user or {})
    for item in overrides:
        user = deep_merge(user, parse_override(item))
    preset = preset or user.get("preset") or ""
    merged: dict = {}
    if preset:
        merged = deep_merge(merged, load_preset(preset).config)
        merged["preset"] = preset
    warmup_from = f"the {preset} preset's" if "warmup_steps" in merged.get("schedule", {}) else "the default"
    family = chosen_family({**merged.get("model", {}), **(user.get("model") or {})})
    if preset and family is not None and not load_preset(preset).suits(*family):
        raise ConfigError(Problem("preset", "preset_wrong_family", {
            "name": preset, "family": family[0].name, "valid": ", ".join(list_presets(family=family[0],
                                                                                     variant=family[1]))}))
    if family is not None and family[0].config_overrides:
        if "warmup_steps" in family[0].config_overrides.get("schedule", {}):
            warmup_from = f"the {family[0].name} family's"
        merged = deep_merge(merged, copy.deepcopy(family[0].config_overrides))
    tier = tier or user.get("memory", {}).get("tier") or merged.get("memory", {}).get("tier") or "auto"
    if tier == "auto":
        tier = gpu.detect_tier(*(family or ()))
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
