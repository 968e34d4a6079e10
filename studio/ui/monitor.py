"""Monitor tab: the job list with status badges and, for the chosen job, progress, loss and
learning-rate charts, a per-block gradient-norm heat map, samples, the log tail and the
control buttons. A gr.Timer re-reads the job store; closing the page does not touch the job."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from studio.i18n import t
from studio.ui import job_status, runs
from studio.ui.common import Context, L, guarded
from studio.ui.components import View

POLL_SECONDS = 2.0
COLUMNS = ("monitor.col_id", "monitor.col_name", "monitor.col_status", "monitor.col_progress", "monitor.col_loss")


def _columns(lang: str) -> list[str]:
    return [t(key, lang) for key in COLUMNS]


def build(ctx: Context) -> None:
    d = ctx.data_dir
    worker_note = gr.Markdown(elem_id="monitor-worker")
    jobs = gr.Dataframe(label=L("monitor.jobs"), headers=_columns("en"),
                        interactive=False, elem_id="monitor-jobs")
    with gr.Row():
        pick = gr.Dropdown(label=L("monitor.pick"), choices=[], elem_id="monitor-pick", scale=3)
        auto = gr.Checkbox(label=L("monitor.auto"), value=True, scale=1)
        refresh = gr.Button(L("common.refresh"), scale=1, elem_id="monitor-refresh")
    progress = gr.HTML(elem_id="monitor-progress")
    status = gr.Markdown(elem_id="monitor-status")
    with gr.Row():
        cancel = gr.Button(L("monitor.cancel"), variant="stop", elem_id="monitor-cancel")
        sample_now = gr.Button(L("monitor.sample_now"), elem_id="monitor-sample")
        save_now = gr.Button(L("monitor.save_now"), elem_id="monitor-save")
        resume = gr.Button(L("monitor.resume"), elem_id="monitor-resume")
    # What the last action said; only actions write here, so the 2-second refresh never wipes it.
    message = gr.Markdown(elem_id="monitor-message")
    with gr.Row():
        loss_plot = gr.LinePlot(x="step", y="loss", color="series", label=L("monitor.loss"), height=260,
                                elem_id="monitor-loss")
        lr_plot = gr.LinePlot(x="step", y="lr", label=L("monitor.lr"), height=260, elem_id="monitor-lr")
    heat = gr.Image(label=L("monitor.heatmap"), type="numpy", interactive=False, height=260,
                    elem_id="monitor-heatmap", alt_text=t("monitor.heatmap_alt", "en"))
    heat_rows = gr.Markdown()
    samples = gr.Gallery(label=L("monitor.samples"), columns=4, height=300, elem_id="monitor-samples")
    log = gr.Textbox(label=L("monitor.log"), lines=10, max_lines=14, interactive=False, elem_id="monitor-log")
    with gr.Accordion(L("monitor.manage"), open=False, elem_id="monitor-manage"):
        with gr.Row():
            duplicate = gr.Button(L("monitor.duplicate"), elem_id="monitor-duplicate")
            load_config = gr.Button(L("monitor.load_config"), elem_id="monitor-load-config")
            rerun = gr.Button(L("monitor.rerun"), elem_id="monitor-rerun")
        config_box = gr.Code(label=L("monitor.edit_config"), language="yaml", interactive=True,
                             elem_id="monitor-config")
        with gr.Row():
            confirm = gr.Checkbox(label=L("monitor.delete_confirm"), value=False, elem_id="monitor-delete-confirm")
            delete = gr.Button(L("monitor.delete"), variant="stop", elem_id="monitor-delete")
    with gr.Accordion(L("monitor.compare"), open=False, elem_id="monitor-compare"):
        compare = gr.Dropdown(label=L("monitor.compare"), choices=[], multiselect=True)
        compare_plot = gr.LinePlot(x="step", y="loss", color="job", label=L("monitor.compare_plot"), height=260)
    # Ticks only while this tab is shown (build.py switches it): charts drawn into a hidden
    # tab come out blank, and an unseen tab need not poll at all.
    timer = gr.Timer(POLL_SECONDS, active=False)
    # What the last poll drew, so an unchanged job sends no chart data (cheap polls).
    seen = gr.State(None)
    # The job the user picked by hand (job_status.pin_for); None: follow the newest running job.
    pin = gr.State(None)

    def poll(pinned, previous, lang):
        all_jobs = runs.store(d).list_jobs()  # read once per poll
        rows = pd.DataFrame(runs.job_rows(d, lang, jobs=all_jobs), columns=_columns(lang))
        choices = runs.job_choices(d, lang=lang, jobs=all_jobs)
        job_id = job_status.pick_job(all_jobs, pinned)
        note = "" if runs.worker_running(d) else t("monitor.worker_missing", lang, data_dir=d)
        view = runs.job_view(d, job_id, lang)
        job = view["job"]
        signature = (job_id, lang, job and (job["status"], job["step"], job["files"]),
                     len(view["samples"]))
        state = job["status"] if job else None
        # Offer only what the job's state allows (no "Cancel" on a finished job).
        buttons = [gr.update(interactive=state in ("queued", "running")),
                   gr.update(interactive=state == "running"), gr.update(interactive=state == "running"),
                   gr.update(interactive=state in ("interrupted", "cancelled", "failed"))]
        common = [note, rows, gr.update(choices=choices, value=job_id), gr.update(choices=choices),
                  view["progress"], view["status"], *buttons]
        if signature == previous:
            return [*common, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), view["log"], previous]
        blocks = t("monitor.heatmap_rows", lang, blocks=", ".join(view["blocks"])) if view["blocks"] else ""
        # None, never an empty frame: a plot first drawn from empty columns stays blank after.
        loss = pd.DataFrame(view["loss"]) if view["loss"] and view["loss"]["step"] else None
        lr = pd.DataFrame(view["lr"]) if view["lr"] and view["lr"]["step"] else None
        return [*common, loss, lr, view["heatmap"], blocks, view["samples"], view["log"], signature]

    outputs = [worker_note, jobs, pick, compare, progress, status, cancel, sample_now, save_now, resume,
               loss_plot, lr_plot, heat, heat_rows, samples, log, seen]
    safe_poll = guarded(len(outputs), status_index=5)(poll)
    # show_progress="hidden" everywhere here: gradio's timer overlay ("processing | 0.1s") would
    # otherwise be part of the status and progress texts every two seconds. Hidden or not, gradio
    # keeps a busy state for each covered component and copies its value to update it, on every
    # status message of every event: the status text alone, not the charts and samples.
    quiet = dict(api_visibility="private", show_progress="hidden", show_progress_on=[status])
    timer.tick(safe_poll, [pin, seen, ctx.lang], outputs, queue=False, **quiet)
    refresh.click(lambda p, lang: safe_poll(p, None, lang), [pin, ctx.lang], outputs, **quiet)

    def on_pick(job_id):
        return job_status.pin_for(job_id, runs.store(d).list_jobs())

    pick.input(on_pick, [pick], [pin], **quiet).then(lambda p, lang: safe_poll(p, None, lang), [pin, ctx.lang],
                                                      outputs, **quiet)
    auto.input(lambda on: gr.Timer(active=on), [auto], [timer], api_visibility="private")

    def action(name):
        @guarded(1)
        def on_action(job_id, lang):
            return runs.control(d, job_id, name, lang)
        return on_action

    for button, name in ((cancel, "cancel"), (sample_now, "sample"), (save_now, "save"), (resume, "resume")):
        button.click(action(name), [pick, ctx.lang], [message], **quiet)

    @guarded(1)
    def on_duplicate(job_id, lang):
        return runs.manage(d, job_id, "duplicate", lang)

    @guarded(2, status_index=1)
    def on_load_config(job_id, lang):
        return runs.job_config_yaml(d, job_id, lang), ""

    @guarded(1)
    def on_rerun(job_id, text, lang):
        return runs.manage(d, job_id, "rerun", lang, config_yaml=text or "")

    @guarded(2, status_index=0)
    def on_delete(job_id, confirmed, lang):
        return runs.manage(d, job_id, "delete", lang, confirmed=bool(confirmed)), False

    duplicate.click(on_duplicate, [pick, ctx.lang], [message], **quiet)
    load_config.click(on_load_config, [pick, ctx.lang], [config_box, message], **quiet)
    rerun.click(on_rerun, [pick, config_box, ctx.lang], [message], **quiet)
    delete.click(on_delete, [pick, confirm, ctx.lang], [message, confirm], **quiet)

    @guarded(1)
    def on_compare(job_ids, lang):
        data = runs.compare_curves(d, job_ids)
        return pd.DataFrame(data) if data["step"] else None

    compare.change(on_compare, [compare, ctx.lang], [compare_plot], api_visibility="private")
    # Axis and legend titles and the heat map's description in the page's language.
    ctx.on_load += [
        (jobs, lambda lang: pd.DataFrame([], columns=_columns(lang))),
        (loss_plot, lambda lang: gr.update(x_title=t("monitor.axis_step", lang), y_title=t("monitor.axis_loss", lang),
                                           color_title=t("monitor.axis_series", lang))),
        (lr_plot, lambda lang: gr.update(x_title=t("monitor.axis_step", lang), y_title=t("monitor.axis_lr", lang))),
        (compare_plot, lambda lang: gr.update(x_title=t("monitor.axis_step", lang),
                                              y_title=t("monitor.axis_loss", lang),
                                              color_title=t("monitor.axis_job", lang))),
        (heat, lambda lang: gr.update(alt_text=t("monitor.heatmap_alt", lang))),
    ]
    ctx.components.add("monitor.timer", timer)
    ctx.components.add("monitor.auto", auto)
    ctx.monitor_poll = View(lambda p, lang: safe_poll(p, None, lang), [pin, ctx.lang], outputs, busy=[status])
