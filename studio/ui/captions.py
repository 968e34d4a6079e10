"""Captions tab: auto-caption (basic / Florence-2 / BLIP) with a trigger word, edit each
caption beside its image, bulk find/replace and prefix/suffix, with token and language notes,
and one instruction for every pair of an edit dataset."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from studio.i18n import t
from studio.ui import handlers as h
from studio.ui import report_view as rv
from studio.ui import remembered
from studio.ui.common import Context, L, choice_labels, guarded
from studio.ui.pairs_view import instruction_for_all

CAPTIONERS = ["basic", "florence2", "blip"]
PLACEMENTS = ["start", "end", "none"]
COLUMNS = ("captions.col_image", "captions.col_caption", "captions.col_tokens", "captions.col_note")


def _columns(lang: str) -> list[str]:
    return [t(key, lang) for key in COLUMNS]


def build(ctx: Context) -> None:
    d = ctx.data_dir
    gr.Markdown(L("captions.english_note"))
    with gr.Row():
        captioner = gr.Dropdown(label=L("captions.captioner"), choices=choice_labels("captioner", CAPTIONERS),
                                value="basic",
                                info=L("captions.captioner_help"), elem_id="captions-captioner")
        trigger = gr.Textbox(label=L("captions.trigger"), value="ohwx", elem_id="captions-trigger")
        class_word = gr.Textbox(label=L("captions.class_word"), elem_id="captions-class")
    with gr.Row():
        placement = gr.Radio(label=L("captions.placement"), choices=choice_labels("placement", PLACEMENTS),
                             value="start", elem_id="captions-placement")
        prefix = gr.Textbox(label=L("captions.prefix"))
        suffix = gr.Textbox(label=L("captions.suffix"))
    with gr.Row():
        run_missing = gr.Button(L("captions.run_missing"), variant="primary", elem_id="captions-run-missing")
        run_all = gr.Button(L("captions.run_all"))
    status = gr.Markdown(elem_id="captions-status")
    with gr.Row():
        gallery = gr.Gallery(label=L("captions.gallery"), columns=5, height=320, allow_preview=False, scale=3,
                             elem_id="captions-gallery")
        with gr.Column(scale=2):
            selected = gr.Textbox(label=L("captions.selected"), interactive=False, elem_id="captions-selected")
            caption = gr.Textbox(label=L("captions.edit"), lines=4, elem_id="captions-edit")
            save = gr.Button(L("captions.save"), elem_id="captions-save")
    table = gr.Dataframe(label=L("captions.table"), headers=_columns("en"),
                         interactive=False, wrap=True, elem_id="captions-table")
    with gr.Accordion(L("captions.bulk_heading"), open=False):
        with gr.Row():
            find = gr.Textbox(label=L("captions.find"))
            replace = gr.Textbox(label=L("captions.replace"))
            apply_replace = gr.Button(L("captions.apply_replace"))
        apply_affix = gr.Button(L("captions.apply_affix"))
    with gr.Accordion(L("pairs.instruction_heading"), open=False):
        with gr.Row():
            instruction = gr.Textbox(label=L("pairs.instruction"), scale=3, elem_id="captions-pair-instruction")
            apply_instruction = gr.Button(L("pairs.apply"), scale=1, elem_id="captions-pair-apply")

    @guarded(3, status_index=2)
    def on_view(dataset, lang):
        items = rv.gallery_items(d, dataset, None, lang) if dataset else []
        rows = h.caption_table(d, dataset, lang) if dataset else []
        return items, pd.DataFrame(rows, columns=_columns(lang)), gr.skip()

    view_out = [gallery, table, status]

    def run(redo_all: bool):
        @guarded(1)
        def on_run(dataset, name, trig, cls, place, pre, suf, lang, progress=gr.Progress()):
            def report(done: int, total: int) -> None:
                progress((done, total))
            message = h.caption_images(d, dataset, name, trig, cls, place, pre, suf, redo_all, lang, report)
            remembered.save_caption_settings(d, dataset, trigger=trig, class_word=cls, captioner=name,
                                             placement=place)
            return message
        return on_run

    inputs = [ctx.dataset, captioner, trigger, class_word, placement, prefix, suffix, ctx.lang]
    run_missing.click(run(False), inputs, [status], api_visibility="private").then(
        on_view, [ctx.dataset, ctx.lang], view_out, api_visibility="private")
    run_all.click(run(True), inputs, [status], api_visibility="private").then(
        on_view, [ctx.dataset, ctx.lang], view_out, api_visibility="private")

    def on_select(dataset, evt: gr.SelectData):
        label = (evt.value or {}).get("caption") or "" if isinstance(evt.value, dict) else ""
        stem = label.split(" · ")[0] if label else ""
        return stem, h.read_caption(d, dataset, stem) if stem else ""

    gallery.select(on_select, [ctx.dataset], [selected, caption], api_visibility="private")

    @guarded(1)
    def on_save(dataset, stem, text, lang):
        return h.save_caption(d, dataset, stem, text, lang)

    for event in (save.click, caption.submit, caption.blur):
        event(on_save, [ctx.dataset, selected, caption, ctx.lang], [status], api_visibility="private").then(
            on_view, [ctx.dataset, ctx.lang], view_out, api_visibility="private")

    @guarded(1)
    def on_replace(dataset, f, r, lang):
        return h.bulk_edit(d, dataset, find=f or "", replace=r or "", lang=lang)

    @guarded(1)
    def on_affix(dataset, pre, suf, lang):
        return h.bulk_edit(d, dataset, prefix=pre or "", suffix=suf or "", lang=lang)

    apply_replace.click(on_replace, [ctx.dataset, find, replace, ctx.lang], [status],
                        api_visibility="private").then(on_view, [ctx.dataset, ctx.lang], view_out,
                                                       api_visibility="private")
    apply_affix.click(on_affix, [ctx.dataset, prefix, suffix, ctx.lang], [status],
                      api_visibility="private").then(on_view, [ctx.dataset, ctx.lang], view_out,
                                                     api_visibility="private")

    @guarded(1)
    def on_instruction(dataset, text, lang):
        return instruction_for_all(d, dataset, text, lang)

    apply_instruction.click(on_instruction, [ctx.dataset, instruction, ctx.lang], [status],
                            api_visibility="private").then(on_view, [ctx.dataset, ctx.lang], view_out,
                                                           api_visibility="private")

    @guarded(7, status_index=2)
    def on_dataset(dataset, lang):
        # Its images and captions, and the words it was last captioned with (not the last dataset's).
        saved = remembered.caption_settings(d, dataset)
        return [*on_view(dataset, lang), saved["trigger"], saved["class_word"], saved["captioner"],
                saved["placement"]]

    ctx.dataset_views.append((on_dataset, [], view_out + [trigger, class_word, captioner, placement]))
    ctx.components.add("captions.trigger", trigger)
