"""The Results tab's report-card section: the grids of the shown job (one per sample prompt;
rows are the kept checkpoints and the final LoRA, columns the LoRA strengths, the base model at
strength 0), a button that queues a report-card job for the worker with its progress, and
promoting a checkpoint to be the run's final LoRA after a confirmation. The handlers live in
studio/ui/card_view.py."""

from __future__ import annotations

import gradio as gr

from studio.ui.card_view import card_panel, promote_confirmed, queue_report
from studio.ui.common import Context, L, guarded


def build(ctx: Context, pick, refresh: gr.Button):
    """The section, for the job chosen in the Results tab's picker `pick` (shown again when it
    changes or `refresh` is clicked). Returns the promote event, on which the tab chains its own
    view (new files, new card, new checklist)."""
    d = ctx.data_dir
    with gr.Accordion(L("card_grid.heading"), open=False):
        summary = gr.Markdown(elem_id="results-report-summary")
        grids = gr.Gallery(label=L("card_grid.grids"), columns=1, height="auto", object_fit="contain",
                           elem_id="results-report-grids")
        make = gr.Button(L("card_grid.make"), elem_id="results-report-make")
        progress = gr.HTML(elem_id="results-report-progress")
        ended = gr.Markdown(elem_id="results-report-ended")
        with gr.Row():
            step = gr.Dropdown(label=L("card_grid.step"), choices=[], elem_id="results-promote-step", scale=2)
            confirm = gr.Checkbox(label=L("card_grid.confirm"), value=False, elem_id="results-promote-confirm",
                                  scale=3)
            promote = gr.Button(L("card_grid.promote"), variant="stop", elem_id="results-promote", scale=1)
        message = gr.Markdown(elem_id="results-report-message")
        timer = gr.Timer(2.0, active=False)

    def show(job_id, lang):
        panel = card_panel(d, job_id, lang)
        steps = gr.update(choices=[str(s) for s in panel["steps"]], value=None)
        return (panel["summary"], panel["grids"], panel["progress"], panel["ended"], steps,
                gr.Timer(active=panel["active"]))

    outputs = [summary, grids, progress, ended, step, timer]
    quiet = dict(api_visibility="private", show_progress="hidden", show_progress_on=[summary])  # see monitor.py
    pick.change(show, [pick, ctx.lang], outputs, **quiet)
    refresh.click(show, [pick, ctx.lang], outputs, **quiet)

    def tick(job_id, lang):
        panel = card_panel(d, job_id, lang)
        if panel["active"]:  # only the bar moves while the worker draws
            return gr.skip(), gr.skip(), panel["progress"], gr.skip(), gr.skip(), gr.skip()
        return show(job_id, lang)

    timer.tick(tick, [pick, ctx.lang], outputs, **quiet)

    @guarded(2, status_index=0)
    def on_make(job_id, lang):
        return queue_report(d, job_id, lang), gr.Timer(active=True)

    make.click(on_make, [pick, ctx.lang], [message, timer], api_visibility="private").then(
        show, [pick, ctx.lang], outputs, **quiet)

    @guarded(2, status_index=0)
    def on_promote(job_id, step_v, confirmed, lang):
        return promote_confirmed(d, job_id, step_v, confirmed, lang), False

    promoted = promote.click(on_promote, [pick, step, confirm, ctx.lang], [message, confirm],
                             api_visibility="private")
    promoted.then(show, [pick, ctx.lang], outputs, **quiet)
    return promoted
