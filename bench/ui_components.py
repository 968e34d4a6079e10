"""What a gradio page's size costs in the browser: a reload with N form components, on this machine.

    python bench/ui_components.py [--sizes 0 120 240 360] [--rounds 5]

bench/ui_latency.py measures the studio's own page; this one measures gradio alone, to tell the
studio's work from the framework's. Each page is a title, a dropdown and two tabs; the second tab
holds N settings (a third each numbers, checkboxes and dropdowns, each with a label and help
text) in closed accordions of 16, as the Train tab's "Advanced" section holds its settings. A
page-load event sets a text, and the page counts as ready when its answer has arrived (what the
studio's page waits for before it shows a dataset). With `--lazy`, the N settings are also
measured built on demand (`gr.render` when their tab is chosen): the reload, and the tab's first
opening. Chromium (Debian's) through Playwright, as the browser tests use it.
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


def page(n: int, lazy: bool):
    import gradio as gr

    with gr.Blocks() as demo:
        gr.Markdown("# A page")
        gr.Dropdown(choices=["a", "b"], value="a", label="dataset")
        with gr.Tabs():
            with gr.Tab("first"):
                text = gr.Markdown()
            with gr.Tab("second") as second:
                if lazy:
                    @gr.render(triggers=[second.select])
                    def _():
                        settings_block(n)
                else:
                    settings_block(n)
        demo.load(lambda: "loaded", None, text).then(
            None, js="() => { document.documentElement.dataset.ready = '1'; }")
    return demo


def measure(browser, n: int, lazy: bool, rounds: int) -> tuple[list[float], list[float]]:
    demo = page(n, lazy)
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
        browser.close()
    base = statistics.median(results[0][2])
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; reload relative to the page "
          f"with {results[0][0]} settings ({base:.3f} s):")
    for n, lazy, reloads, _ in results:
        print(f"  {n:4d}{' on demand' if lazy else ''}: x{statistics.median(reloads) / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
