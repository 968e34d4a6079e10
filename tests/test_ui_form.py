"""The Train tab's form: widget kinds come from the schema, fields are registered and addressed
by name, and no UI or i18n code reads meaning back out of display text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from studio.config import setting, settings
from studio.ui import handlers as h
from studio.ui.components import Components

ROOT = Path(__file__).resolve().parent.parent


def test_the_schema_gives_each_setting_its_widget_kind():
    assert setting("lora.rank").kind == "int" and setting("optimizer.lr").kind == "float"
    assert setting("dataset.buckets").kind == "bool" and setting("model.base").kind == "text"
    name = setting("optimizer.name")
    assert name.kind == "choice" and name.choices == ("adamw", "adamw8bit", "prodigy")
    for key in ("optimizer.betas", "lora.double_blocks", "optimizer.text_encoder_lr", "dataset.augmentations"):
        assert setting(key).kind == "yaml", key  # lists and settings that may be null: one line of YAML
    assert setting("lora.rank").bounds == (1, None) and setting("lora.alpha").bounds == (None, None)
    assert {s.kind for s in settings()} <= {"int", "float", "bool", "choice", "text", "yaml"}
    # The UI asks the schema, not the wording of the type.
    assert h.kind_of("schedule.max_steps") == "int" and h.kind_of("sample.prompts") == "lines"
    assert h.parse_widget("lora.rank", 8.0) == 8 and h.parse_widget("optimizer.betas", "[0.8, 0.9]") == [0.8, 0.9]
    with pytest.raises(h.UserError, match="lora.rank"):
        h.parse_widget("lora.rank", 2.5)


def test_no_ui_or_i18n_code_parses_display_text():
    """Widget kinds and choices come from studio.config.Setting, problems from Problem codes: the
    English wording of a type ("a whole number", "one of ...") or of a problem is never matched."""
    offenders = []
    for path in sorted((ROOT / "studio" / "ui").rglob("*.py")) + [ROOT / "studio" / "i18n" / "__init__.py"]:
        text = path.read_text(encoding="utf-8")
        for needle in ('"a whole number"', '"a number"', '"true or false"', '"one of "'):
            if needle in text:
                offenders.append(f"{path.relative_to(ROOT)}: {needle}")
    i18n = (ROOT / "studio" / "i18n" / "__init__.py").read_text(encoding="utf-8")
    assert "re.compile" not in i18n  # no patterns over English messages
    assert not offenders, offenders


def test_components_are_registered_and_addressed_by_name():
    c = Components()
    steps, rank, trigger = object(), object(), object()
    c.add("train.schedule.max_steps", steps)
    c.add("train.lora.rank", rank)
    c.add("captions.trigger", trigger)
    assert c["captions.trigger"] is trigger and "train.lora.rank" in c and "train.nope" not in c
    assert c.names("train") == ["schedule.max_steps", "lora.rank"]
    assert c.of("train", ["lora.rank", "schedule.max_steps"]) == [rank, steps]
    assert Components.named(["a", "b"], [1, 2]) == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="already registered"):
        c.add("captions.trigger", object())
    with pytest.raises(KeyError, match="train.nope"):
        c["train.nope"]
    with pytest.raises(ValueError, match="2 values for 1 fields"):
        Components.named(["a"], [1, 2])


def test_the_train_tab_registers_every_form_field_with_the_kind_the_schema_gives(tmp_path):
    from studio.ui.build import build_ui

    config = build_ui(tmp_path).config
    by_id = {c["props"].get("elem_id"): c for c in config["components"] if c["props"].get("elem_id")}
    for key in (s.key for s in h.advanced_settings()):
        widget = by_id["adv-" + key.replace(".", "-")]
        expected = {"int": "number", "float": "number", "bool": "checkbox", "choice": "dropdown",
                    "text": "textbox", "yaml": "textbox"}[setting(key).kind]
        assert widget["type"] == expected, key
    choices = [value for _, value in by_id["adv-optimizer-name"]["props"]["choices"]]
    assert choices == list(setting("optimizer.name").choices)
    for name in ("steps", "lr", "rank", "resolution", "sample-every", "prompts", "run-name", "trigger"):
        assert f"train-{name}" in by_id, name
    # Every field build_config reads has a component, and nothing else is in the form.
    assert len(h.form_names()) == len(set(h.form_names())) == len(h.CHOICE_FIELDS) + len(h.setting_keys())
