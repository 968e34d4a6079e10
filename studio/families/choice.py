"""What `model.family` may say and what it means, from the registry alone.

Accepted: "auto" (detect the family from the model's files), a registered family's name, or a
variant alias — `<family>-<variant>` (`flux1-dev`, `flux1-schnell`), or the family's own name
when that already names its variant (`flux2-dev` with variant `dev`). A family registered later
gets its names here without any change to this module.

No torch import, and no network: the UI and `resolve` use this while a config is edited.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from .base import DEMO, Family, ModelInfo, families, get_family

AUTO = "auto"


def variant_alias(family: Family, variant: str) -> str:
    """The one name that says both family and variant."""
    return family.name if variant in family.name.split("-") else f"{family.name}-{variant}"


def family_names() -> dict[str, tuple[Family, str]]:
    """{accepted name: (family, variant or '' for any variant)}, without 'auto'."""
    names: dict[str, tuple[Family, str]] = {}
    for family in families():
        for variant in family.variants:
            names.setdefault(variant_alias(family, variant), (family, variant))
    for family in families():  # a family's own name means any of its variants, unless it names one
        if family.name not in names or len(family.variants) != 1:
            names[family.name] = (family, "")
    return names


def accepted_names() -> list[str]:
    return [AUTO, *sorted(family_names())]


def lookup(setting: str) -> tuple[Family, str] | None:
    """(family, variant or '') that a `model.family` value names; None for 'auto' or an unknown name."""
    return family_names().get((setting or AUTO).strip().lower())


def nearest(setting: str) -> str | None:
    match = difflib.get_close_matches((setting or "").strip().lower(), list(family_names()), n=1, cutoff=0.5)
    return match[0] if match else None


def loose(name: str) -> tuple[Family, str] | None:
    """A model.family name, or a bare variant name ('dev', 'schnell'), which means the first
    registered family that has such a variant (the built-in FLUX.1 for those two)."""
    found = lookup(name)
    if found is not None:
        return found
    return next(((f, name) for f in families() if name in f.variants), None)


def token_limit(name: str) -> int | None:
    """The text-token limit of what `name` (see loose) names; a whole family: its strictest."""
    found = loose(name)
    if found is None:
        return None
    family, variant = found
    return family.token_limit(variant) if variant else min(family.token_limit(v) for v in family.variants)


def shortest_token_limit() -> tuple[int, str]:
    """(limit, model title) of the registered model that reads the fewest text tokens: captions
    shorter than this are read whole by every base model."""
    return min(((v.token_limit, v.title) for f in families() for v in f.variants.values()), key=lambda lt: lt[0])


def _is_hub_id(base: str) -> bool:
    return base.count("/") == 1 and not base.startswith(("/", ".", "~")) and not Path(base).exists()


def chosen(model: dict) -> tuple[Family, str] | None:
    """The family (and variant, '' when unknown) a config's `model` section chooses, found without
    the network and without weights: `model.family` when it names one; else, for 'auto', the
    model's own config files (the demo model or a local folder) or a published hub id. None when
    it cannot be told this cheaply (an unknown hub id: the run detects it before loading)."""
    setting = str(model.get("family") or AUTO)
    if setting.strip().lower() != AUTO:
        return lookup(setting)
    base = str(model.get("base") or DEMO).strip() or DEMO
    if base != DEMO and _is_hub_id(base):
        for family in families():
            for name, variant in family.variants.items():
                if variant.hub_id.lower() == base.lower():
                    return family, name
        return None
    from .base import ModelError, inspect_model

    try:
        info = inspect_model(base)
    except (ModelError, OSError, ValueError):
        return None
    return info.model_family, info.family


def from_name(base: str) -> tuple[Family, str] | None:
    """The published variant whose repository name a model id contains ('someone/FLUX.1-schnell-v2'
    → flux1 schnell): a guess for names no config file can be read for. The longest name wins."""
    lowered = (base or "").lower()
    found = [(len(v.hub_id), family, name) for family in families() for name, v in family.variants.items()
             if v.hub_id.split("/")[-1].lower() in lowered]
    if not found:
        return None
    _, family, name = max(found, key=lambda item: item[0])
    return family, name


def read_from(info: ModelInfo) -> str:
    """Which files the family of a model was read from, for messages."""
    folder = Path(info.path)
    if not folder.is_dir():
        return f"transformer/config.json of {info.source}"
    files = [folder / name for name in ("model_index.json", "transformer/config.json") if (folder / name).is_file()]
    return " and ".join(str(f) for f in files)


def mismatch(setting: str, info: ModelInfo) -> str | None:
    """What is wrong when `model.family` names another family or variant than the model is; None
    when they agree (or the setting is 'auto')."""
    wanted = lookup(setting)
    if wanted is None:
        return None
    family, variant = wanted
    found = info.model_family
    if family.name == info.family_name and variant in ("", info.family):
        return None
    asked = family.variants[variant].title if variant else family.name
    is_now = found.variants[info.family].title
    return (f"model.family is '{setting}' ({asked}), but {info.source} is {is_now} (family '{info.family_name}', "
            f"variant '{info.family}'), as {read_from(info)} say. Set model.family to "
            f"'{variant_alias(found, info.family)}' or 'auto', or choose a {asked} model as model.base.")


def describe(family: Family) -> dict:
    """A family's facts as plain data: what `python -m studio families --json` prints."""
    variants = {}
    for name, v in family.variants.items():
        variants[name] = {
            "alias": variant_alias(family, name), "title": v.title, "hub_id": v.hub_id,
            "description": v.description, "parameters_b": v.parameters_b or None,
            "licence_id": v.licence_id, "licence": v.licence_text, "token_limit": v.token_limit,
            "steps": v.steps, "guidance": v.guidance,
            "weight_gib": family.variant_weight_gib(name),
            "tiers": [{"tier": tier, "min_gib": need} for tier, need in family.variant_tiers(name)],
            "min_gpu_gib": family.variant_min_gpu_gib(name),
        }
    return {"name": family.name, "kind": family.kind, "reference_images": family.reference_images,
            "pipeline": family.pipeline_class_name,
            "config_overrides": json.loads(json.dumps(family.config_overrides)), "variants": variants}


__all__ = ["AUTO", "accepted_names", "chosen", "describe", "family_names", "from_name", "get_family", "lookup",
           "loose", "mismatch", "shortest_token_limit", "token_limit",
           "nearest", "read_from", "variant_alias"]
