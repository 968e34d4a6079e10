"""Train tab: the detected GPU and its tier, licence and preset texts, what a preset proposes for
the chosen model (model_choice.py: family and variant), the config built from the form's named
fields, import/export, and queueing the job."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from studio.config import (MEMORY_TIERS, ConfigError, TrainConfig, deep_merge, list_presets, resolve,
                           tier_for_memory)
from studio.config.gpu import detect_gpu  # noqa: F401  (re-exported: the page asks it)
from studio.demo import studio_run
from studio.i18n import t
from studio.ui.handlers import model_choice
from studio.ui.handlers.checks import check_config, problems_markdown
from studio.ui.handlers.common import UserError, dataset_dir
from studio.ui.handlers.form import BASIC_KEYS, CHOICE_FIELDS, get_key, parse_widget, set_key, setting_values

# What the Train tab proposes on the built-in demo model instead of a preset's real-model run
# (2,500 steps at 768 px would take most of an hour on a CPU): a first LoRA in about two minutes
# on a 2-core CPU, at the demo model's own resolution and sampling steps (studio/demo).
# Everything else still comes from the preset and tier; real models keep the presets' values.
DEMO_RUN = studio_run()
CHOICE_NAMES = set(CHOICE_FIELDS)


def gpu_message(lang: str = "en", family: str | None = None, variant: str = "") -> tuple[str, str]:
    """(markdown, suggested tier) for the detected GPU and a model family (FLUX.1 when none)."""
    gpu = detect_gpu()
    if gpu is None:
        return t("train.gpu_none", lang), "cpu"
    tier = tier_for_memory(gpu[1], family, variant)
    return t("train.gpu_detected", lang, name=gpu[0], gib=gpu[1], tier=tier), tier


def licence_text(base: str, lang: str = "en") -> str:
    """The licence of a base model in plain words, from its config files or its published name
    (never the network)."""
    from studio.families.choice import chosen, from_name

    base = (base or "").strip()
    if base == "demo":
        return t("train.licence_demo", lang)
    found = chosen({"base": base}) if base else None
    if found is None and base and not Path(base).is_dir():
        found = from_name(base)
    if found is None or not found[1]:
        return t("train.licence_unknown", lang)
    return model_choice.licence(found[0], found[1], lang)


def preset_text(preset: str, lang: str = "en") -> str:
    return f"**{t(f'preset.{preset}.title', lang)}** — {t(f'preset.{preset}.description', lang)}"


def tier_text(tier: str, lang: str = "en") -> str:
    return f"**{t(f'tier.{tier}.title', lang)}** — {t(f'tier.{tier}.description', lang)}"


def proposed_config(preset: str | None, tier: str | None, base: str = "demo", family: str = "auto") -> TrainConfig:
    """What the Train tab proposes for a preset + tier + model: the presets' values with the model
    family's overrides, or DEMO_RUN's on the demo model."""
    base = (base or "demo").strip() or "demo"
    user = {"model": {"base": base, "family": family or "auto"}}
    if base == "demo":
        user = deep_merge(user, DEMO_RUN)
    return resolve(user, preset=preset or None, tier=tier or "cpu")


def preset_values(preset: str, tier: str, base: str = "demo", family: str = "auto") -> tuple[dict[str, Any], str]:
    """({setting key: widget value}, yaml) for a preset + tier + model, to fill the Train tab."""
    cfg = proposed_config(preset, tier, base, family).to_dict()
    return setting_values(cfg), yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def form_model(form: dict[str, Any]) -> dict[str, str]:
    """The config's `model` section from the form's model choice (family, variant, base, custom base)."""
    custom = (form.get("custom_base") or "").strip()
    base = custom or form.get("base") or "demo"
    return {"base": base, "family": model_choice.family_setting(form.get("family"), form.get("variant"), base,
                                                                bool(custom))}


def build_config(data_dir: Path, *, dataset: str | None, form: dict[str, Any], lang: str = "en") -> TrainConfig:
    """The resolved config from the Train tab's fields, named as in form.form_names() (a setting
    the form leaves out keeps its preset value). Raises UserError with every problem."""
    preset, tier = form.get("preset"), form.get("tier")
    model = form_model(form)
    user: dict = {}
    problems: list[str] = []
    try:  # an advanced field still at the preset's (or family's) value is not the user's choice
        preset_cfg = resolve({"model": dict(model)}, preset=preset or None, tier=tier or "cpu").to_dict()
    except ConfigError:
        preset_cfg = {}
    for key, raw in form.items():
        if key in CHOICE_NAMES:
            continue
        try:
            value = parse_widget(key, raw, lang)
        except UserError as exc:
            problems.append(str(exc))
            continue
        if key in BASIC_KEYS or not preset_cfg or value != get_key(preset_cfg, key):
            set_key(user, key, value)
    set_key(user, "model.base", model["base"])
    set_key(user, "model.family", model["family"])
    set_key(user, "dataset.trigger_word", (form.get("trigger") or "").strip())
    set_key(user, "save.run_name", (form.get("run_name") or "").strip() or "my-lora")
    if dataset:
        set_key(user, "dataset.path", str(dataset_dir(data_dir, dataset, lang) / "images"))
    if problems:
        raise UserError("\n".join(["**" + t("train.problems", lang) + "**"] + [f"- {p}" for p in problems]))
    try:
        return resolve(user, preset=preset or None, tier=tier or "cpu")
    except ConfigError as exc:
        raise UserError(problems_markdown(exc.items, lang)) from None


def start_training(data_dir: Path, cfg: TrainConfig, lang: str = "en") -> tuple[int, str]:
    """Validate, then queue the job; returns (job id, message)."""
    from studio.jobs import JobStore

    refused = os.environ.get("STUDIO_TRAINING_REFUSED")  # set by app.py on a Space without a login
    if refused:
        raise UserError(refused)
    check_config(data_dir, cfg, lang)
    job_id = JobStore(data_dir).create_job(cfg.save.run_name, cfg.to_dict())
    return job_id, t("train.queued", lang, job_id=job_id)


def export_config(cfg: TrainConfig) -> str:
    """Write the config to a temp file for the download button (gradio serves the temp dir)."""
    folder = Path(tempfile.mkdtemp(prefix="studio-config-"))
    path = folder / f"{cfg.save.run_name or 'config'}.yaml"
    path.write_text(cfg.to_yaml(), encoding="utf-8")
    return str(path)


def import_config(path: str, lang: str = "en") -> TrainConfig:
    try:
        return TrainConfig.from_yaml(Path(path).read_text(encoding="utf-8"), Path(path).name)
    except ConfigError as exc:
        raise UserError(problems_markdown(exc.items, lang)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(t("common.error", lang, error=exc)) from None


def fields_from_config(cfg: TrainConfig) -> dict[str, Any]:
    """Every field the Train tab shows, by name (form.form_names()), and "yaml", from a config."""
    d = cfg.to_dict()
    base = d["model"]["base"]
    family, variant = model_choice.choice_of(d["model"])
    listed = base in model_choice.base_choices(family, variant)
    presets = list_presets(family=family, variant=variant)
    return {
        "family": family, "variant": variant,
        "base": base if listed else model_choice.base_choices(family, variant)[0],
        "custom_base": "" if listed else base,
        "preset": d["preset"] if d["preset"] in presets else None,
        "tier": d["memory"]["tier"] if d["memory"]["tier"] in MEMORY_TIERS else "cpu",
        "run_name": d["save"]["run_name"], "trigger": d["dataset"]["trigger_word"],
        **setting_values(d), "yaml": cfg.to_yaml(),
    }
