"""End to end in a real browser: Debian's Chromium driven by Playwright (never downloaded).

The studio runs as `python app.py` on a free localhost port with a temporary data folder and
its worker. One English session does a creator's first hour: it uploads photos it makes,
captions them with the basic captioner and its own trigger word, reloads the page (everything
is still there, and a dataset made meanwhile is offered), trains the demo model for a few steps
on the CPU, watches the monitor, downloads the LoRA and its model card, starts a second job and
cancels it (the Monitor follows it; messages stay; the words say "cancelled"), then switches
the page to Chinese and reads every tab: no English words, no unnamed buttons, no raw message
keys. A second session, a browser set to zh-CN, checks the same on first load and a validation
error. Full-page screenshots of each tab in both languages go to test-artifacts/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import stop_worker

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TRAIN_TIMEOUT_MS = 240_000
TABS = {"en": ["1 · Dataset", "2 · Captions", "3 · Train", "4 · Monitor", "5 · Results"],
        "zh-CN": ["1 · 数据集", "2 · 标注", "3 · 训练", "4 · 监控", "5 · 结果"]}
SHOT_NAMES = ["1-dataset", "2-captions", "3-train", "4-monitor", "5-results"]
# Latin-letter words the Chinese page may show: names of models, libraries, formats, hardware and
# companies, units, and the other language's own name. Identifiers (file names, config keys, model
# ids: anything with '.', '_', '-', '/' or a digit) and single letters (N, B) are names too.
ALLOWED_IN_CHINESE = {
    "flux", "lora", "florence", "blip", "schnell", "dev", "demo", "clip", "vae", "mlp", "ema", "transformer",
    "logit", "adam", "adamw", "prodigy", "diffusers", "comfyui", "forge", "kohya", "bitsandbytes", "accelerate",
    "hugging", "face", "hub", "apache", "black", "forest", "labs", "nvidia", "cuda", "gpu", "cpu", "jpeg", "png",
    "webp", "heic", "zip", "px", "kb", "mb", "gb", "gib", "english", "ohwx", "readme", "config", "yaml", "txt",
    "safetensors", "md", "auto", "kontext", "klein", "qwen", "mistral", "base",
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} is not installed (apt-get install -y chromium); .ci/run installs it"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


@contextlib.contextmanager
def running_studio(data_dir: Path, *args: str, env: dict | None = None):
    """(base url, data dir) of `python app.py` with its worker on a free port; stopped afterwards."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STUDIO_GRACE_SECONDS": "3", "GRADIO_ANALYTICS_ENABLED": "False",
           **(env or {})}
    env.pop("HF_TOKEN", None)
    log = open(data_dir / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--data-dir", str(data_dir),
                             *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/", proc)
        yield f"http://127.0.0.1:{port}", data_dir
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        stop_worker(data_dir)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with running_studio(tmp_path_factory.mktemp("studio-data")) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _photos(folder: Path, n: int = 4) -> list[str]:
    """Distinct, sharp images just above the ingest minimum of 256 px."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        base = rng.integers(0, 255, size=(17, 20, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((320, 272), Image.NEAREST)
        path = folder / f"red_sneaker_{i}.png"
        im.save(path)
        paths.append(str(path))
    return paths


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _fill_number(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input").first
    box.fill(str(value))
    box.press("Tab")




def _field(page, elem_id: str):
    """The text box of a gradio Textbox, Number or Dropdown."""
    return page.locator(f"#{elem_id} input, #{elem_id} textarea").first


def _pick(page, elem_id: str, option) -> None:
    """Choose `option` (a name or a pattern) in a gradio Dropdown the way a user does: open it,
    click the option."""
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=isinstance(option, str)).click()


def test_a_creators_first_hour(studio, browser, tmp_path):
    from studio.ui import handlers as h

    url, data_dir = studio
    context, page = _open(browser, url, "en-US")
    expect = _expect()
    # 16 · The page title is a heading.
    expect(page.get_by_role("heading", level=1)).to_have_text("Flux LoRA Studio")

    # 1 · Dataset: create, upload, see the grid and the report.
    page.locator("#dataset-new-name textarea, #dataset-new-name input").first.fill("sneaker")
    page.locator("#dataset-create").click()
    expect(page.locator("#dataset-status")).to_contain_text("is ready")
    page.locator("#dataset-upload input[type=file]").set_input_files(_photos(tmp_path / "photos"))
    expect(page.locator("#dataset-upload")).to_contain_text(re.compile(r"red_sneaker_3\s*\.png"))
    page.locator("#dataset-import").click()
    expect(page.locator("#dataset-status")).to_contain_text("4 image(s) added")
    expect(page.locator("#dataset-gallery img")).to_have_count(4)
    # 15 · The report's advice uses the real sizes (320x272 photos at 512 px); one label per image.
    expect(page.locator("#dataset-report")).to_contain_text("the smallest here is 272 px")
    expect(page.locator("#dataset-report")).not_to_contain_text("512 or 768")
    expect(page.locator("#dataset-gallery")).to_contain_text("no caption, below the preset's 512 px")
    _shot(page, "1-dataset")

    # 2 · Captions with the basic captioner and the creator's own trigger word.
    _tab(page, "2 · Captions")
    trigger = _field(page, "captions-trigger")
    expect(trigger).to_have_value("ohwx")  # the tab has drawn its remembered words
    trigger.fill("zqx")
    page.locator("#captions-run-missing").click()
    expect(page.locator("#captions-status")).to_contain_text("Captioned 4 image(s)")
    expect(page.locator("#captions-table")).to_contain_text("zqx")
    _shot(page, "2-captions")

    # 1, 2, 3 · A dataset made while the page was open, and a reload: every list is read anew, the
    # chosen dataset and its words are back, and each tab shows its current state unasked.
    h.create_dataset(data_dir, "late")
    # 18 · The reload asks the server once: the page load's answer holds every tab's view (the
    # Monitor's timer is switched off in the browser when the first tab is selected).
    calls = _backend_calls(page)
    page.reload()
    _settle(page)
    page.wait_for_timeout(1_000)
    assert len(calls) == 1, [json.loads(c.post_data or "{}").get("fn_index") for c in calls]
    expect(page.locator("#dataset-gallery img")).to_have_count(4)
    expect(_field(page, "dataset-pick")).to_have_value("sneaker")
    _tab(page, "2 · Captions")
    expect(page.locator("#captions-table")).to_contain_text("red_sneaker_3")
    expect(_field(page, "captions-trigger")).to_have_value("zqx")
    _pick(page, "dataset-pick", "late")  # accepted by the server: it is in the page's list
    expect(page.locator("#captions-table")).not_to_contain_text("red_sneaker_3")
    expect(page.locator(".toast-item")).to_have_count(0)  # no "Value … is not in the list of choices"
    _pick(page, "dataset-pick", "sneaker")
    expect(page.locator("#captions-table")).to_contain_text("red_sneaker_3")

    # 3 · Train: the demo model proposes a short run (9); the trigger word is the dataset's (3).
    _tab(page, "3 · Train")
    expect(page.locator("#train-licence")).to_contain_text("demo model")
    # The plan for this dataset on this computer (no GPU here): the demo model on the CPU, measured.
    expect(page.locator("#train-plan")).to_contain_text("What fits: no GPU")
    expect(page.locator("#train-plan")).to_contain_text("measured on a 2-core CPU")
    expect(_field(page, "train-trigger")).to_have_value("zqx")
    expect(_field(page, "train-steps")).to_have_value(str(h.DEMO_RUN["schedule"]["max_steps"]))
    expect(_field(page, "train-resolution")).to_have_value(str(h.DEMO_RUN["dataset"]["resolution"]))
    _fill_number(page, "train-steps", 20)
    _fill_number(page, "train-resolution", 64)
    _fill_number(page, "train-rank", 4)
    _fill_number(page, "train-sample-every", 10)
    page.locator("#train-advanced").get_by_text("Advanced settings").first.click()
    for section in ("sample", "schedule", "log", "save"):
        page.locator(f"#adv-section-{section} button.label-wrap").first.click()
    for key, value in {"sample-steps": 2, "sample-width": 64, "sample-height": 64,
                       "schedule-warmup_steps": 2, "log-block_norms_every": 2, "save-every": 10}.items():
        _fill_number(page, f"adv-{key}", value)
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("is queued", timeout=30_000)
    _shot(page, "3-train")

    # 4 · Monitor: loss points, a sample, and success.
    _tab(page, "4 · Monitor")
    expect(page.locator("#monitor-jobs")).to_contain_text("succeeded", timeout=TRAIN_TIMEOUT_MS)
    page.locator("#monitor-refresh").click()
    expect(page.locator("#monitor-samples img").first).to_be_visible(timeout=30_000)
    expect(page.locator("#monitor-loss canvas, #monitor-loss svg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#monitor-heatmap img")).to_be_visible(timeout=30_000)
    assert "gradient norm" in page.locator("#monitor-heatmap img").get_attribute("alt")  # 16
    expect(page.locator("#monitor-progress")).to_contain_text("Step 20 / 20 · took")
    expect(page.locator("#monitor-cancel")).to_be_disabled()   # a finished job offers no cancel
    expect(page.locator("#monitor-resume")).to_be_disabled()
    _shot(page, "4-monitor")
    # The Monitor polls every 2 seconds while it is shown, and not once another tab is.
    polls = _backend_calls(page, _monitor_tick(page))
    page.wait_for_timeout(4_500)
    assert len(polls) >= 1, "the Monitor did not poll"
    _tab(page, "2 · Captions")
    page.wait_for_timeout(500)
    polls.clear()
    page.wait_for_timeout(4_500)
    assert not polls, f"{len(polls)} poll(s) while the Captions tab was shown"

    # 5 · Results: download the LoRA and its model card (17) through the page's links.
    _tab(page, "5 · Results")
    for name in (r"my-lora\s*\.safetensors", r"README\s*\.md"):
        # Each file is a table row: the name cell, then the size cell that holds the download link.
        expect(page.locator("#results-files tr", has_text=re.compile(name)).locator("a").first).to_be_visible(
            timeout=30_000)
    lora = _download(page, url, r"my-lora\s*\.safetensors")
    from safetensors.numpy import load

    tensors = load(lora)
    assert tensors and any("lora" in k for k in tensors), list(tensors)[:5]
    card = _download(page, url, r"README\s*\.md").decode("utf-8")
    assert card.startswith("---\n") and "## Trigger word" in card and "zqx" in card
    expect(page.locator("#results-card")).to_contain_text("zqx")
    # 3 · Try-it starts from the job's own first sample prompt and trigger word.
    page.locator("button.label-wrap", has_text="Try it").click()
    expect(_field(page, "results-try-prompt")).to_have_value(
        h.DEMO_RUN["sample"]["prompts"][0].replace("[trigger]", "zqx"))
    _shot(page, "5-results")

    # The job store and checkpoints are never served, even by absolute path.
    db = page.request.get(f"{url}/gradio_api/file={data_dir}/studio.db")
    assert db.status in (403, 404), db.status

    # 4, 5, 6 · A second job: the Monitor switches to it when it starts; Cancel's message stays
    # through the 2-second refreshes; the ended job reads "Cancelled" with its total time.
    _tab(page, "3 · Train")
    _fill_number(page, "train-steps", 400)
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("#2 is queued", timeout=30_000)
    _tab(page, "4 · Monitor")
    expect(page.locator("#monitor-progress")).to_contain_text("running", timeout=120_000)
    expect(_field(page, "monitor-pick")).to_have_value(re.compile(r"^#2 "))
    # 18 · The app's worker and the training it starts run at a lower CPU priority than the page.
    from studio.jobs import JobStore

    worker_pid = int((data_dir / "worker.lock").read_text().split()[0])
    training_pid = JobStore(data_dir).get_job(2)["pid"]
    assert training_pid and min(os.getpriority(os.PRIO_PROCESS, p) for p in (worker_pid, training_pid)) >= 10
    page.locator("#monitor-cancel").click()
    expect(page.locator("#monitor-message")).to_contain_text("Cancel requested")
    page.wait_for_timeout(5_000)  # two refreshes of the job view
    expect(page.locator("#monitor-message")).to_contain_text("Cancel requested")
    expect(page.locator("#monitor-progress")).to_contain_text("cancelled", timeout=60_000)
    expect(page.locator("#monitor-status")).to_contain_text("Cancelled")
    for elem_id in ("monitor-status", "monitor-progress"):
        text = page.locator(f"#{elem_id}").inner_text()
        assert "Failed" not in text and "ETA" not in text and "processing" not in text, text
    expect(page.locator("#monitor-progress")).to_contain_text("took")

    # 11 · Choosing 简体中文 reloads the whole page in Chinese.
    page.get_by_label("简体中文").check()
    expect(page.get_by_role("tab", name="3 · 训练")).to_be_visible(timeout=30_000)
    _assert_all_chinese(page, data_dir, shots=True)
    context.close()


def test_a_chinese_browser_gets_the_whole_page_in_chinese(studio, browser):
    url, data_dir = studio
    context, page = _open(browser, url, "zh-CN")
    expect = _expect()
    expect(page.get_by_role("heading", level=1)).to_have_text("Flux LoRA 工作室")
    _assert_all_chinese(page, data_dir, shots=False)
    _tab(page, "3 · 训练")
    expect(page.locator("#train-start")).to_have_text("开始训练")
    expect(page.locator("#train-licence")).to_contain_text("内置演示模型")  # texts the tab writes follow too
    _fill_number(page, "train-steps", 0)
    page.locator("#train-run-name textarea, #train-run-name input").first.fill("<b>x</b>")
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("请先修正以下设置")
    expect(page.locator("#train-status")).to_contain_text("至少为 1")
    expect(page.locator("#train-status")).to_contain_text("'<b>x</b>' 不是简单的名称")  # 15: as typed
    context.close()


# ------------------------------------------------------------------ reading a whole page

_COLLECT = r"""
(skipIds) => {
  const shown = (el) => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  let text = document.body.innerText;
  // Files and program output are not interface text: the YAML config and the worker's own
  // message, which the job status quotes as a detail. (Box contents are values, below.)
  for (const el of document.querySelectorAll('.cm-editor, #monitor-status code'))
    text = text.split(el.innerText).join(' ');
  const values = [...document.querySelectorAll('input, textarea')]
    .filter(el => shown(el) && !['file', 'hidden', 'checkbox', 'radio'].includes(el.type)
                  && !skipIds.includes((el.closest('[id]') || {}).id))
    .map(el => el.value);
  // An accessible name: own text or label, or a labelled icon inside (a link around an icon button).
  const named = (el) => el.innerText.trim() || el.getAttribute('aria-label') || el.title
    || el.getAttribute('aria-labelledby')
    || [...el.querySelectorAll('[aria-label], [title], img[alt]')].some(c => c.getAttribute('aria-label')
         || c.title || c.getAttribute('alt'));
  const unnamed = [...document.querySelectorAll('button, [role=button], a[href]')]
    .filter(el => shown(el) && !named(el)).map(el => el.outerHTML.slice(0, 160));
  const spoken = [...document.querySelectorAll('[aria-live], [role=status], [role=alert]')].map(el => el.textContent);
  const alts = [...document.querySelectorAll('img')].filter(shown).map(el => el.getAttribute('alt'));
  return {text, values, unnamed, spoken, alts};
}
"""
# Boxes whose contents are the user's words or program output (prompts, captions, the log).
CONTENT_FIELDS = ["train-prompts", "results-try-prompt", "captions-edit", "monitor-log", "monitor-config"]
# Literal syntax the user types: "[trigger]" in a prompt becomes the trigger word.
SYNTAX = ["[trigger]"]
RAW_KEY = re.compile(r"\b(?:studio|common|status|upload_text|dataframe)\.[a-z_]+\b")


def _open_sections(page) -> None:
    """Open every closed accordion on the visible tab (nested ones appear as parents open)."""
    for _ in range(4):
        closed = page.locator("button.label-wrap:not(.open)").filter(visible=True)
        if not closed.count():
            return
        for i in range(closed.count()):
            closed.nth(0).click()


def _assert_all_chinese(page, data_dir: Path, shots: bool) -> None:
    """Every tab, every section open: no English word outside names, units and the user's own
    words; every button has a name; nothing shows or announces a raw message key."""
    expect = _expect()
    content = _user_content(data_dir)
    found: dict[str, str] = {}
    for tab, shot in zip(TABS["zh-CN"], SHOT_NAMES):
        _tab(page, tab)
        page.wait_for_timeout(1500)  # the tab's own refresh (Monitor, Results) lands
        if shots:
            if shot == "4-monitor":  # the trained job, with its charts, rather than the cancelled one
                _pick(page, "monitor-pick", re.compile(r"^#1 "))
                expect(page.locator("#monitor-samples img").first).to_be_visible()
            _shot(page, f"{shot}-zh")
        _open_sections(page)
        # Read the settled page: no event still running (its busy indicator is transient).
        page.wait_for_function("() => !document.querySelector('[data-testid=status-tracker]:not(.hide)')")
        seen = page.evaluate(_COLLECT, CONTENT_FIELDS)
        assert not seen["unnamed"], f"{tab}: buttons without an accessible name: {seen['unnamed']}"
        raw = RAW_KEY.findall(" ".join([seen["text"], *seen["spoken"]]))
        assert not raw, f"{tab}: raw message keys shown or announced: {raw}"
        for source in [seen["text"], *seen["values"]]:
            for piece in content:  # whole words only: the dataset "late" is not in "cache_latents"
                source = re.sub(rf"(?<![\w.]){re.escape(piece)}(?![\w.])", " ", source)
            for word in re.findall(r"[A-Za-z][A-Za-z0-9_.\-/]*", source):
                if len(word) > 1 and not re.search(r"[._\-/0-9]", word) and word.lower() not in ALLOWED_IN_CHINESE:
                    found.setdefault(word, f"{tab}: …{source[max(0, source.find(word) - 30):source.find(word) + 30]}…")
    assert not found, "English on the Chinese page:\n" + "\n".join(f"{w!r} in {where}" for w, where in found.items())


def _user_content(data_dir: Path) -> list[str]:
    """What the user wrote or chose (captions, prompts, trigger words, names): shown as typed."""
    from studio.data.ingest import list_dataset
    from studio.jobs import JobStore

    pieces = set()
    for folder in (data_dir / "datasets").iterdir():
        pieces |= {item.caption for item in list_dataset(folder) if item.caption} | {folder.name}
    for job in JobStore(data_dir).list_jobs():
        trigger = job["config"]["dataset"]["trigger_word"]
        pieces |= {p.replace("[trigger]", trigger) for p in job["config"]["sample"]["prompts"]} | {trigger}
    return SYNTAX + sorted(pieces, key=len, reverse=True)  # longest first: a caption before its words


def _download(page, url: str, name_pattern: str) -> bytes:
    link = page.locator("#results-files tr", has_text=re.compile(name_pattern)).locator("a").first
    href = link.get_attribute("href")
    response = page.request.get(href if href.startswith("http") else url + href)
    assert response.ok, response.status
    return response.body()


def _backend_calls(page, fn_index: int | None = None) -> list:
    """The page's requests to its event functions (any, or one) from now on, kept as they come."""
    calls = []

    def record(request):
        if "/gradio_api/queue/join" in request.url or "/gradio_api/run/" in request.url:
            if fn_index is None or json.loads(request.post_data or "{}").get("fn_index") == fn_index:
                calls.append(request)

    page.on("request", record)
    return calls


def _monitor_tick(page) -> int:
    """The Monitor timer's event (the one that writes the job's status on each tick)."""
    config = page.evaluate("window.gradio_config")
    status = next(c["id"] for c in config["components"] if c["props"].get("elem_id") == "monitor-status")
    return next(d["id"] for d in config["dependencies"]
                if any(event == "tick" for _, event in d["targets"]) and status in d["outputs"])


def _open(browser, url: str, locale: str):
    """A fresh browser context in `locale` with the studio's page loaded."""
    context = browser.new_context(locale=locale, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    _settle(page)
    return context, page


def _settle(page) -> None:
    """Wait until the page's load events have answered (they set the dataset list and value; a
    click before that would be undone by them)."""
    page.wait_for_selector("html[data-studio-ready]", state="attached")


def _expect():
    from playwright.sync_api import expect

    return expect
