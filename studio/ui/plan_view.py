"""The Train tab's plan: which model, what fits on this computer, in the page's language
(studio/plan.py makes it; no torch). Shown for the chosen dataset and model, with the GPU
nvidia-smi reports, and its proposal (family, variant, base model, tier, resolution, steps, batch
size) put into the form with one click (`plan_values`)."""

from __future__ import annotations

import math
from pathlib import Path

from studio.i18n import t

SOURCES = {("memory", "published"): "plan.memory_published", ("memory", "estimated"): "plan.memory_estimated",
           ("memory", "measured"): "plan.memory_measured", ("time", "estimated"): "plan.time_estimated",
           ("time", "measured"): "plan.time_measured", ("time", "unknown"): "plan.time_unknown"}
NOTES = {"needs pairs": "plan.needs_pairs", "targets only": "plan.targets_only"}  # ModelRow.note


def chosen_model(family: str | None, variant: str | None, base: str | None) -> tuple[str | None, str | None]:
    """The family and variant the form has chosen for the plan to honour; (None, None) while the form
    is on the demo model (nothing chosen yet: the plan proposes the best model for the card)."""
    if not family or not base or base.strip() == "demo":
        return None, None
    return family, variant or None


def _number(value: float, digits: int) -> str:
    return "?" if math.isnan(value) else f"{value:.{digits}f}"


def plan_markdown(dataset_dir: Path | None, gpu: tuple[str, float] | None, lang: str = "en",
                  family: str | None = None, variant: str | None = None) -> str:
    from studio.plan import make_plan

    if dataset_dir is None or not Path(dataset_dir).is_dir():
        return ""
    try:
        plan = make_plan(dataset_dir, gpu[0] if gpu else None, gpu[1] if gpu else None, variant, family=family)
    except (OSError, ValueError):
        return ""
    if not plan.images:
        return ""
    hardware = plan.hardware if gpu else t("plan.no_gpu", lang)
    lines = [f"**{t('plan.heading', lang, hardware=hardware)}**",
             t("plan.proposal", lang, model=t("train.model_demo", lang) if plan.model == "demo" else plan.model,
               tier=plan.tier or t("plan.none_fits", lang), resolution=plan.resolution, steps=plan.steps,
               batch=plan.batch_size), "",
             "| " + " | ".join(t(f"plan.col_{c}", lang) for c in ("tier", "fits", "peak", "step", "minutes")) + " |",
             "|---|---|---:|---:|---:|"]
    for row in plan.rows:
        fits = t("plan.yes", lang) if row.fits else t("plan.no", lang)
        lines.append(f"| {row.tier} | {fits} | {row.peak_gib:.1f} | {_number(row.seconds_per_step, 2)} | "
                     f"{_number(row.minutes, 1)} |")
    row = plan.chosen() or plan.rows[0]
    lines += ["", t(SOURCES["memory", row.memory_kind], lang) + " " + t(SOURCES["time", row.time_kind], lang)]
    if row.caching_peak:
        lines.append(t("plan.caching_peak", lang, gib=row.peak_gib))
    if row.captions_on_cpu:
        from studio.families import get_family

        gib = get_family(plan.family).plan_facts(plan.variant).text_encoder_gib
        lines.append(t("plan.captions_on_cpu", lang, gib=f"{gib:g}", minutes=f"{row.caption_minutes:g}",
                       ram=f"{row.caption_ram_gib:g}"))
        from studio.plan import host_memory_gib, ram_short

        ram = host_memory_gib()
        if ram_short(row, ram):
            lines.append(t("plan.ram_short", lang, need=f"{row.caption_ram_gib:g}", have=f"{ram:.0f}"))
    if plan.pairs:
        lines.append(t("plan.pairs_used" if plan.edit else "plan.pairs_unused", lang, pairs=plan.pairs,
                       model=t("train.model_demo", lang) if plan.model == "demo" else plan.model))
    lines.append(t("plan.disk", lang, lora=round(plan.disk_mib["lora files"]),
                   checkpoints=round(plan.disk_mib["checkpoints"]), caches=round(plan.disk_mib["caches"]),
                   download=round(plan.disk_mib["base model download"])))
    return "\n".join(lines + _models_table(plan, lang))


def _models_table(plan, lang: str) -> list[str]:
    """Every family/variant: the tier it trains in on this card, else the card it would need."""
    if not plan.models:
        return []
    heading = t("plan.models_heading", lang, hardware=plan.hardware) if plan.gpu_gib else t("plan.models_no_gpu", lang)
    lines = ["", f"**{heading}**", "",
             "| " + " | ".join(t(f"plan.col_{c}", lang) for c in ("model", "on_card", "minutes")) + " |",
             "|---|---|---:|"]
    for m in plan.models:
        where = (t("plan.fits_tier", lang, tier=m.tier) if m.tier else
                 t("plan.needs_card", lang, gib=f"{m.needs_gib:g}"))
        if m.note:
            where += " · " + t(NOTES[m.note], lang)
        lines.append(f"| {m.title} | {where} | {_number(m.minutes, 1)} |")
    return lines


def plan_values(dataset_dir: Path | None, gpu: tuple[str, float] | None, preset: str | None,
                lang: str = "en", family: str | None = None, variant: str | None = None) -> dict:
    """The plan's proposal as Train-tab values: {"values": {setting key: widget value}, "yaml",
    "family", "variant", "base", "preset", "tier", "message"}. The chosen preset's settings (or, when
    it does not suit the proposed model, the first that does) for the proposed model and tier, with
    the plan's resolution, steps and batch size on top. UserError when there is nothing to apply."""
    import yaml

    from studio.config import list_presets
    from studio.families import get_family
    from studio.families.choice import variant_alias
    from studio.plan import make_plan
    from studio.ui.handlers import UserError, proposed_config
    from studio.ui.handlers.form import setting_values

    if dataset_dir is None or not Path(dataset_dir).is_dir():
        raise UserError(t("dataset.none_selected", lang))
    try:
        plan = make_plan(dataset_dir, gpu[0] if gpu else None, gpu[1] if gpu else None, variant, family=family)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not plan.images:
        raise UserError(t("plan.no_photos", lang))
    if plan.tier is None:
        raise UserError(t("plan.nothing_fits", lang, hardware=plan.hardware, model=plan.model,
                          need=min(r.needs_gib for r in plan.rows)))
    if plan.model == "demo":
        from studio.ui.handlers.model_choice import default_model

        (family, variant), base, setting = default_model(), "demo", "auto"
    else:
        family, variant = plan.family, plan.variant
        base = get_family(family).variants[variant].hub_id
        setting = variant_alias(get_family(family), variant)
    suits = list_presets(family=setting, variant=variant) if setting != "auto" else list_presets()
    preset = preset if preset in suits else (suits[0] if suits else preset)
    cfg = proposed_config(preset or "portrait", plan.tier, base, setting).to_dict()
    cfg["dataset"]["resolution"], cfg["schedule"]["max_steps"] = plan.resolution, plan.steps
    cfg["training"]["batch_size"] = plan.batch_size
    values = setting_values(cfg)
    model = t("train.model_demo", lang) if base == "demo" else f"{plan.model} ({base})"
    return {"values": values, "yaml": yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), "family": family,
            "variant": variant, "base": base, "preset": preset, "tier": plan.tier,
            "message": t("plan.applied", lang, model=model, tier=plan.tier, resolution=plan.resolution,
                         steps=plan.steps, batch=plan.batch_size)}
