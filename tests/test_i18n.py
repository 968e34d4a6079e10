"""The English and Chinese catalogues: same keys, same placeholders, and every UI string
goes through them (no literal labels in studio/ui)."""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pytest

from studio import diagnostics
from studio.config import MESSAGES, ConfigError, Problem, TrainConfig, help_rows, list_presets, problems, resolve
from studio.i18n import LANGS, catalogue, lang_from_accept_language, md_text, normalise_lang, render_problem, t

UI_DIR = Path(__file__).resolve().parent.parent / "studio" / "ui"
# Keyword arguments and positional first arguments that put text on the page.
TEXT_KWARGS = {"label", "info", "placeholder", "title", "caption", "x_title", "y_title", "headers"}
TEXT_CALLS = {"Button", "Markdown", "Tab", "Accordion", "DownloadButton", "HTML"}


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_catalogues_have_the_same_keys():
    en, zh = set(catalogue("en")), set(catalogue("zh-CN"))
    assert not en - zh, f"missing in zh-CN.yaml: {sorted(en - zh)}"
    assert not zh - en, f"in zh-CN.yaml but not in English: {sorted(zh - en)}"


def test_generated_keys_are_translated():
    zh = catalogue("zh-CN")
    for key, *_ in help_rows():
        assert f"cfg.{key}" in zh, key
    for name in list_presets():
        assert f"preset.{name}.description" in zh
    for name in list_presets("memory"):
        assert f"tier.{name}.title" in zh
    for code in diagnostics.CATALOGUE:
        assert f"diag.{code}.advice" in zh
    from studio.families import families
    for family in families():  # the Train tab's model choice
        for variant in family.variants:
            assert f"family.{family.name}.{variant}.licence" in zh and f"family.{family.name}.{variant}.description" in zh


def test_placeholders_match_and_chinese_is_chinese():
    en, zh = catalogue("en"), catalogue("zh-CN")
    for key in en:
        assert _fields(en[key]) == _fields(zh[key]), key
        t(key, "zh-CN", **{f.split("!")[0]: "x" for f in _fields(zh[key])})  # formats without error
    han = re.compile(r"[\u4e00-\u9fff]")
    # Status words and titles such as "#" or "12 GB" may be the same in both; prose must not be.
    untranslated = [k for k in en if len(en[k]) > 25 and not han.search(zh[k])]
    assert not untranslated, untranslated


def _ui_sources():
    return sorted(UI_DIR.glob("*.py"))


def test_no_literal_ui_text_in_tab_modules():
    """Labels, info texts, buttons, tabs and headings come from the catalogue (L("key"))."""
    offenders = []
    for path in _ui_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            literals = [kw.value for kw in node.keywords if kw.arg in TEXT_KWARGS]
            if name in TEXT_CALLS and node.args:
                literals.append(node.args[0])
            for value in literals:
                texts = value.elts if isinstance(value, ast.List) else [value]  # headers=[...]
                for text in texts:
                    if isinstance(text, ast.Constant) and isinstance(text.value, str) and text.value.strip():
                        offenders.append(f"{path.name}:{node.lineno}: {name}(... {text.value!r})")
    assert not offenders, "literal UI text (put it in studio/i18n/*.yaml):\n" + "\n".join(offenders)


def test_every_key_used_in_the_ui_exists():
    en = catalogue("en")
    used = set()
    for path in _ui_sources():
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\b(?:L|t)\(\s*["']([A-Za-z0-9_.\-]+)["']""", text))
    assert used, "no catalogue keys found: the scan is broken"
    missing = sorted(k for k in used if k not in en)
    assert not missing, missing


def test_language_choice():
    assert lang_from_accept_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert lang_from_accept_language("en-US,en;q=0.9,zh;q=0.5") == "en"
    assert lang_from_accept_language("fr-FR") == "en" and lang_from_accept_language(None) == "en"
    assert normalise_lang("zh_Hans") == "zh-CN" and normalise_lang("de") == "en"
    assert set(LANGS) == {"en", "zh-CN"}
    assert t("tab.train", "zh-CN") == "3 · 训练" and t("tab.train", "xx") == "3 · Train"
    with pytest.raises(KeyError):
        t("no.such.key")


@pytest.mark.parametrize("user, key, expected", [
    ({"dataset": {"resolution": 100}}, "dataset.resolution", "必须是 16 的倍数"),
    ({"schedule": {"max_steps": 0}}, "schedule.max_steps", "至少为 1（当前为 0）"),
    ({"schedule": {"warmup_steps": 20, "max_steps": 10}}, "schedule.warmup_steps", "预热步数（20）必须少于训练步数（10）"),
    ({"optimizer": {"lr": 50.0}}, "optimizer.lr", "不是可用的学习率"),
    ({"memory": {"base_precision": "nf4"}}, "memory.base_precision", "需要 CUDA 显卡"),
])
def test_validation_problems_in_chinese(user, key, expected):
    found = [p for p in problems(resolve(user, tier="cpu")) if p.key == key]
    assert found, key
    zh = render_problem(found[0], "zh-CN")
    assert expected in zh and zh.startswith(f"`{key}`")
    assert render_problem(found[0], "en") == f"`{key}`: {md_text(found[0].detail())}"


@pytest.mark.parametrize("data, key, expected", [
    ({"lora": {"rnk": 8}}, "lora.rnk", "未知的设置项。您是不是想写 'rank'？"),
    ({"lora": {"rank": "x"}}, "lora.rank", "应为 a whole number"),
    ({"schedule": {"scheduler": "cosin"}}, "schedule.scheduler", "您是不是想写 'cosine'"),
])
def test_reading_problems_in_chinese(data, key, expected):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(data)
    (problem,) = err.value.items
    assert problem.key == key and expected in render_problem(problem, "zh-CN")


def test_problems_are_rendered_from_their_code_never_parsed_from_english(monkeypatch):
    """Every problem code has its own wording in each language; the Chinese text does not depend
    on how the English one is worded."""
    zh = catalogue("zh-CN")
    assert all(f"problem.{code}" in zh for code in MESSAGES)
    problem = Problem("schedule.max_steps", "at_least_1", {"value": 0})
    monkeypatch.setitem(MESSAGES, "at_least_1", "reworded: {value} is too small")
    assert problem.english() == "schedule.max_steps: reworded: 0 is too small"
    assert render_problem(problem, "zh-CN") == "`schedule.max_steps`：至少为 1（当前为 0）。"
    assert "translate_problem" not in dir(__import__("studio.i18n", fromlist=["x"]))


def _gradio_namespaces() -> set[str]:
    """The top-level keys of gradio's own English messages, read from the installed frontend."""
    import gradio

    assets = Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
    bundle = next(assets.glob("en-*.js")).read_text(encoding="utf-8")
    exported = re.search(r"export\{(.*?)\}", bundle).group(1)
    return {part.split(" as ")[-1].strip() for part in exported.split(",")} - {"default", "_name"}


def test_studio_keys_never_collide_with_gradios_own():
    """gr.I18n merges our keys into gradio's dictionary: a `common.error` of ours once replaced
    gradio's error badge text. Ours are sent under `studio.`."""
    from studio.i18n import GRADIO_GAPS, gradio_i18n
    from studio.ui.common import L

    namespaces = _gradio_namespaces()
    assert {"common", "status", "upload_text", "dataframe"} <= namespaces  # the scan found gradio's keys
    sent = gradio_i18n().translations
    assert set(sent) == set(LANGS)
    for lang, messages in sent.items():
        ours = {key for key in messages if key.startswith("studio.")}
        assert len(ours) > 300 and set(messages) - ours == set(GRADIO_GAPS[lang]), lang
        assert not {key.split(".")[0] for key in ours} & namespaces
    # The gaps are messages gradio's status tracker asks for (the browser test checks that no raw
    # key is ever shown or announced).
    import gradio

    assets = Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
    tracker = "".join(p.read_text(encoding="utf-8") for p in assets.glob("statustracker-*.js"))
    assert all(f"`{key}`" in tracker for lang in LANGS for key in GRADIO_GAPS[lang])
    assert L("common.error").key == "studio.common.error"
