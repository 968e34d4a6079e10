"""UI latency, idle vs. while a training job saturates the CPU.

    python bench/ui_latency.py [--polls 60] [--steps 400] [--rounds 5] [--no-browser]

Two parts, both with a real `demo`-model job trained by the worker as the load:

1. The Monitor poll: the whole server-side work of one poll (job list, job detail with loss/LR
   curves, heat map, samples and log tail), the function the gr.Timer calls, on a job with a few
   hundred step events. HTTP and rendering not included. Goal: p95 under 150 ms while training.
2. What a person waits for in the page (`python app.py` with this data folder, Debian's Chromium
   through Playwright, on the same machine): a page reload until the chosen dataset's photos are
   shown; switching the Train tab's preset until its fields are filled; picking another dataset
   (20 photos of 1024x768, imported through the Dataset tab's handler) until its gallery and
   quality report are shown; and, for reference, the first switch to the Train tab after a reload
   until its fields are shown. Goal: each under 0.5 s while a job trains, on the page's own clock:
   from the reload (the new page's navigation start) or the click (its pointerdown) to the frame
   that shows the answer. The wall time around Playwright's calls is printed beside it; it adds
   Playwright's own work (finding an element, waiting for it to stand still, round trips).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def poll_once(data_dir: Path, job_id: int) -> float:
    from studio.ui import runs

    start = time.perf_counter()
    runs.job_rows(data_dir, "en")
    runs.job_choices(data_dir)
    runs.job_view(data_dir, job_id, "en")
    runs.worker_running(data_dir)
    return (time.perf_counter() - start) * 1000


def measure(data_dir: Path, job_id: int, polls: int) -> dict:
    times = [poll_once(data_dir, job_id) for _ in range(polls)]
    times.sort()
    return {"p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))], "max": times[-1]}


def fake_history(data_dir: Path, steps: int) -> int:
    """A finished job with `steps` step events (block norms every 10) to poll."""
    from studio.jobs import JobStore

    store = JobStore(data_dir)
    job_id = store.create_job("history", {"save": {"run_name": "history"}})
    job = store.claim_next("bench")
    Path(job["run_dir"]).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    events = [{"type": "step", "step": s, "max_steps": steps, "loss": float(rng.random()), "lr": 1e-4,
               "it_s": 2.0, "eta_s": 1.0,
               "block_grad_norms": {f"double.{b}": float(rng.random()) for b in range(19)} if s % 10 == 0 else None}
              for s in range(1, steps + 1)]
    store.append_events(job_id, events)
    store.finish(job_id, "succeeded", files=[])
    return job_id


def start_training(data_dir: Path) -> int:
    """Queue a long demo-model job on the CPU tier and start the worker."""
    from studio.config import resolve
    from studio.jobs import JobStore
    from studio.worker import ensure_worker

    images = data_dir / "datasets" / "bench" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text("ohwx")
    cfg = resolve({"dataset": {"path": str(images), "resolution": 128, "trigger_word": "ohwx"},
                   "schedule": {"max_steps": 100_000, "warmup_steps": 0},
                   "sample": {"every": 0, "at_start": False}, "save": {"every": 0, "run_name": "load"}},
                  preset="portrait", tier="cpu")
    job_id = JobStore(data_dir).create_job("load", cfg.to_dict())
    ensure_worker(data_dir)
    return job_id


def photo_datasets(data_dir: Path, names: list[str], count: int = 20) -> None:
    """Datasets of `count` 1024x768 photos each, imported through the Dataset tab's handler (which
    also runs the quality report, as the tab does after an upload)."""
    from studio.ui import handlers as h

    rng = np.random.default_rng(2)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            files = []
            for i in range(count):
                path = Path(tmp) / f"{name}_{i}.jpg"
                small = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
                Image.fromarray(small).resize((1024, 768), Image.BICUBIC).save(path, quality=90)
                files.append(str(path))
            h.create_dataset(data_dir, name)
            h.upload_files(data_dir, name, files)
            h.run_report(data_dir, name, "portrait", 512, None)


def _cpu(processes) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except Exception:  # noqa: BLE001 - a renderer may have exited
            pass
    return total


def shown(page, selector: str, text: str, ready: bool = False) -> float:
    """Wait until `selector`'s text contains `text`, checked on every frame the page draws:
    Playwright's expect() retries after 100, 250, 500 and 1000 ms, which would round each wait
    up to its next retry. `ready`: also wait for the page load's answer (<html data-studio-ready>).
    Returns the page's clock (performance.now(), ms since the page's navigation began) at that frame."""
    return page.wait_for_function(
        "([sel, text, ready]) => { const e = document.querySelector(sel);"
        " const root = document.documentElement;"  # none for a moment while a reload swaps the page
        " return !!root && (!ready || root.dataset.studioReady === '1')"
        " && !!e && e.innerText.includes(text) && performance.now(); }",
        arg=[selector, text, ready], polling="raf").json_value()


# The moment the person's click lands, on the page's own clock: what they wait from there to the
# answer on screen leaves out Playwright's work around a click (finding the element, waiting for it
# to stand still, the round trips to the browser), which is no part of the page.
MARK_CLICK = ("() => { window.__clickAt = null; addEventListener('pointerdown', () => {"
              " if (window.__clickAt === null) window.__clickAt = performance.now(); },"
              " {capture: true, once: true}); }")


def since_click(page, done_ms: float) -> float:
    return (done_ms - page.evaluate("window.__clickAt")) / 1000


def page_latency(data_dir: Path, rounds: int) -> dict[str, list[float]]:
    """Seconds a person waits in the page for a reload, a preset switch and a dataset pick, and
    the CPU seconds each costs the server (app.py) and the browser: on a machine shared with
    other work, waits grow with the load, while the CPU cost is the action's own."""
    import socket
    import urllib.request

    import psutil

    from playwright.sync_api import expect, sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--data-dir", str(data_dir)],
                           cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times: dict[str, list[float]] = {}
    server = psutil.Process(app.pid)

    def browser_processes():
        return [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()]

    class Timed:
        """Wall seconds and server/browser CPU seconds of one action, kept under `name`."""

        def __init__(self, name: str, keep: bool):
            self.name, self.keep = name, keep

        def __enter__(self):
            self.start, self.cpu = time.perf_counter(), (_cpu([server]), _cpu(browser_processes()))
            return self

        def __exit__(self, *exc):
            if exc[0] is None and self.keep:
                wall = time.perf_counter() - self.start
                cpu = (_cpu([server]) - self.cpu[0], _cpu(browser_processes()) - self.cpu[1])
                for suffix, value in (("", wall), (" cpu:server", cpu[0]), (" cpu:browser", cpu[1])):
                    times.setdefault(self.name + suffix, []).append(value)

    try:
        url = f"http://127.0.0.1:{port}/"
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                         args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_context(locale="en-US", viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(60_000)
            expect.set_options(timeout=60_000)  # a slow answer is a figure, not a failure
            page.goto(url)
            page.wait_for_selector("html[data-studio-ready]", state="attached")
            report = page.locator("#dataset-report")
            page.locator("#dataset-pick input").first.click()  # the page remembers it across reloads
            page.get_by_role("option", name="photos-a", exact=True).click()
            expect(page.locator("#dataset-gallery")).to_contain_text("photos-a_0 ")
            def in_page(name: str, seconds: float, keep: bool) -> None:
                if keep:
                    times.setdefault(name + " in page", []).append(seconds)

            def click_until(name: str, target, condition: str, arg, keep: bool) -> None:
                """Click `target` (once it is shown) and wait for `condition` (JS on `a`, checked on
                every frame): the wall time and the page's own wait from the click, kept under `name`."""
                target.wait_for(state="visible")
                page.evaluate(MARK_CLICK)
                with Timed(name, keep):
                    target.click()
                    done = page.wait_for_function(f"a => ({condition}) && performance.now()", arg=arg,
                                                  polling="raf").json_value()
                in_page(name, since_click(page, done), keep)

            has_text = "((sel, text) => { const e = document.querySelector(sel); return !!e && e.innerText.includes(text); })"
            for r in range(rounds + 1):  # round 0 warms up (first page, first imports in the app)
                with Timed("page reload", r > 0):
                    page.reload(wait_until="commit")
                    done = shown(page, "#dataset-report", "20 image(s)", ready=True)  # sent with the gallery
                in_page("page reload", done / 1000, r > 0)  # the new page's clock starts with the reload

                target = "photos-b" if r % 2 == 0 else "photos-a"
                page.locator("#dataset-pick input").first.click()
                click_until("dataset pick", page.get_by_role("option", name=target, exact=True),
                            f"{has_text}('#dataset-gallery', a + '_0 ') && {has_text}('#dataset-report', '20 image(s)')",
                            target, r > 0)

                # The first switch to the Train tab after a reload: gradio builds its ~200 fields then.
                click_until("tab switch", page.get_by_role("tab", name="3 · Train"),
                            "(() => { const e = document.querySelector('#train-preset-text');"
                            " return !!e && e.offsetParent !== null && e.innerText.trim() !== ''; })()", None, r > 0)
                preset = "Art style" if r % 2 == 0 else "Product / object"  # the page starts on portrait
                before = page.locator("#train-preset-text").inner_text()
                page.locator("#train-preset input").first.click()
                click_until("preset switch", page.get_by_role("option", name=preset, exact=True),
                            "(() => { const e = document.querySelector('#train-preset-text');"
                            " return !!e && e.innerText !== a; })()", before, r > 0)
                page.get_by_role("tab", name="1 · Dataset").click()
            browser.close()
    finally:
        app.terminate()
        app.wait(timeout=30)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=60)
    parser.add_argument("--steps", type=int, default=400, help="step events in the polled job's history")
    parser.add_argument("--rounds", type=int, default=5, help="page measurements per condition")
    parser.add_argument("--no-browser", action="store_true", help="only the Monitor poll")
    parser.add_argument("--warmup-timeout", type=float, default=180.0)
    parser.add_argument("--training-only", action="store_true", help="measure the page only while a job trains")
    args = parser.parse_args()
    from studio.jobs import JobStore

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        os.environ["STUDIO_DATA"] = str(data_dir)
        history = fake_history(data_dir, args.steps)
        idle = measure(data_dir, history, args.polls)
        pages: dict[str, dict[str, list[float]]] = {}
        if not args.no_browser:
            photo_datasets(data_dir, ["photos-a", "photos-b"])
            if not args.training_only:
                pages["idle"] = page_latency(data_dir, args.rounds)
        load_id = start_training(data_dir)
        store, deadline = JobStore(data_dir), time.time() + args.warmup_timeout
        while time.time() < deadline:
            job = store.get_job(load_id)
            if job["status"] == "running" and (job["step"] or 0) > 2:
                break
            if job["status"] in ("failed", "succeeded", "cancelled", "interrupted"):
                print(f"training job ended early: {job['status']} {job['error_message']}", file=sys.stderr)
                return 1
            time.sleep(1)
        else:
            print("training did not start in time", file=sys.stderr)
            return 1
        busy = measure(data_dir, history, args.polls)
        busy_live = measure(data_dir, load_id, args.polls)
        if not args.no_browser:
            pages["training"] = page_latency(data_dir, args.rounds)
        store.request_cancel(load_id)
        deadline = time.time() + 60
        while store.get_job(load_id)["status"] not in ("cancelled", "failed", "interrupted") and time.time() < deadline:
            time.sleep(1)
        out = subprocess.run(["pgrep", "-f", f"studio.worker --data-dir {data_dir}"], capture_output=True, text=True)
        for pid in out.stdout.split():  # only the worker this script started, found by its own data folder
            os.kill(int(pid), 15)
    print(f"monitor poll, {args.polls} polls each, history of {args.steps} steps (ms):")
    for name, r in (("idle", idle), ("training (history job)", busy), ("training (live job)", busy_live)):
        print(f"  {name:24s} p50 {r['p50']:7.1f}  p95 {r['p95']:7.1f}  max {r['max']:7.1f}")
    ok = busy["p95"] < 150 and busy_live["p95"] < 150
    print("goal p95 < 150 ms while training:", "met" if ok else "NOT met")
    if pages:
        load = os.getloadavg()[0]
        print(f"\nin the page (Chromium on this machine), {args.rounds} rounds each, seconds: what the person"
              f" waits, on the page's clock (from the reload or the click to the answer on screen); the wall"
              f" time around Playwright's calls; CPU of app.py and of the browser. Load average now {load:.1f}"
              f" on {os.cpu_count()} CPUs:")
        for condition, figures in pages.items():
            for what in ("page reload", "dataset pick", "preset switch", "tab switch"):
                waits, wall, srv, brw = (figures[what + s] for s in (" in page", "", " cpu:server", " cpu:browser"))
                print(f"  {condition:9s} {what:14s} in page median {statistics.median(waits):5.2f} max {max(waits):5.2f}"
                      f"   wall median {statistics.median(wall):5.2f} max {max(wall):5.2f}"
                      f"   cpu server {statistics.median(srv):5.2f} browser {statistics.median(brw):5.2f}")
        slow = [w for w in ("page reload", "dataset pick", "preset switch")
                if statistics.median(pages.get("training", {}).get(w + " in page", [0])) >= 0.5]
        print("goal < 0.5 s while training:", "met" if not slow else f"NOT met ({', '.join(slow)})")
        ok = ok and not slow
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
