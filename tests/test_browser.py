"""End to end in a real browser: Debian's Chromium driven by Playwright (never downloaded).

The studio runs as `python app.py` on a free localhost port with a temporary data folder and
its worker. The English test uploads photos it makes, captions them with the basic
captioner, trains the demo model for a few steps on the CPU, watches the monitor, downloads
the LoRA through the Results tab and loads it with safetensors. The Chinese test checks that
the tabs, the start button and a validation error read in Chinese. Screenshots of each tab go
to test-artifacts/.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """(base url, data dir) of a running studio with its worker; stopped afterwards."""
    data_dir = tmp_path_factory.mktemp("studio-data")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "STUDIO_GRACE_SECONDS": "3", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("HF_TOKEN", None)
    log = open(data_dir / "app.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--data-dir", str(data_dir)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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


def test_train_a_lora_end_to_end(studio, browser, tmp_path):
    url, data_dir = studio
    context, page = _open(browser, url, "en-US")
    expect = _expect()

    # 1 · Dataset: create, upload, see the grid and the report.
    page.locator("#dataset-new-name textarea, #dataset-new-name input").first.fill("sneaker")
    page.locator("#dataset-create").click()
    expect(page.locator("#dataset-status")).to_contain_text("is ready")
    page.locator("#dataset-upload input[type=file]").set_input_files(_photos(tmp_path / "photos"))
    expect(page.locator("#dataset-upload")).to_contain_text(re.compile(r"red_sneaker_3\s*\.png"))
    page.locator("#dataset-import").click()
    expect(page.locator("#dataset-status")).to_contain_text("4 image(s) added")
    expect(page.locator("#dataset-gallery img")).to_have_count(4)
    expect(page.locator("#dataset-report")).to_contain_text("What to do")
    _shot(page, "1-dataset")

    # 2 · Captions with the basic captioner.
    _tab(page, "2 · Captions")
    page.locator("#captions-run-missing").click()
    expect(page.locator("#captions-status")).to_contain_text("Captioned 4 image(s)")
    expect(page.locator("#captions-table")).to_contain_text("ohwx")
    _shot(page, "2-captions")

    # 3 · Train: demo model, a preset, the cpu tier, tiny settings.
    _tab(page, "3 · Train")
    expect(page.locator("#train-licence")).to_contain_text("demo model")
    _fill_number(page, "train-steps", 20)
    _fill_number(page, "train-resolution", 64)
    _fill_number(page, "train-rank", 4)
    _fill_number(page, "train-sample-every", 10)
    page.locator("#train-advanced").get_by_text("Advanced settings").first.click()
    for section in ("sample", "schedule", "log", "save"):
        page.locator(f"#adv-section-{section}").get_by_text(section, exact=True).first.click()
    for key, value in {"sample-steps": 2, "sample-width": 64, "sample-height": 64,
                       "schedule-warmup_steps": 2, "log-block_norms_every": 2, "save-every": 10}.items():
        _fill_number(page, f"adv-{key}", value)
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("is queued", timeout=30_000)
    _shot(page, "3-train")

    # 4 · Monitor: loss points, a sample, and success.
    _tab(page, "4 · Monitor")
    expect(page.locator("#monitor-jobs")).to_contain_text("succeeded", timeout=TRAIN_TIMEOUT_MS)
    page.get_by_role("button", name="Refresh").first.click()
    expect(page.locator("#monitor-samples img").first).to_be_visible(timeout=30_000)
    expect(page.locator("#monitor-loss canvas, #monitor-loss svg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#monitor-heatmap img")).to_be_visible(timeout=30_000)
    expect(page.locator("#monitor-progress")).to_contain_text("Step 20 / 20")
    expect(page.locator("#monitor-cancel")).to_be_disabled()   # a finished job offers no cancel
    expect(page.locator("#monitor-resume")).to_be_disabled()
    _shot(page, "4-monitor")

    # 5 · Results: download the LoRA through the page's link and load it.
    _tab(page, "5 · Results")
    # Each file is a table row: the name cell, then the size cell that holds the download link.
    link = page.locator("#results-files tr", has_text=re.compile(r"my-lora\s*\.safetensors")).locator("a")
    expect(link.first).to_be_visible(timeout=30_000)
    href = link.first.get_attribute("href")
    response = page.request.get(href if href.startswith("http") else url + href)
    assert response.ok, response.status
    from safetensors.numpy import load

    tensors = load(response.body())
    assert tensors and any("lora" in k for k in tensors), list(tensors)[:5]
    expect(page.locator("#results-card")).to_contain_text("ohwx")
    _shot(page, "5-results")

    # The job store and checkpoints are never served, even by absolute path.
    db = page.request.get(f"{url}/gradio_api/file={data_dir}/studio.db")
    assert db.status in (403, 404), db.status
    context.close()


def test_chinese_locale(studio, browser):
    url, _ = studio
    context, page = _open(browser, url, "zh-CN")
    expect = _expect()
    expect(page.get_by_role("tab", name="1 · 数据集")).to_be_visible()
    expect(page.get_by_role("tab", name="3 · 训练")).to_be_visible()
    _tab(page, "3 · 训练")
    expect(page.locator("#train-start")).to_have_text("开始训练")
    expect(page.locator("#train-licence")).to_contain_text("内置演示模型")  # texts the tab writes follow too
    _fill_number(page, "train-steps", 0)
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("请先修正以下设置")
    expect(page.locator("#train-status")).to_contain_text("至少为 1")
    _shot(page, "6-train-zh")
    context.close()


def _open(browser, url: str, locale: str):
    """A fresh browser context in `locale` with the studio's page loaded."""
    context = browser.new_context(locale=locale, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(url)
    return context, page


def _expect():
    from playwright.sync_api import expect

    return expect
