"""The Train tab's plan: what fits on this computer, in the page's language (studio/plan.py
makes it; no torch). Shown for the chosen dataset, with the GPU nvidia-smi reports."""

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
