"""Train tab: base model with its licence, preset with its description, memory tier with the
detected GPU, the basic settings up front, every other setting in "Advanced" (generated from
the config schema with its help text), a read-only YAML of the resolved config with
import/export, and "Start training", which validates before it queues the job."""

from __future__ import annotations

import gradio as gr

from studio.config import setting
from studio.ui import handlers as h
from studio.ui import remembered
from studio.ui.common import Context, L, choice_labels, guarded, preset_choices
from studio.ui.components import Components
from studio.ui.plan_view import chosen_model, plan_markdown, plan_values

TAB = "train"


def _setting_widget(key: str, value):
    """The input for one setting of "Advanced", of the kind the schema gives it."""
    kind = h.kind_of(key)
    common = dict(label=L(f"setting.{key}"), info=L(f"cfg.{key}"), elem_id="adv-" + key.replace(".", "-"))
    if kind == "int":
        return gr.Number(value=value, precision=0, **common)
    if kind == "float":
        return gr.Number(value=value, **common)
    if kind == "bool":
        return gr.Checkbox(value=value, **common)
    if kind == "choice":
        return gr.Dropdown(choices=choice_labels(key, list(setting(key).choices)), value=value, **common)
    return gr.Textbox(value=value, **common)


def _basic_widget(key: str, value):
    """A setting shown up front, with its own label (`train.<name>`) and element id."""
    name = h.BASIC[key]
    common = dict(label=L(f"train.{name}"), value=value, elem_id="train-" + name.replace("_", "-"))
    kind = h.kind_of(key)
    if kind == "lines":
        return gr.Textbox(lines=3, **common)
    return gr.Number(precision=0 if kind == "int" else None, **common)


def _model_choices(family: str, variant: str) -> list:
    # Repository ids are names and stay as they are; "demo" gets a label in the page's language.
    return [(L("train.model_demo"), m) if m == "demo" else (m, m) for m in h.model_choice.base_choices(family, variant)]


def _with_choices(f: dict, lang: str) -> dict:
    """A config's fields with the choice lists of its model (variants, base models, presets), so a
    config of another family than the one shown fills the dropdowns with values they offer."""
    mc, gpu = h.model_choice, h.detect_gpu()
    return {**f, "variant": gr.update(choices=mc.variant_choices(f["family"], gpu, lang), value=f["variant"]),
            "base": gr.update(choices=_model_choices(f["family"], f["variant"]), value=f["base"]),
            "preset": gr.update(choices=preset_choices(family=f["family"], variant=f["variant"]), value=f["preset"])}


def _basis(family: str, variant: str, preset: str | None, tier: str, base: str) -> list:
    """The model, preset, tier and base model the shown settings were proposed for or loaded with."""
    return [family, variant, preset, tier, base]


def build(ctx: Context) -> None:
    d, c = ctx.data_dir, ctx.components
    mc = h.model_choice
    family0, variant0 = mc.default_model()
    values0, yaml0 = h.preset_values("portrait", "cpu")
    gpu_text, suggested_tier = h.gpu_message("en", family0, variant0)
    gpu0 = h.detect_gpu()
    with gr.Row():  # the model first: presets, tier and the proposed settings follow it
        c.add("train.family", gr.Dropdown(label=L("train.family"), choices=mc.family_choices(gpu0), value=family0,
                                          elem_id="train-family"))
        c.add("train.variant", gr.Dropdown(label=L("train.variant"), choices=mc.variant_choices(family0, gpu0),
                                           value=variant0, elem_id="train-variant"))
    model_md = gr.Markdown(mc.model_markdown(family0, variant0, gpu0), elem_id="train-family-text")
    with gr.Row():
        with gr.Column():
            base0 = mc.base_choices(family0, variant0)[0]  # the demo model, unless it is missing
            c.add("train.base", gr.Dropdown(label=L("train.model"), choices=_model_choices(family0, variant0),
                                            value=base0, elem_id="train-model"))
            c.add("train.custom_base", gr.Textbox(label=L("train.model_custom"), elem_id="train-model-custom"))
            licence = gr.Markdown(h.licence_text(base0), elem_id="train-licence")
        with gr.Column():
            c.add("train.preset", gr.Dropdown(label=L("train.preset"), choices=preset_choices(family=family0),
                                              value="portrait", elem_id="train-preset"))
            preset_md = gr.Markdown(h.preset_text("portrait"), elem_id="train-preset-text")
        with gr.Column():
            c.add("train.tier", gr.Dropdown(label=L("train.tier"), choices=preset_choices("memory"),
                                            value=suggested_tier, elem_id="train-tier"))
            gpu_md = gr.Markdown(gpu_text)
            tier_md = gr.Markdown(h.tier_text(suggested_tier))
    # What fits on this computer for the chosen dataset (studio/plan.py), in the page's language.
    plan_md = gr.Markdown(elem_id="train-plan")
    apply_plan = gr.Button(L("plan.apply"), size="sm", elem_id="train-plan-apply")
    gr.Markdown(L("train.basic_heading"))
    with gr.Row():
        c.add("train.run_name", gr.Textbox(label=L("train.run_name"), value="my-lora", elem_id="train-run-name"))
        c.add("train.trigger", gr.Textbox(label=L("train.trigger"), value="ohwx", elem_id="train-trigger"))
    with gr.Row():
        for key in h.BASIC_KEYS:
            if h.kind_of(key) != "lines":
                c.add(f"train.{key}", _basic_widget(key, values0[key]))
    c.add("train.sample.prompts", _basic_widget("sample.prompts", values0["sample.prompts"]))
    with gr.Accordion(L("train.advanced"), open=False, elem_id="train-advanced"):
        gr.Markdown(L("train.advanced_note"))
        # One sub-section per config section, three settings to a row, so 70 settings stay scannable.
        sections: dict[str, list[str]] = {}
        for item in h.advanced_settings():
            sections.setdefault(item.key.split(".")[0], []).append(item.key)
        for section, keys in sections.items():
            with gr.Accordion(L(f"train.section.{section}"), open=False, elem_id=f"adv-section-{section}"):
                for start_at in range(0, len(keys), 3):
                    with gr.Row():
                        for key in keys[start_at:start_at + 3]:
                            c.add(f"train.{key}", _setting_widget(key, values0[key]))
    with gr.Row():
        check = gr.Button(L("train.preview"), elem_id="train-check")
        start = gr.Button(L("train.start"), variant="primary", elem_id="train-start")
    status = gr.Markdown(elem_id="train-status")
    with gr.Accordion(L("train.yaml"), open=False):
        yaml_view = gr.Code(value=yaml0, language="yaml", interactive=False, label=L("train.yaml"))
        with gr.Row():
            import_file = gr.File(label=L("train.import"), file_types=[".yaml", ".yml"], type="filepath")
            export = gr.DownloadButton(L("train.export"))

    # Gradio sends a dropdown's "input" event each time it loses focus, changed or not (a click
    # elsewhere, a Tab through the form): a choice equal to the basis re-proposes nothing, so the
    # settings typed since stay.
    basis = gr.State(_basis(family0, variant0, "portrait", suggested_tier, base0))
    names, setting_keys = h.form_names(), h.setting_keys()
    form, settings_out = c.of(TAB, names), c.of(TAB, setting_keys)
    preset, tier, base, custom_base, run_name = c.of(TAB, ("preset", "tier", "base", "custom_base", "run_name"))
    family, variant = c.of(TAB, ("family", "variant"))

    def collect(lang, dataset, *values):
        return h.build_config(d, dataset=dataset, form=Components.named(names, values), lang=lang)

    form_in = [ctx.lang, ctx.dataset] + form

    def proposal(preset_v, tier_v, family_v, variant_v, base_v, custom_v):
        model = h.form_model({"family": family_v, "variant": variant_v, "base": base_v, "custom_base": custom_v})
        return h.preset_values(preset_v, tier_v, model["base"], model["family"])

    def filled(preset_v, tier_v, family_v, variant_v, base_v, custom_v, lang):
        try:
            proposed, text = proposal(preset_v, tier_v, family_v, variant_v, base_v, custom_v)
        except Exception:  # an unknown preset leaves the fields as they are
            return [gr.skip()] * (len(settings_out) + 3)
        # Plain values, not gr.skip() for the unchanged ones: gradio builds a new component for
        # every update it is sent (skips included), while an unchanged value costs nothing.
        return [*(proposed[k] for k in setting_keys), text, h.preset_text(preset_v, lang), h.tier_text(tier_v, lang)]

    def on_preset(preset_v, tier_v, family_v, variant_v, base_v, custom_v, last, lang):
        now = _basis(family_v, variant_v, preset_v, tier_v, base_v)
        if now == last:
            return [gr.skip()] * (len(proposal_out) + 1)
        return [*filled(preset_v, tier_v, family_v, variant_v, base_v, custom_v, lang), now]

    proposal_out = settings_out + [yaml_view, preset_md, tier_md]
    model_in = [family, variant, base, custom_base]
    # .input, not .change: an imported or remembered config sets these too and must not be reset.
    # The base model counts too: the demo model gets a short run, a real model the preset's.
    # Busy indicators on the text that names the choice, not on each of the ~80 fields these answers
    # fill (see build.py: gradio re-sends every covered component's busy state on every event).
    for comp in (preset, tier, base):
        comp.input(on_preset, [preset, tier, *model_in, basis, ctx.lang], proposal_out + [basis],
                   api_visibility="private", show_progress_on=[preset_md])

    def model_update(family_v, variant_v, preset_v, custom_v, lang):
        """The tab for a family and variant: its variants, base models, presets and tier, then the proposal."""
        gpu = h.detect_gpu()
        fam = h.model_choice
        variants = [name for _, name in fam.variant_choices(family_v, gpu, lang)]
        variant_v = variant_v if variant_v in variants else variants[0]
        base_v = fam.suggested_base(family_v, variant_v, gpu)
        tier_v = fam.suggested_tier(family_v, variant_v, base_v, gpu)
        presets = [name for _, name in preset_choices(family=family_v, variant=variant_v)]
        preset_v = preset_v if preset_v in presets else (presets[0] if presets else None)
        return [gr.update(choices=fam.variant_choices(family_v, gpu, lang), value=variant_v),
                fam.model_markdown(family_v, variant_v, gpu, lang),
                gr.update(choices=_model_choices(family_v, variant_v), value=base_v), custom_v,
                gr.update(choices=preset_choices(family=family_v, variant=variant_v), value=preset_v), tier_v,
                h.licence_text(custom_v or base_v, lang),
                *filled(preset_v, tier_v, family_v, variant_v, base_v, custom_v, lang),
                family_v, _basis(family_v, variant_v, preset_v, tier_v, base_v)]

    def on_model(family_v, variant_v, preset_v, last, lang):
        """A family or variant chosen (a model folder typed for another one is cleared)."""
        if [family_v, variant_v] == last[:2]:
            return [gr.skip()] * len(model_out)
        return model_update(family_v, variant_v, preset_v, "", lang)

    def on_custom(custom_v, base_v, preset_v, last, lang):
        """A model folder typed: the tab follows its family and variant, read from its config files."""
        found = h.model_choice.detected(custom_v)
        if found is not None and list(found) != last[:2]:
            return model_update(*found, preset_v, custom_v.strip(), lang)
        answer = [gr.skip()] * len(model_out)
        answer[model_out.index(licence)] = h.licence_text((custom_v or "").strip() or base_v, lang)
        return answer

    model_out = [variant, model_md, base, custom_base, preset, tier, licence] + proposal_out + [family, basis]
    model_events = {comp: comp.input(on_model, [family, variant, preset, basis, ctx.lang], model_out,
                                     api_visibility="private", show_progress_on=[model_md])
                    for comp in (family, variant)}
    base.change(lambda b, c, lang: h.licence_text(c or b, lang), [base, custom_base, ctx.lang], [licence],
                api_visibility="private")
    model_events[custom_base] = custom_base.blur(on_custom, [custom_base, base, preset, basis, ctx.lang], model_out,
                                                 api_visibility="private", show_progress_on=[model_md])

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

    check.click(reordered(on_check), form_in, [yaml_view, status, export], api_visibility="private")
    start.click(reordered(on_start), form_in, [yaml_view, status], api_visibility="private")

    @guarded(len(form) + 3, status_index=-1)
    def on_import(path, lang):
        if not path:
            return [gr.skip()] * (len(form) + 3)
        fields = h.fields_from_config(h.import_config(path, lang))
        f = _with_choices(fields, lang)
        return [*(f[n] for n in names), f["yaml"], _basis(*(fields[n] for n in ("family", "variant", "preset", "tier",
                                                                                "base"))), h.t("train.imported", lang)]

    import_file.upload(on_import, [import_file, ctx.lang], form + [yaml_view, basis, status], api_visibility="private",
                       show_progress_on=[status])

    @guarded(len(settings_out) + 11, status_index=-1)
    def on_apply_plan(dataset, preset_v, family_v, variant_v, base_v, lang):
        # The proposal's model (family, variant, base), tier, resolution, steps and batch size; the
        # user's preset stays when it suits the proposed model.
        folder = h.dataset_dir(d, dataset, lang)
        gpu = h.detect_gpu()
        p = plan_values(folder, gpu, preset_v, lang, *chosen_model(family_v, variant_v, base_v))
        fam, var = p["family"], p["variant"]
        return [*(p["values"][k] for k in setting_keys), fam,
                gr.update(choices=mc.variant_choices(fam, gpu, lang), value=var),
                gr.update(choices=_model_choices(fam, var), value=p["base"]),
                gr.update(choices=preset_choices(family=fam, variant=var), value=p["preset"]), p["tier"], p["yaml"],
                h.tier_text(p["tier"], lang), mc.model_markdown(fam, var, gpu, lang), h.licence_text(p["base"], lang),
                _basis(fam, var, p["preset"], p["tier"], p["base"]), p["message"]]

    plan_out = [family, variant, base, preset, tier, yaml_view, tier_md, model_md, licence, basis, status]
    apply_plan.click(on_apply_plan, [ctx.dataset, preset, family, variant, base, ctx.lang], settings_out + plan_out,
                     api_visibility="private", show_progress_on=[status])

    def on_plan(dataset, family_v, variant_v, base_v, lang) -> str:
        # The plan follows the model the form has chosen.
        return _plan(dataset, lang, family_v, variant_v, base_v)

    plan_in = [ctx.dataset, family, variant, base, ctx.lang]
    base.input(on_plan, plan_in, [plan_md], api_visibility="private")
    for event in model_events.values():  # after on_model / on_custom has set the family, variant and base model
        event.then(on_plan, plan_in, [plan_md], api_visibility="private")

    fields_out = form + [yaml_view]
    texts_out = [preset_md, tier_md, licence, plan_md, model_md]

    @guarded(len(fields_out) + len(texts_out) + 2, status_index=-1)
    def on_dataset(dataset, lang, family_v, variant_v, preset_v, tier_v, base_v, custom_v, run_v):
        # The settings of the newest job on this dataset; else the proposal with its trigger word.
        job = remembered.last_job(d, dataset)
        try:
            cfg = h.TrainConfig.from_dict(job["config"]) if job is not None else None
        except h.ConfigError:  # a job from an older version of the settings: propose instead
            cfg = None
        if cfg is not None:
            f = h.fields_from_config(cfg)
            preset_v, tier_v, base_v, custom_v = f["preset"], f["tier"], f["base"], f["custom_base"]
            family_v, variant_v = f["family"], f["variant"]
            f = _with_choices(f, lang)
        else:
            proposed, text = proposal(preset_v, tier_v, family_v, variant_v, base_v, custom_v)
            # Values as shown (not gr.skip(), which costs gradio a new component each).
            f = {"family": family_v, "variant": variant_v, "base": base_v, "custom_base": custom_v,
                 "preset": preset_v, "tier": tier_v, "run_name": run_v,
                 "trigger": remembered.train_trigger(d, dataset), **proposed, "yaml": text}
        fields = [*(f[n] for n in names), f["yaml"]]
        # Texts this tab writes itself, in the page's language.
        texts = [h.preset_text(preset_v, lang) if preset_v else "", h.tier_text(tier_v, lang),
                 h.licence_text((custom_v or "").strip() or base_v, lang),
                 _plan(dataset, lang, family_v, variant_v, base_v),
                 mc.model_markdown(family_v, variant_v, h.detect_gpu(), lang)]
        return [*fields, *texts, _basis(family_v, variant_v, preset_v, tier_v, base_v), gr.skip()]

    def _plan(dataset, lang, family_v=None, variant_v=None, base_v=None) -> str:
        try:
            folder = h.dataset_dir(d, dataset, lang) if dataset else None
        except h.UserError:
            folder = None
        return plan_markdown(folder, h.detect_gpu(), lang, *chosen_model(family_v, variant_v, base_v))

    ctx.dataset_views.append((on_dataset, [family, variant, preset, tier, base, custom_base, run_name],
                              fields_out + texts_out + [basis, status]))
    # Choices read when the page loads, and the detected GPU in the page's language.
    ctx.on_load += [(family, lambda lang: gr.update(choices=mc.family_choices(h.detect_gpu(), lang))),
                    (variant, lambda lang: gr.update(choices=mc.variant_choices(family0, h.detect_gpu(), lang))),
                    (model_md, lambda lang: mc.model_markdown(family0, variant0, h.detect_gpu(), lang)),
                    (preset, lambda lang: gr.update(choices=preset_choices(family=family0))),
                    (tier, lambda lang: gr.update(choices=preset_choices("memory"))),
                    (gpu_md, lambda lang: h.gpu_message(lang, family0, variant0)[0])]
