"""Results tab: for a finished job, the two LoRA files and the config to download, a model
card, its report card (studio/ui/results_card.py), a try-it panel (with vs. without the LoRA, same seed, in a child process) and
publishing to the Hugging Face Hub (token typed once or from HF_TOKEN; never stored)."""

from __future__ import annotations

import gradio as gr

from studio.i18n import t
from studio.ui import results_card, runs, tryit_view
from studio.ui.common import Context, L, guarded
from studio.ui.components import View

FINISHED = ("succeeded", "cancelled", "interrupted", "failed")


def build(ctx: Context) -> None:
    d = ctx.data_dir
    with gr.Row():
        pick = gr.Dropdown(label=L("results.pick"), choices=[], elem_id="results-pick", scale=3)
        refresh = gr.Button(L("common.refresh"), scale=1, elem_id="results-refresh")
    files = gr.File(label=L("results.files"), file_count="multiple", interactive=False, elem_id="results-files")
    card = gr.Markdown(elem_id="results-card")
    gallery = gr.Gallery(label=L("card.samples"), columns=4, height=240, elem_id="results-samples")
    status = gr.Markdown(elem_id="results-status")
    with gr.Accordion(L("results.try_heading"), open=False):
        with gr.Row():
            # Filled from the shown job's own first sample prompt and trigger word (on_view).
            prompt = gr.Textbox(label=L("results.try_prompt"), scale=3, elem_id="results-try-prompt")
            strength = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label=L("results.try_strength"))
            seed = gr.Number(label=L("results.try_seed"), value=1234, precision=0)
        # An edit LoRA edits this picture (the run's first "before" image unless the user gives one).
        try_input = gr.Image(label=L("results.try_input"), type="filepath", sources=["upload"], height=240,
                             elem_id="results-try-input")
        try_run = gr.Button(L("results.try_run"))
        with gr.Row():
            with_lora = gr.Image(label=L("results.try_with"), interactive=False, elem_id="results-try-with")
            without_lora = gr.Image(label=L("results.try_without"), interactive=False,
                                    elem_id="results-try-without")
        try_folder = gr.State(None)
        try_timer = gr.Timer(2.0, active=False)
    promoted = results_card.build(ctx, pick, refresh)
    with gr.Accordion(L("results.publish_heading"), open=False):
        repo = gr.Textbox(label=L("results.repo"))
        # type="password": the browser masks it; the handler uses it once and keeps nothing.
        token = gr.Textbox(label=L("results.token"), type="password")
        private = gr.Checkbox(label=L("results.private"), value=True)
        publish = gr.Button(L("results.publish"))

    shown = gr.State(None)  # the job the Results tab showed last

    @guarded(8, status_index=4)
    def on_view(job_id, last, typed, lang):
        jobs = [j for j in runs.store(d).list_jobs(FINISHED) if j["kind"] == "train"]  # try-its have no LoRA
        choices = runs.job_choices(d, FINISHED, lang, jobs=jobs)
        if job_id not in [c[1] for c in choices]:  # the newest job with LoRA files, else the newest
            job_id = next((j["id"] for j in jobs if j["status"] == "succeeded"), jobs[0]["id"] if jobs else None)
        view = runs.result_view(d, job_id, lang)
        # A prompt the user typed for this job stays; another job starts from its own prompt.
        same = job_id == last
        prompt_v = gr.skip() if same and (typed or "").strip() else view["prompt"]
        job = runs.store(d).get_job(int(job_id)) if job_id is not None else None
        image_v = gr.skip() if same else tryit_view.default_input(job)
        return (gr.update(choices=choices, value=job_id), view["files"] or None, view["card"], view["samples"], "",
                prompt_v, job_id, image_v)

    outputs = [pick, files, card, gallery, status, prompt, shown, try_input]
    refresh.click(on_view, [pick, shown, prompt, ctx.lang], outputs, api_visibility="private")
    pick.input(on_view, [pick, shown, prompt, ctx.lang], outputs, api_visibility="private")
    ctx.results_view = View(on_view, [pick, shown, prompt, ctx.lang], outputs)
    # A promoted checkpoint has new files, a new checklist and a new card.
    promoted.then(on_view, [pick, shown, prompt, ctx.lang], outputs, api_visibility="private")

    @guarded(3, status_index=0)
    def on_try(job_id, text, weight, seed_v, image, lang):
        folder = tryit_view.start_try_it(d, job_id, text, weight, int(seed_v or 0), lang, image=image)
        return t("results.try_running", lang), str(folder), gr.Timer(active=True)

    try_run.click(on_try, [pick, prompt, strength, seed, try_input, ctx.lang], [status, try_folder, try_timer],
                  api_visibility="private")

    def on_try_tick(folder, lang):
        result = tryit_view.try_it_result(folder)
        if result["state"] == "running":
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if result["state"] == "done":
            return result["with"], result["without"], "", gr.Timer(active=False)
        message = t("results.try_failed", lang, error=result.get("error", "?")) if result["state"] == "failed" else ""
        return gr.skip(), gr.skip(), message, gr.Timer(active=False)

    try_timer.tick(on_try_tick, [try_folder, ctx.lang], [with_lora, without_lora, status, try_timer],
                   api_visibility="private")

    @guarded(2, status_index=0)
    def on_publish(job_id, repo_id, token_v, private_v, lang):
        return runs.publish(d, job_id, repo_id, token_v, private_v, lang), ""

    # The token box is cleared after every attempt so it does not linger in the page.
    publish.click(on_publish, [pick, repo, token, private, ctx.lang], [status, token], api_visibility="private")
