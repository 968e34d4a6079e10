"""What a gradio page's size costs in the browser: a reload with N form components, on this machine.

    python bench/ui_components.py [--sizes 0 120 240 360] [--rounds 5] [--kinds] [--events]

bench/ui_latency.py measures the studio's own page; this one measures gradio alone, to tell the
studio's work from the framework's. Each page is a title, a dropdown and two tabs; the second tab
holds N settings (a third each numbers, checkboxes and dropdowns, each with a label and help
text) in closed accordions of 16, as the Train tab's "Advanced" section holds its settings. A
page-load event sets a text, and the page counts as ready when its answer has arrived (what the
studio's page waits for before it shows a dataset). With `--lazy`, the N settings are also
measured built on demand (`gr.render` when their tab is chosen): the reload, and the tab's first
opening. With `--kinds`, the page without settings is also measured with one component of each
kind the studio's page holds beyond those (the kinds are what gradio loads code for before the
first request), each kind alone and all together. With `--events`, the page with 120 settings is
also measured with N buttons whose click events each read and write W of the settings (the
studio's page has 81 events reading 436 and writing 1,306 components in all). Chromium (Debian's)
through Playwright, as the browser tests use it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def settings_block(n: int) -> None:
    import gradio as gr

    with gr.Accordion("Advanced", open=False):
        for start in range(0, n, 16):
            with gr.Accordion(f"section {start // 16}", open=False):
                for i in range(start, min(n, start + 16)):
                    if i % 3 == 0:
                        gr.Number(label=f"number {i}", info="what this number does")
                    elif i % 3 == 1:
                        gr.Checkbox(label=f"switch {i}", info="what this switch does")
                    else:
                        gr.Dropdown(choices=["one", "two"], value="one", label=f"choice {i}", info="what it chooses")
    gr.Markdown("the settings are here", elem_id="settings-shown")


# One component of each kind the studio's page holds beyond the settings' own (studio/ui: the
# resolved config's YAML, the Monitor's charts, the galleries, tables, pictures and files).
KINDS = {
    "code": lambda gr: gr.Code("a: 1", language="yaml"),
    "nativeplot": lambda gr: gr.LinePlot(x="step", y="loss"),
    "gallery": lambda gr: gr.Gallery(),
    "dataframe": lambda gr: gr.Dataframe(headers=["a", "b"]),
    "image": lambda gr: gr.Image(),
    "file": lambda gr: gr.File(),
    "slider": lambda gr: gr.Slider(0, 1),
    "radio": lambda gr: gr.Radio(["a", "b"]),
    "html": lambda gr: gr.HTML("<b>x</b>"),
    "downloadbutton": lambda gr: gr.DownloadButton("get"),
}


def page(n: int, lazy: bool, kinds: tuple[str, ...] = (), events: tuple[int, int] = (0, 0)):
    import gradio as gr

    with gr.Blocks() as demo:
        gr.Markdown("# A page")
        gr.Dropdown(choices=["a", "b"], value="a", label="dataset")
        with gr.Tabs():
            with gr.Tab("first"):
                text = gr.Markdown()
            with gr.Tab("second") as second:
                for kind in kinds:
                    KINDS[kind](gr)
                if lazy:
                    @gr.render(triggers=[second.select])
                    def _():
                        settings_block(n)
                else:
                    settings_block(n)
        if events[0]:
            wired = [c for c in demo.blocks.values() if isinstance(c, (gr.Number, gr.Checkbox, gr.Dropdown))][1:]
            for k in range(events[0]):
                gr.Button(f"action {k}").click(lambda *v: v, wired[:events[1]], wired[:events[1]])
        demo.load(lambda: "loaded", None, text).then(
            None, js="() => { document.documentElement.dataset.ready = '1'; }")
    return demo


def measure(browser, n: int, lazy: bool, rounds: int, kinds: tuple[str, ...] = (),
            events: tuple[int, int] = (0, 0)) -> tuple[list[float], list[float]]:
    demo = page(n, lazy, kinds, events)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True)
    tab = browser.new_page()
    reloads, opens = [], []
    try:
        tab.goto(url)
        tab.wait_for_selector("html[data-ready]", state="attached")
        for _ in range(rounds + 1):  # the first round warms up
            start = time.perf_counter()
            tab.reload(wait_until="commit")
            tab.wait_for_function("() => document.documentElement.dataset.ready === '1'", polling="raf")
            reloads.append(time.perf_counter() - start)
            start = time.perf_counter()
            tab.get_by_role("tab", name="second").click()
            tab.wait_for_function("() => { const e = document.querySelector('#settings-shown');"
                                  " return !!e && e.offsetParent !== null; }", polling="raf")
            opens.append(time.perf_counter() - start)
    finally:
        tab.close()
        demo.close()
    return reloads[1:], opens[1:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 120, 240, 360])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lazy", action="store_true", help="also measure the settings built on demand")
    parser.add_argument("--kinds", action="store_true",
                        help="also measure the page without settings with each further kind, and all of them")
    parser.add_argument("--events", action="store_true",
                        help="also measure 120 settings with N click events reading and writing W settings each")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        for n in args.sizes:
            for lazy in ((False, True) if args.lazy and n else (False,)):
                reloads, opens = measure(browser, n, lazy, args.rounds)
                results.append((n, lazy, reloads, opens))
                print(f"  {n:4d} settings{' (on demand)' if lazy else '            '}  reload median "
                      f"{statistics.median(reloads):.3f} s (max {max(reloads):.3f})   their tab opened: median "
                      f"{statistics.median(opens):.3f} s", flush=True)
        if args.kinds:
            plain = statistics.median(measure(browser, 0, False, args.rounds)[0])
            print(f"\n  no settings, no further kinds: reload median {plain:.3f} s", flush=True)
            for kinds in [(kind,) for kind in KINDS] + [tuple(KINDS)]:
                reloads, _ = measure(browser, 0, False, args.rounds, kinds)
                name = kinds[0] if len(kinds) == 1 else f"all {len(kinds)} kinds"
                print(f"  + {name:16s} reload median {statistics.median(reloads):.3f} s "
                      f"(+{statistics.median(reloads) - plain:.3f} s)", flush=True)
        if args.events:
            plain = statistics.median(measure(browser, 120, False, args.rounds)[0])
            print(f"\n  120 settings, no events: reload median {plain:.3f} s", flush=True)
            for count, width in ((80, 1), (80, 10), (80, 50), (20, 100), (40, 100), (80, 100)):
                reloads, _ = measure(browser, 120, False, args.rounds, events=(count, width))
                print(f"  + {count:3d} events x {width:3d} settings in and out: reload median "
                      f"{statistics.median(reloads):.3f} s (+{statistics.median(reloads) - plain:.3f} s)", flush=True)
        browser.close()
    base = statistics.median(results[0][2])
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; reload relative to the page "
          f"with {results[0][0]} settings ({base:.3f} s):")
    for n, lazy, reloads, _ in results:
        print(f"  {n:4d}{' on demand' if lazy else ''}: x{statistics.median(reloads) / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
