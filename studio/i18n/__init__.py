"""UI strings in English and Simplified Chinese: one catalogue per language, keys shared.

Static text (labels, tab names, buttons, choice labels) goes to the browser through Gradio's
`gr.I18n`, under the `studio.` namespace so no key can shadow one of Gradio's own (`common.*`,
`status.*` …). The browser shows it in the page's language, which studio/ui/locale.py fixes
before Gradio starts. Text a handler builds at run time (status messages, the quality report,
config problems, table headers) is looked up here with `t(key, lang)`, the language coming
from the same choice.

Some English strings already live in one place elsewhere, so they are generated instead of
copied (one source of truth): config help texts (`cfg.<key>` from studio/config/schema.py), the
wording of config problems (`problem.<code>` from studio/config/problems.py), preset
titles and descriptions (`preset.<name>.*`, `tier.<name>.*` from presets/), each model family
variant's description and licence (`family.<family>.<variant>.*` from studio/families), and the
diagnostics catalogue (`diag.<CODE>.*` from studio/diagnostics.py); the Advanced settings'
labels (`setting.<key>`) and choice labels (`choice.<key>.<value>`) are the config's own names in
English. zh-CN.yaml translates them.

No gradio or torch import at module load: handlers and tests use this without a UI.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml

LANGS = ("en", "zh-CN")
DEFAULT_LANG = "en"
LANG_NAMES = {"en": "English", "zh-CN": "简体中文"}
# Gradio merges every gr.I18n key into one dictionary with its own keys; ours live under this.
NAMESPACE = "studio."
# Messages gradio's own status tracker asks for but gradio 6.31 does not ship: `common.complete`
# (announced to screen readers after each event; no language has it, so the raw key was read
# out) and, in Chinese, the queue position and "progress" (they fell back to English). These
# fill exactly those gaps, under gradio's own keys.
GRADIO_GAPS = {
    "en": {"common.complete": "Done"},
    "zh-CN": {"common.complete": "完成", "common.progress": "进度",
              "status.queue_position": "排队中：第 {position} 位，共 {size} 位"},
}
_HERE = Path(__file__).resolve().parent


def _generated_english() -> dict[str, str]:
    from studio import diagnostics
    from studio.config import MESSAGES, help_rows, list_presets, load_preset, settings

    out = {f"cfg.{key}": text for key, _, _, text in help_rows()}
    for item in settings():
        out[f"setting.{item.key}"] = item.key
        out.update({f"choice.{item.key}.{value}": value for value in item.choices})
    out.update({f"problem.{code}": text for code, text in MESSAGES.items()})
    for kind, prefix in (("subject", "preset"), ("memory", "tier")):
        for name in list_presets(kind):
            preset = load_preset(name, kind)
            out[f"{prefix}.{name}.title"] = preset.title
            out[f"{prefix}.{name}.description"] = " ".join(preset.description.split())
    from studio.families import families

    for family in families():
        for name, variant in family.variants.items():
            out[f"family.{family.name}.{name}.description"] = variant.description
            out[f"family.{family.name}.{name}.licence"] = variant.licence_text
    for code, diagnosis in diagnostics.CATALOGUE.items():
        out[f"diag.{code}.title"] = diagnosis.title
        out[f"diag.{code}.advice"] = diagnosis.advice
    return out


@lru_cache(maxsize=None)
def catalogue(lang: str) -> dict[str, str]:
    """All strings of one language (a copy is cheap to make; callers must not mutate it)."""
    if lang not in LANGS:
        raise KeyError(f"unknown language {lang!r}; known: {', '.join(LANGS)}")
    data = yaml.safe_load((_HERE / f"{lang}.yaml").read_text(encoding="utf-8")) or {}
    if lang == "en":
        data = {**_generated_english(), **data}
    return {str(k): str(v) for k, v in data.items()}


def normalise_lang(value: str | None) -> str:
    """'zh', 'zh-CN', 'zh_Hans', 'zh-TW' → 'zh-CN'; anything else → 'en'."""
    if value and value.replace("_", "-").lower().startswith("zh"):
        return "zh-CN"
    return DEFAULT_LANG


def lang_from_accept_language(header: str | None) -> str:
    """The first language of an Accept-Language header that we speak."""
    for part in (header or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANG


def t(msg_key: str, lang: str | None = DEFAULT_LANG, /, **values) -> str:
    """The string for `msg_key` in `lang` (English if that language lacks it), formatted.
    Positional-only, so a template may itself have a `{key}` field."""
    lang = lang if lang in LANGS else normalise_lang(lang)
    text = catalogue(lang).get(msg_key) or catalogue(DEFAULT_LANG).get(msg_key)
    if text is None:
        raise KeyError(f"no UI string {msg_key!r}")
    return text.format(**values) if values else text


def has(key: str) -> bool:
    return key in catalogue(DEFAULT_LANG)


def config_help(key: str, lang: str = DEFAULT_LANG) -> str:
    return t(f"cfg.{key}", lang)


def gradio_i18n():
    """A `gr.I18n` with every catalogue, keys under NAMESPACE (gradio imported here, not at
    module load)."""
    import gradio as gr

    return gr.I18n(**{lang: {**GRADIO_GAPS[lang], **{NAMESPACE + k: v for k, v in catalogue(lang).items()}}
                      for lang in LANGS})


def md_text(value) -> str:
    """User-supplied text (file names, run names, setting values) shown as itself inside Markdown:
    HTML tags and Markdown marks are escaped, so '<b>x</b>' reads '<b>x</b>', not a bold 'x'."""
    import html

    escaped = html.escape(str(value), quote=False)
    # '_' stays: inside a word (max_steps, red_sneaker_0) it never starts emphasis.
    return re.sub(r"([\\`*\[\]~])", r"\\\1", escaped)


# ---------------------------------------------------------------- validation problems


def render_problem(problem, lang: str = DEFAULT_LANG) -> str:
    """One studio.config.Problem as Markdown in the user's language: '`setting`: what to change'.
    The wording is the catalogue's `problem.<code>`, filled with the problem's values; what a user
    typed shows as itself (escaped)."""
    detail = md_text(t(f"problem.{problem.code}", lang, **problem.params))
    if not problem.key:
        return detail
    return t("problem.prefix", lang, key=f"`{problem.key}`", detail=detail)
