"""The Train tab's plan: what fits on this computer, in the page's language (studio/plan.py
makes it; no torch). Shown for the chosen dataset, with the GPU nvidia-smi reports, and its
proposal put into the form with one click (`plan_values`)."""

from __future__ import annotations

import math
from pathlib import Path

from studio.i18n import t

SOURCES = {("memory", "published"): "plan.memory_published", ("memory", "measured"): "plan.memory_measured",
           ("time", "estimated"): "plan.time_estimated", ("time", "measured"): "plan.time_measured",
           ("time", "unknown"): "plan.time_unknown"}


def plan_markdown(dataset_dir: Path | None, gpu: tuple[str, float] | None, lang: str = "en") -> str:
    from studio.plan import make_plan

    if dataset_dir is None or not Path(dataset_dir).is_dir():
        return ""
    try:
        plan = make_plan(dataset_dir, gpu[0] if gpu else None, gpu[1] if gpu else None)
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
        step = "?" if math.isnan(row.seconds_per_step) else f"{row.seconds_per_step:.2f}"
        minutes = "?" if math.isnan(row.minutes) else f"{row.minutes:.1f}"
        lines.append(f"| {row.tier} | {fits} | {row.peak_gib:.1f} | {step} | {minutes} |")
    row = plan.chosen() or plan.rows[0]
    lines += ["", t(SOURCES["memory", row.memory_kind], lang) + " " + t(SOURCES["time", row.time_kind], lang),
              t("plan.disk", lang, lora=round(plan.disk_mib["lora files"]), checkpoints=round(plan.disk_mib["checkpoints"]),
                caches=round(plan.disk_mib["caches"]), download=round(plan.disk_mib["base model download"]))]
    return "\n".join(lines)


def plan_values(dataset_dir: Path | None, gpu: tuple[str, float] | None, preset: str | None,
                lang: str = "en") -> dict:
    """The plan's proposal as Train-tab values: {"values": {setting key: widget value}, "yaml",
    "base", "tier", "message"}. The chosen preset's settings for the proposed model and tier, with
    the plan's resolution, steps and batch size on top. UserError when there is nothing to apply."""
    import yaml

    from studio.plan import make_plan
    from studio.ui.handlers import UserError, proposed_config
    from studio.ui.handlers.form import setting_values

    if dataset_dir is None or not Path(dataset_dir).is_dir():
        raise UserError(t("dataset.none_selected", lang))
    plan = make_plan(dataset_dir, gpu[0] if gpu else None, gpu[1] if gpu else None)
    if not plan.images:
        raise UserError(t("plan.no_photos", lang))
    if plan.tier is None:
        raise UserError(t("plan.nothing_fits", lang, hardware=plan.hardware,
                          need=min(r.peak_gib for r in plan.rows)))
    # "FLUX.1 [dev]" → the hub id the model picker offers; the demo model is "demo".
    base = "demo" if plan.model == "demo" else "black-forest-labs/FLUX.1-" + plan.model.split("[")[1].rstrip("]")
    cfg = proposed_config(preset or "portrait", plan.tier, base).to_dict()
    cfg["dataset"]["resolution"], cfg["schedule"]["max_steps"] = plan.resolution, plan.steps
    cfg["training"]["batch_size"] = plan.batch_size
    values = setting_values(cfg)
    model = t("train.model_demo", lang) if base == "demo" else base
    return {"values": values, "yaml": yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), "base": base,
            "tier": plan.tier, "message": t("plan.applied", lang, model=model, tier=plan.tier,
                                            resolution=plan.resolution,
                                            steps=plan.steps, batch=plan.batch_size)}
