"""The model card shown on the Results tab renders as Markdown in both languages: no raw `**`.

CommonMark (which Gradio's Markdown follows) closes `**` only when the run is "right-flanking":
after a punctuation mark such as the full-width colon "：" it must be followed by a space or
punctuation, so "**基础模型：**demo" shows its asterisks; "**基础模型**：demo" is bold.
"""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from studio.i18n import LANGS, catalogue, t
from studio.ui import runs

VALUES = {"name": "cat-lora", "trigger": "ohwx", "base": "demo", "licence": "Apache-2.0 许可", "steps": 20,
          "resolution": 512, "rank": 16, "lr": 0.0001, "file": "cat-lora.safetensors",
          "comfy": "cat-lora-comfyui.safetensors", "step": 12}


def rendered_text(markdown: str) -> str:
    """The visible text of rendered Markdown (tags stripped)."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    return "".join(child.content for token in tokens for child in (token.children or []) if child.type == "text")


@pytest.mark.parametrize("lang", LANGS)
def test_every_card_line_renders_without_raw_markup(lang):
    for key in sorted(k for k in catalogue(lang) if k.startswith("card.")):
        line = t(key, lang, **VALUES)
        assert "**" not in rendered_text(line), (lang, key, line)


def test_chinese_card_of_a_job_shows_bold_labels():
    job = {"name": "cat-lora", "step": 20, "files": [], "run_dir": "",
           "config": {"save": {"run_name": "cat-lora"}, "model": {"base": "demo"},
                      "dataset": {"trigger_word": "ohwx", "resolution": 512}, "lora": {"rank": 16},
                      "optimizer": {"lr": 1e-4}, "schedule": {"max_steps": 20}}}
    card = runs.model_card(job, "zh-CN")
    html = MarkdownIt("commonmark").render(card)
    assert "<strong>基础模型</strong>" in html and "<strong>许可</strong>" in html and "<strong>触发词</strong>" in html
    assert "**" not in rendered_text(card)
