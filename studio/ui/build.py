"""The Blocks: a header (dataset picker, page language) over five tabs.

Importing this module imports gradio but never torch (tests/test_ui_handlers.py checks it):
start-up stays fast and the UI process stays small.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from studio.i18n import LANG_NAMES, LANGS, t
from studio.ui import captions, dataset, monitor, results, train
from studio.ui import handlers as h
from studio.ui.common import Context, L
from studio.ui.locale import DATASET_COOKIE, LANG_COOKIE, LocaleScript, cookie_js, request_cookie, request_lang

# Gradio's busy indicators print "processing | 0.4s" and "queue: 1/2" in English whatever the
# language; on a page in another language (<html lang> is set by studio/ui/locale.py) the
# spinner and progress bar alone say it.
CSS = (".studio-progress{margin:4px 0 8px 0}"
       "html:not([lang=en]) .meta-text, html:not([lang=en]) .meta-text-center{display:none !important}")


_STATIC_ROOTS: set[Path] = set()  # data folders whose datasets/ gradio serves in place


def build_ui(data_dir: str | Path, max_upload_mb: int | None = None) -> gr.Blocks:
    ctx = Context(data_dir=Path(data_dir).resolve(), max_upload_mb=max_upload_mb)
    # Dataset pictures (the galleries' thumbnails above all) are served from where they lie instead
    # of being checked against every blocked path, hashed and copied into gradio's cache on each
    # dataset pick: a second or more of the server's CPU per pick while a job trains. datasets/ is
    # already an allowed path, so nothing more can be fetched than before.
    # (gradio keeps one list for the process and checks every path in it per file: add ours once.)
    if ctx.data_dir not in _STATIC_ROOTS:
        _STATIC_ROOTS.add(ctx.data_dir)
        gr.set_static_paths([ctx.data_dir / "datasets"])
    # delete_cache: uploads and served copies leave gradio's cache after an hour.
    with gr.Blocks(title=t("app.title"), delete_cache=(3600, 3600)) as demo:
        gr.Markdown(L("app.heading"), elem_id="app-title")
        gr.Markdown(L("app.intro"))
        with gr.Row():
            # Choices and value come with the page (on_load), never frozen at build time.
            ctx.dataset = gr.Dropdown(label=L("common.dataset"), choices=[], value=None, elem_id="dataset-pick",
                                      scale=3)
            ctx.lang = gr.Radio(label=L("app.language"), choices=[(LANG_NAMES[c], c) for c in LANGS], value="en",
                                elem_id="lang", scale=1)
        # Remember the chosen dataset in the browser for the next visit. Registered before the tabs'
        # own listeners, which the page runs in turn: the choice is kept even if the page is left
        # while they still work.
        ctx.dataset.change(None, [ctx.dataset], None, js=cookie_js(DATASET_COOKIE), api_visibility="private")
        with gr.Tabs():
            with gr.Tab(L("tab.dataset"), id="dataset") as dataset_tab:
                dataset.build(ctx)
            with gr.Tab(L("tab.captions"), id="captions") as captions_tab:
                captions.build(ctx)
            with gr.Tab(L("tab.train"), id="train") as train_tab:
                train.build(ctx)
            with gr.Tab(L("tab.monitor"), id="monitor") as monitor_tab:
                monitor.build(ctx)
            with gr.Tab(L("tab.results"), id="results") as results_tab:
                results.build(ctx)

        # One trigger word for captioning and training while the user types it (.input: the
        # values each tab remembers per dataset are set by the server and must not overwrite).
        c = ctx.components
        c["captions.trigger"].input(lambda v: v, [c["captions.trigger"]], [c["train.trigger"]],
                                    api_visibility="private")
        poll = ctx.monitor_poll
        monitor_tab.select(poll.fn, poll.inputs, poll.outputs, api_visibility="private", show_progress="hidden",
                           show_progress_on=poll.busy)
        timer, auto = c["monitor.timer"], c["monitor.auto"]
        # Switched in the browser, with no request: gradio selects the first tab as the page loads,
        # and a request then would cost the load a second round trip beside its own.
        monitor_tab.select(None, [auto], [timer], js="(on) => ({__type__: 'update', active: !!on})",
                           api_visibility="private")
        for tab in (dataset_tab, captions_tab, train_tab, results_tab):
            tab.select(None, None, [timer], js="() => ({__type__: 'update', active: false})",
                       api_visibility="private")
        view = ctx.results_view
        results_tab.select(view.fn, view.inputs, view.outputs, api_visibility="private", show_progress_on=view.busy)

        d = ctx.data_dir
        view_inputs = [c for _, inputs, _ in ctx.dataset_views for c in inputs]
        view_outputs = [c for _, _, outputs in ctx.dataset_views for c in outputs]

        # The dataset the tabs show. Gradio sends the picker's "input" event each time it loses
        # focus, chosen or not: the same dataset again redraws nothing, so what was typed stays.
        shown = gr.State(None)

        def show_dataset(dataset, lang, *values):
            # Every tab's view of the chosen dataset in one answer (see Context.dataset_views).
            out, at = [], 0
            for fn, inputs, _ in ctx.dataset_views:
                out += list(fn(dataset, lang, *values[at:at + len(inputs)]))
                at += len(inputs)
            return [*out, dataset]

        def on_dataset_pick(dataset, last, lang, *values):
            if dataset == last:
                return [gr.skip()] * (len(view_outputs) + 1)
            return show_dataset(dataset, lang, *values)

        # These answers write a hundred components. gradio's busy indicator would cover each of them,
        # and the page re-sends every component's busy state to it on every status message of every
        # later event: about half of a dataset pick's browser work. The quality report shows it alone.
        busy = dict(show_progress_on=[c["dataset.report"]])
        ctx.dataset.input(on_dataset_pick, [ctx.dataset, shown, ctx.lang, *view_inputs], view_outputs + [shown],
                          api_visibility="private", **busy)
        for made in (ctx.dataset_created, ctx.demo_dataset_added):
            made.then(show_dataset, [ctx.dataset, ctx.lang, *view_inputs], view_outputs + [shown],
                      api_visibility="private", **busy)

        # The page load answers everything at once: language, dataset list and choice, the lists
        # and texts each tab reads now, and every tab's view of the chosen dataset.
        late = [component for component, _ in ctx.on_load]
        load_outputs = [ctx.lang, ctx.dataset, *late]
        load_outputs += [c for c in view_outputs if c not in load_outputs] + [shown]

        def on_load(request: gr.Request, *values):
            lang = request_lang(request)
            names = h.list_datasets(d)
            wanted = request_cookie(request, DATASET_COOKIE)
            chosen = wanted if wanted in names else h.newest_dataset(d, names)
            answer = {ctx.lang: lang, ctx.dataset: gr.update(choices=names, value=chosen)}
            for component, fn in ctx.on_load:
                answer[component] = fn(lang)
            for component, value in zip(view_outputs + [shown], show_dataset(chosen, lang, *values)):
                answer[component] = merged(answer[component], value) if component in answer else value
            return [answer.get(c, gr.skip()) for c in load_outputs]

        # <html data-studio-ready> marks a page whose lists and texts have arrived (for automation:
        # a click before that would be undone by them).
        demo.load(on_load, view_inputs, load_outputs, api_visibility="private", show_progress="hidden",
                  **busy).then(
            None, js="() => { document.documentElement.dataset.studioReady = '1'; }")
        # Choosing a language reloads the page in it (see studio/ui/locale.py for why).
        ctx.lang.input(None, [ctx.lang], None, js=cookie_js(LANG_COOKIE, then_reload=True),
                       api_visibility="private")
    return demo


def merged(first, second):
    """Two answers for one component in one event (a choice list and a value): one update.
    gr.skip() is an update without properties, so it merges as "nothing to change"."""
    def as_update(value):
        if isinstance(value, dict) and value.get("__type__") == "update":
            return {k: v for k, v in value.items() if k != "__type__"}
        return {"value": value}

    return gr.update(**{**as_update(first), **as_update(second)})


def launch_kwargs(data_dir: str | Path) -> dict:
    """File-serving policy: only dataset images and run outputs may be served, never the job
    store, caches, models, checkpoints, worker files or a .env (HARDENING_NOTES §1)."""
    from studio.i18n import gradio_i18n

    from starlette.middleware import Middleware

    root = Path(data_dir).resolve()
    return {"allowed_paths": [str(root / "datasets"), str(root / "runs")],
            "blocked_paths": blocked_paths(root), "i18n": gradio_i18n(), "css": CSS,
            "footer_links": ["settings"], "app_kwargs": {"middleware": [Middleware(LocaleScript)]}}


def blocked_paths(root: Path) -> list[str]:
    """gradio matches these as prefixes; run folders appear later, see `refresh_blocked`."""
    fixed = [root / name for name in ("studio.db", "studio.db-wal", "studio.db-shm", "cache", "models",
                                      "worker.lock", "worker.log", ".env")]
    fixed += [Path.cwd() / ".env"]
    runs = root / "runs"
    if runs.is_dir():
        for run in runs.iterdir():
            fixed += [run / "checkpoints", run / "control"]
    return [str(p) for p in fixed]


def refresh_blocked(demo: gr.Blocks, data_dir: str | Path) -> None:
    """Add checkpoint/control folders of runs created since launch to the blocklist, which
    gradio reads on every file request."""
    current = set(demo.blocked_paths)
    for path in blocked_paths(Path(data_dir).resolve()):
        if path not in current:
            demo.blocked_paths.append(path)
