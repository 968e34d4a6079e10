"""Dataset tab: create/pick a dataset (or add the demo dataset), upload photos or zips, see and
prune the images, see an edit dataset's pairs side by side with their problems, and read the
quality report with what to do about each warning."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from studio.demo import dataset as demo_dataset
from studio.i18n import t
from studio.ui import handlers as h
from studio.ui import remembered
from studio.ui import report_view as rv
from studio.ui.pairs_view import pair_view
from studio.ui.common import Context, L, guarded, preset_choices


def build(ctx: Context) -> None:
    d = ctx.data_dir
    with gr.Row():
        new_name = gr.Textbox(label=L("dataset.new_name"), scale=3, elem_id="dataset-new-name")
        create = gr.Button(L("dataset.create"), scale=1, elem_id="dataset-create")
        add_demo = gr.Button(L("dataset.demo"), scale=1, elem_id="dataset-demo")
    upload = gr.File(label=L("dataset.upload"), file_count="multiple", file_types=["image", ".zip", ".txt"],
                     elem_id="dataset-upload")
    add = gr.Button(L("dataset.import"), variant="primary", elem_id="dataset-import")
    status = gr.Markdown(elem_id="dataset-status")
    gallery = gr.Gallery(label=L("dataset.gallery"), columns=6, height=360, allow_preview=True,
                         elem_id="dataset-gallery")
    # An edit dataset (a control/ folder): each pair side by side, and what stops a pair.
    pairs_md = gr.Markdown(visible=False, elem_id="dataset-pairs-problems")
    pairs = gr.Gallery(label=L("pairs.gallery"), columns=3, height=360, visible=False, elem_id="dataset-pairs")
    with gr.Row():
        to_remove = gr.Dropdown(label=L("dataset.remove_pick"), multiselect=True, choices=[], scale=3)
        remove = gr.Button(L("dataset.remove"), variant="stop", scale=1)
    gr.Markdown(L("dataset.report_heading"))
    with gr.Row():
        preset = gr.Dropdown(label=L("dataset.report_preset"), choices=preset_choices(), value="portrait",
                             elem_id="dataset-preset")
        resolution = gr.Number(label=L("train.resolution"), value=512, precision=0)
        check = gr.Button(L("dataset.report_run"))
    report_md = ctx.components.add("dataset.report", gr.Markdown(elem_id="dataset-report"))

    def refresh_choices(selected=None):
        names = h.list_datasets(d)
        return gr.update(choices=names, value=selected if selected in names else (names[0] if names else None))

    @guarded(2, status_index=1)
    def on_create(name, lang):
        created, message = h.create_dataset(d, name, lang)
        return refresh_choices(created), message

    ctx.dataset_created = create.click(on_create, [new_name, ctx.lang], [ctx.dataset, status],
                                      api_visibility="private")

    @guarded(2, status_index=1)
    def on_demo(lang):
        name, message = add_demo_dataset(d, lang)
        return refresh_choices(name), message

    ctx.demo_dataset_added = add_demo.click(on_demo, [ctx.lang], [ctx.dataset, status],
                                                     api_visibility="private")

    @guarded(2, status_index=0)
    def on_upload(dataset, files, lang):
        return h.upload_files(d, dataset, files, ctx.max_upload_mb, lang), None

    @guarded(6, status_index=3)
    def on_view(dataset, preset_name, res, lang):
        hidden = gr.update(visible=False, value=None)
        if not dataset:
            return [], gr.update(choices=[], value=[]), "", gr.skip(), hidden, hidden
        report = h.run_report(d, dataset, preset_name, int(res or 512), None)
        items = rv.gallery_items(d, dataset, report, lang)
        stems = [caption.split(" · ")[0] for _, caption in items]
        edit = pair_view(d, dataset, lang)
        shown = [gr.update(visible=True, value=edit["items"]), gr.update(visible=True, value=edit["problems"])] \
            if edit["edit"] else [hidden, hidden]
        return items, gr.update(choices=stems, value=[]), rv.report_markdown(report, lang), gr.skip(), *shown

    view_in = [ctx.dataset, preset, resolution, ctx.lang]
    view_out = [gallery, to_remove, report_md, status, pairs, pairs_md]
    add.click(on_upload, [ctx.dataset, upload, ctx.lang], [status, upload], api_visibility="private").then(
        on_view, view_in, view_out, api_visibility="private")

    @guarded(1)
    def on_remove(dataset, stems, lang):
        return h.remove_images(d, dataset, stems, lang)

    remove.click(on_remove, [ctx.dataset, to_remove, ctx.lang], [status], api_visibility="private").then(
        on_view, view_in, view_out, api_visibility="private")
    check.click(on_view, view_in, view_out, api_visibility="private")
    ctx.dataset_views.append((lambda dataset, lang, p, r: on_view(dataset, p, r, lang), [preset, resolution],
                              view_out))
    ctx.on_load.append((preset, lambda lang: gr.update(choices=preset_choices())))


def add_demo_dataset(data_dir: Path, lang: str = "en") -> tuple[str, str]:
    """The demo dataset as a studio dataset, through the import like any upload, with its trigger
    word remembered for the Train tab. Returns (dataset name, message)."""
    name, message = h.create_dataset(data_dir, demo_dataset.STUDIO_NAME, lang)
    images = h.dataset_dir(data_dir, name, lang) / "images"
    if not any(images.iterdir()):  # added before: it is only selected again
        with tempfile.TemporaryDirectory() as tmp:
            folder = demo_dataset.write_dataset(tmp)
            message = h.upload_files(data_dir, name, sorted(str(p) for p in Path(folder).iterdir()), None, lang)
    remembered.save_caption_settings(data_dir, name, trigger=demo_dataset.TRIGGER, captioner="basic")
    count = sum(1 for p in images.iterdir() if p.suffix != ".txt")
    return name, message + "\n\n" + t("dataset.demo_added", lang, name=name, count=count, trigger=demo_dataset.TRIGGER)
