"""The Train tab's first choice, the model: family and variant (each with a one-line description,
its licence in plain words, whether it fits the detected GPU and the tier it would use), the base
models to offer for them, and what `model.family` the form's choice writes. Read from the family
registry only: a family module that registers itself appears here. No gradio or torch import."""

from __future__ import annotations

from studio.families import families, get_family
from studio.families.base import DEMO, Family
from studio.families.choice import chosen, lookup, variant_alias
from studio.i18n import t

GPU = tuple[str, float] | None  # (name, GiB) from studio.config.gpu.detect_gpu, None without one


def demo_choice() -> tuple[str, str] | None:
    """(family, variant) of the built-in demo model, or None when it is missing."""
    found = chosen({"base": DEMO})
    return (found[0].name, found[1]) if found else None


def default_model() -> tuple[str, str]:
    """(family, variant) the tab starts with: the demo model's (it stays the default base)."""
    return demo_choice() or (families()[0].name, next(iter(families()[0].variants)))


def fit_text(family: Family, variant: str, gpu: GPU, lang: str = "en") -> str:
    """Whether the variant trains on the detected GPU, and in which memory tier."""
    if gpu is None:
        return t("train.fit_no_gpu", lang)
    tier = family.tier_for(gpu[1], variant)
    if tier is None:
        return t("train.fit_too_small", lang, gib=f"{gpu[1]:g}", need=f"{family.variant_min_gpu_gib(variant):g}")
    return t("train.fit_tier", lang, gib=f"{gpu[1]:g}", tier=tier)


def _text(family: Family, variant: str, what: str, lang: str) -> str:
    try:
        return t(f"family.{family.name}.{variant}.{what}", lang)
    except KeyError:  # registered after the catalogue was read: the family's own English
        v = family.variants[variant]
        return v.description if what == "description" else v.licence_text


def description(family: Family, variant: str, lang: str = "en") -> str:
    return _text(family, variant, "description", lang)


def licence(family: Family, variant: str, lang: str = "en") -> str:
    return _text(family, variant, "licence", lang)


def family_choices(gpu: GPU = None, lang: str = "en") -> list[tuple[str, str]]:
    """(label, family name): the family's variants by title, and what it trains when that is not only
    text-to-image (edit-only, or edit LoRAs too when the dataset has pairs)."""
    out = []
    for family in families():
        titles = " / ".join(v.title for v in family.variants.values())
        kind = "reference" if family.reference_images and family.kind == "text-to-image" else family.kind
        kind = "" if kind == "text-to-image" else " · " + t(f"train.kind.{kind}", lang)
        out.append((f"{titles}{kind}", family.name))
    return out


def variant_choices(family_name: str, gpu: GPU = None, lang: str = "en") -> list[tuple[str, str]]:
    """(one line: title — description · fit, variant name) for each variant of a family."""
    family = get_family(family_name)
    return [(f"{v.title} — {description(family, name, lang)} · {fit_text(family, name, gpu, lang)}", name)
            for name, v in family.variants.items()]


def model_markdown(family_name: str, variant: str, gpu: GPU = None, lang: str = "en") -> str:
    """What the chosen variant is, its licence in plain words, and whether it fits this computer."""
    family = get_family(family_name)
    v = family.variants[variant]
    return "\n\n".join([f"**{v.title}** (`{variant_alias(family, variant)}`) — {description(family, variant, lang)}",
                        t("train.family_licence", lang, licence=licence(family, variant, lang)),
                        fit_text(family, variant, gpu, lang)])


def base_choices(family_name: str, variant: str) -> list[str]:
    """The base models the tab offers for a choice: the demo model when it is of this family and
    variant, then the variant's published model, then the family's other variants'."""
    family = get_family(family_name)
    ids = [family.variants[variant].hub_id] + [v.hub_id for n, v in family.variants.items() if n != variant]
    return ([DEMO] if demo_choice() == (family_name, variant) else []) + ids


def detected(base: str) -> tuple[str, str] | None:
    """(family, variant) of a local model folder, read from its config files; None for anything
    else (a published name, a missing folder, a model no family knows)."""
    from pathlib import Path

    base = (base or "").strip()
    if not base or base == DEMO or not Path(base).is_dir():
        return None
    found = chosen({"base": base})
    return (found[0].name, found[1]) if found and found[1] else None


def all_base_choices() -> list[str]:
    """Every base model any choice offers (what an imported config's base is matched against)."""
    return [DEMO] + [v.hub_id for f in families() for v in f.variants.values()]


def suggested_base(family_name: str, variant: str, gpu: GPU) -> str:
    """The demo model without a GPU (or when the variant does not fit), else the published model."""
    choices = base_choices(family_name, variant)
    family = get_family(family_name)
    fits = gpu is not None and family.tier_for(gpu[1], variant) is not None
    return choices[0] if not fits else family.variants[variant].hub_id


def suggested_tier(family_name: str, variant: str, base: str, gpu: GPU) -> str:
    """The memory tier for the choice: cpu for the demo model or without a GPU, else the family's tier."""
    if base == DEMO or gpu is None:
        return "cpu"
    return get_family(family_name).tier_for(gpu[1], variant) or "8gb"


def family_setting(family_name: str | None, variant: str | None, base: str, custom: bool) -> str:
    """The `model.family` the form writes: 'auto' for the demo model (it is what it is), the
    family for a model typed in (the run checks it against the model's files), and family-variant
    for a published model picked from the list."""
    if not family_name or base == DEMO:
        return "auto"
    family = get_family(family_name)
    if custom or variant not in family.variants:
        return family.name
    return variant_alias(family, variant)


def choice_of(model: dict) -> tuple[str, str]:
    """(family, variant) the tab shows for a config's `model` section."""
    found = lookup(str(model.get("family") or "auto"))
    if found is None or not found[1]:
        detected = chosen({"base": model.get("base") or DEMO})
        if detected and (found is None or detected[0] is found[0]):
            found = detected
    if found is None:
        return default_model()
    family, variant = found
    return family.name, variant or next(iter(family.variants))
