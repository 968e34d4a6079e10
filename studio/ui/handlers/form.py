"""The Train tab's form, addressed by name: which settings it shows where, how each is edited
(the kind comes from the schema, studio/config/docs.py), and conversions between config values
and what a widget holds. No gradio import."""

from __future__ import annotations

from typing import Any

import yaml

from studio.config import Setting, settings
from studio.i18n import t
from studio.ui.handlers.common import UserError

# The form's fields that are not settings of their own (chosen by pickers, or written into
# several settings): model family and variant, base model (+ a custom one), preset, memory tier,
# run name, trigger word.
CHOICE_FIELDS = ("family", "variant", "base", "custom_base", "preset", "tier", "run_name", "trigger")
# Settings shown up front on the Train tab, each with its own label (`train.<label>`).
BASIC = {"schedule.max_steps": "steps", "optimizer.lr": "lr", "lora.rank": "rank",
         "dataset.resolution": "resolution", "sample.every": "sample_every", "sample.prompts": "prompts"}
BASIC_KEYS = tuple(BASIC)
# Chosen elsewhere in the UI (dataset picker, model/tier pickers, run name), or fixed by the worker.
NOT_IN_ADVANCED = set(BASIC_KEYS) | {"preset", "model.base", "model.family", "dataset.path",
                                     "dataset.trigger_word", "memory.tier", "save.output_dir", "save.run_name"}
# Sample prompts are typed one per line in a box of several lines.
LINES = "lines"


def advanced_settings() -> list[Setting]:
    """Every setting the "Advanced" section shows: all but those the tab shows elsewhere."""
    return [s for s in settings() if s.key not in NOT_IN_ADVANCED]


def setting_keys() -> list[str]:
    """The settings the form edits: the basic ones, then the advanced ones."""
    return list(BASIC_KEYS) + [s.key for s in advanced_settings()]


def form_names() -> list[str]:
    """Every field of the form, in the order the tab registers them."""
    return list(CHOICE_FIELDS) + setting_keys()


def kind_of(key: str) -> str:
    """The input a setting gets: int, float, bool, choice, text, yaml (or lines for the prompts)."""
    if key == "sample.prompts":
        return LINES
    return next(s.kind for s in settings() if s.key == key)


def get_key(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def set_key(data: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def widget_value(key: str, value: Any) -> Any:
    """A config value as its widget shows it (lists and nulls as one line of YAML)."""
    kind = kind_of(key)
    if kind == LINES:
        return "\n".join(value)
    if kind == "yaml":
        if value is None:  # "not set" reads as an empty box, not as YAML's "null"
            return ""
        return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()
    return value


def parse_widget(key: str, raw: Any, lang: str = "en") -> Any:
    """A widget's value back into a config value; raises UserError naming the setting."""
    kind = kind_of(key)
    try:
        if kind == LINES:
            return [p.strip() for p in (raw or "").splitlines() if p.strip()]
        if kind == "yaml":
            return yaml.safe_load(raw) if isinstance(raw, str) and raw.strip() else None
        if kind == "int":
            if raw is None or float(raw) != int(float(raw)):
                raise ValueError("a whole number is needed")
            return int(float(raw))
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return bool(raw)
        return raw if raw is not None else ""
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise UserError(t("train.bad_value", lang, key=key, value=raw, error=exc)) from None


def setting_values(config: dict) -> dict[str, Any]:
    """{setting key: widget value} for every setting the form edits, from a config's dict."""
    return {key: widget_value(key, get_key(config, key)) for key in setting_keys()}
