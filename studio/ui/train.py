"""Train tab: base model with its licence, preset with its description, memory tier with the
detected GPU, the basic settings up front, every other setting in "Advanced" (generated from
the config schema with its help text), a read-only YAML of the resolved config with
import/export, and "Start training", which validates before it queues the job."""

from __future__ import annotations

import gradio as gr

from studio.ui import handlers as h
from studio.ui import remembered
from studio.ui.common import Context, L, choice_labels, guarded, preset_choices


def _advanced_widget(key: str, type_name: str, value):
    kind = h.widget_kind(type_name)
    common = dict(label=L(f"setting.{key}"), info=L(f"cfg.{key}"), elem_id="adv-" + key.replace(".", "-"))
    if kind == "integer":
        return gr.Number(value=value, precision=0, **common)
    if kind == "number":
        return gr.Number(value=value, **common)
    if kind == "bool":
        return gr.Checkbox(value=value, **common)
    if kind == "choice":
        return gr.Dropdown(choices=choice_labels(key, h.choices_of(type_name)), value=value, **common)
    return gr.Textbox(value=value, **common)


def _model_choices() -> list:
    # FLUX.1 repository ids are names and stay as they are; "demo" gets a label in the page's language.
    return [(L("train.model_demo"), "demo")] + [(m, m) for m in h.MODEL_CHOICES if m != "demo"]


def build(ctx: Context) -> None:
    d = ctx.data_dir
    basic0, advanced0, yaml0 = h.preset_values("portrait", "cpu")
    gpu_text, suggested_tier = h.gpu_message("en")
    with gr.Row():
        with gr.Column():
            base = gr.Dropdown(label=L("train.model"), choices=_model_choices(), value="demo", elem_id="train-model")
            custom_base = gr.Textbox(label=L("train.model_custom"), elem_id="train-model-custom")
            licence = gr.Markdown(h.licence_text("demo"), elem_id="train-licence")
        with gr.Column():
            preset = gr.Dropdown(label=L("train.preset"), choices=preset_choices(), value="portrait",
                                 elem_id="train-preset")
            preset_md = gr.Markdown(h.preset_text("portrait"), elem_id="train-preset-text")
        with gr.Column():
            tier = gr.Dropdown(label=L("train.tier"), choices=preset_choices("memory"), value=suggested_tier,
                               elem_id="train-tier")
            gpu_md = gr.Markdown(gpu_text)
            tier_md = gr.Markdown(h.tier_text(suggested_tier))
    gr.Markdown(L("train.basic_heading"))
    with gr.Row():
        run_name = gr.Textbox(label=L("train.run_name"), value="my-lora", elem_id="train-run-name")
        trigger = gr.Textbox(label=L("train.trigger"), value="ohwx", elem_id="train-trigger")
    with gr.Row():
        steps = gr.Number(label=L("train.steps"), value=basic0[0], precision=0, elem_id="train-steps")
        lr = gr.Number(label=L("train.lr"), value=basic0[1], elem_id="train-lr")
        rank = gr.Number(label=L("train.rank"), value=basic0[2], precision=0, elem_id="train-rank")
        resolution = gr.Number(label=L("train.resolution"), value=basic0[3], precision=0,
                               elem_id="train-resolution")
        sample_every = gr.Number(label=L("train.sample_every"), value=basic0[5], precision=0,
                                 elem_id="train-sample-every")
    prompts = gr.Textbox(label=L("train.prompts"), value=basic0[4], lines=3, elem_id="train-prompts")
    advanced = []
    with gr.Accordion(L("train.advanced"), open=False, elem_id="train-advanced"):
        gr.Markdown(L("train.advanced_note"))
        # One sub-section per config section, three settings to a row, so 70 settings stay scannable.
        sections: dict[str, list] = {}
        for (key, type_name, _, _), value in zip(h.advanced_rows(), advanced0):
            sections.setdefault(key.split(".")[0], []).append((key, type_name, value))
        for section, rows in sections.items():
            with gr.Accordion(L(f"train.section.{section}"), open=False, elem_id=f"adv-section-{section}"):
                for start_at in range(0, len(rows), 3):
                    with gr.Row():
                        for key, type_name, value in rows[start_at:start_at + 3]:
                            advanced.append(_advanced_widget(key, type_name, value))
    with gr.Row():
        check = gr.Button(L("train.preview"), elem_id="train-check")
        start = gr.Button(L("train.start"), variant="primary", elem_id="train-start")
    status = gr.Markdown(elem_id="train-status")
    with gr.Accordion(L("train.yaml"), open=False):
        yaml_view = gr.Code(value=yaml0, language="yaml", interactive=False, label=L("train.yaml"))
        with gr.Row():
            import_file = gr.File(label=L("train.import"), file_types=[".yaml", ".yml"], type="filepath")
            export = gr.DownloadButton(L("train.export"))

    basic = [steps, lr, rank, resolution, prompts, sample_every]
    ctx.extra["train_trigger"] = trigger

    def collect(lang, dataset, base_v, custom_v, preset_v, tier_v, run_v, trig_v, *values):
        b, adv = values[:6], list(values[6:])
        return h.build_config(d, dataset=dataset, base=base_v, custom_base=custom_v, preset=preset_v, tier=tier_v,
                              run_name=run_v, trigger=trig_v, steps=b[0], lr=b[1], rank=b[2], resolution=b[3],
                              prompts=b[4], sample_every=b[5], advanced=adv, lang=lang)

    form = [ctx.lang, ctx.dataset, base, custom_base, preset, tier, run_name, trigger] + basic + advanced

    def on_preset(preset_v, tier_v, base_v, custom_v, lang):
        try:
            b, adv, text = h.preset_values(preset_v, tier_v, (custom_v or "").strip() or base_v)
        except Exception:  # an unknown preset leaves the fields as they are
            return [gr.skip()] * (len(basic) + len(advanced) + 3)
        # Plain values, not gr.skip() for the unchanged ones: gradio builds a new component for
        # every update it is sent (skips included), while an unchanged value costs nothing.
        return [*b, *adv, text, h.preset_text(preset_v, lang), h.tier_text(tier_v, lang)]

    proposal_out = basic + advanced + [yaml_view, preset_md, tier_md]
    # .input, not .change: an imported or remembered config sets these too and must not be reset.
    # The base model counts too: the demo model gets a short run, a real model the preset's.
    for comp in (preset, tier, base):
        comp.input(on_preset, [preset, tier, base, custom_base, ctx.lang], proposal_out, api_visibility="private")
    base.change(lambda b, c, lang: h.licence_text(c or b, lang), [base, custom_base, ctx.lang], [licence],
                api_visibility="private")
    custom_base.blur(lambda b, c, lang: h.licence_text(c or b, lang), [base, custom_base, ctx.lang], [licence],
                     api_visibility="private")

    def reordered(fn):
        # Inputs arrive in `form` order (language first); guarded() wants the language last.
        def inner(*values):
            return fn(*values[1:], values[0])
        return inner

    @guarded(3, status_index=1)
    def on_check(*values):
        *form_values, lang = values
        cfg = collect(lang, *form_values)
        h.check_config(d, cfg, lang)
        return cfg.to_yaml(), h.t("train.valid", lang), h.export_config(cfg)

    @guarded(2, status_index=1)
    def on_start(*values):
        *form_values, lang = values
        cfg = collect(lang, *form_values)
        _, message = h.start_training(d, cfg, lang)
        return cfg.to_yaml(), message

    check.click(reordered(on_check), form, [yaml_view, status, export], api_visibility="private")
    start.click(reordered(on_start), form, [yaml_view, status], api_visibility="private")

    @guarded(len(basic) + len(advanced) + 8, status_index=-1)
    def on_import(path, lang):
        if not path:
            return [gr.skip()] * (len(basic) + len(advanced) + 8)
        f = h.fields_from_config(h.import_config(path, lang))
        return [f["base"], f["custom_base"], f["preset"], f["tier"], f["run_name"], f["trigger"], *f["basic"],
                *f["advanced"], f["yaml"], h.t("train.imported", lang)]

    import_file.upload(on_import, [import_file, ctx.lang],
                       [base, custom_base, preset, tier, run_name, trigger] + basic + advanced + [yaml_view, status],
                       api_visibility="private")

    fields_out = [base, custom_base, preset, tier, run_name, trigger] + basic + advanced + [yaml_view]
    texts_out = [preset_md, tier_md, licence]

    @guarded(len(fields_out) + len(texts_out) + 1, status_index=-1)
    def on_dataset(dataset, lang, preset_v, tier_v, base_v, custom_v, run_v):
        # The settings of the newest job on this dataset; else the proposal with its trigger word.
        job = remembered.last_job(d, dataset)
        try:
            cfg = h.TrainConfig.from_dict(job["config"]) if job is not None else None
        except h.ConfigError:  # a job from an older version of the settings: propose instead
            cfg = None
        if cfg is not None:
            f = h.fields_from_config(cfg)
            preset_v, tier_v, base_v, custom_v = f["preset"], f["tier"], f["base"], f["custom_base"]
            fields = [f["base"], f["custom_base"], f["preset"], f["tier"], f["run_name"], f["trigger"], *f["basic"],
                      *f["advanced"], f["yaml"]]
        else:
            b, adv, text = h.preset_values(preset_v, tier_v, (custom_v or "").strip() or base_v)
            # Values as shown (not gr.skip(), which costs gradio a new component each).
            fields = [base_v, custom_v, preset_v, tier_v, run_v, remembered.train_trigger(d, dataset), *b, *adv, text]
        # Texts this tab writes itself, in the page's language.
        texts = [h.preset_text(preset_v, lang) if preset_v else "", h.tier_text(tier_v, lang),
                 h.licence_text((custom_v or "").strip() or base_v, lang)]
        return [*fields, *texts, gr.skip()]

    ctx.dataset_views.append((on_dataset, [preset, tier, base, custom_base, run_name], fields_out + texts_out + [status]))
    # Choices read when the page loads, and the detected GPU in the page's language.
    ctx.on_load += [(preset, lambda lang: gr.update(choices=preset_choices())),
                    (tier, lambda lang: gr.update(choices=preset_choices("memory"))),
                    (gpu_md, lambda lang: h.gpu_message(lang)[0])]
