"""End to end in a real browser: the first LoRA a newcomer trains, on the demo model, offline.

"Add the demo dataset" (12 hearts captioned "a red zxq on a white background"…), the Train tab's
own proposal for the demo model left as it is, the Monitor to "succeeded" with its samples, and
try-it in Results: the same prompt and seed with and without the LoRA, which must differ clearly
(the LoRA does something visible, not only lower a loss). The screenshots of the Monitor and the
Results tab, in English and in Chinese, are the README's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from test_browser import (TRAIN_TIMEOUT_MS, _expect, _field, _open, _shot, _tab, browser,  # noqa: F401
                          pytestmark, studio)


def _try_it(page, expect, button: str, run_dir: Path, done_before: int) -> dict:
    """Click try-it's button and wait for both pictures; → the run's newest try-it status."""
    page.get_by_role("button", name=button).click()
    for side in ("with", "without"):
        expect(page.locator(f"#results-try-{side} img")).to_be_visible(timeout=TRAIN_TIMEOUT_MS)
    drawn = sorted((run_dir / "tryit").glob("*/status.json"), key=lambda p: p.stat().st_mtime)
    assert len(drawn) > done_before, drawn
    status = json.loads(drawn[-1].read_text())
    assert status["state"] == "done", status
    return status


def test_a_first_lora_on_the_demo_model_shows_its_effect(studio, browser):
    from studio.demo.dataset import STUDIO_NAME, TRIGGER
    from studio.jobs import JobStore
    from studio.ui import handlers as h

    url, data_dir = studio
    context, page = _open(browser, url, "en-US")
    expect = _expect()

    # 1 · Dataset: one click adds the demo dataset and selects it.
    page.locator("#dataset-demo").click()
    expect(_field(page, "dataset-pick")).to_have_value(STUDIO_NAME, timeout=30_000)
    expect(page.locator("#dataset-gallery img")).to_have_count(12, timeout=30_000)

    # 3 · Train: the demo model's proposal, as it comes.
    _tab(page, "3 · Train")
    expect(page.locator("#train-licence")).to_contain_text("demo model")
    steps = h.DEMO_RUN["schedule"]["max_steps"]
    expect(_field(page, "train-steps")).to_have_value(str(steps))
    expect(_field(page, "train-trigger")).to_have_value(TRIGGER)
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("is queued", timeout=30_000)

    # 4 · Monitor: success, and a sample row for every sampled step.
    _tab(page, "4 · Monitor")
    expect(page.locator("#monitor-jobs")).to_contain_text("succeeded", timeout=TRAIN_TIMEOUT_MS)
    page.locator("#monitor-refresh").click()
    expect(page.locator("#monitor-progress")).to_contain_text(f"Step {steps} / {steps} · took")
    expect(page.locator("#monitor-samples img").first).to_be_visible(timeout=30_000)
    _shot(page, "demo-4-monitor")

    # 5 · Results: try-it, with the run's first sample prompt; the LoRA changes the picture.
    run_dir = Path(JobStore(data_dir).get_job(1)["run_dir"])
    _tab(page, "5 · Results")
    expect(page.locator("#results-files")).to_contain_text("my-lora", timeout=30_000)
    page.locator("button.label-wrap", has_text="Try it").click()
    expect(_field(page, "results-try-prompt")).to_have_value(f"a red {TRIGGER} on a white background")
    status = _try_it(page, expect, "Generate with and without the LoRA", run_dir, 0)
    with_lora, without = (np.asarray(Image.open(status[side]).convert("RGB"), dtype=np.float32) / 255
                          for side in ("with", "without"))
    assert with_lora.shape == without.shape == (128, 128, 3)
    difference = float(np.abs(with_lora - without).mean())
    assert difference > 0.02, difference  # 5/255 on average; the same seed without the LoRA differs by 0
    _shot(page, "demo-5-results")

    # The same two tabs in Chinese (the language control reloads the page in it).
    page.get_by_label("简体中文").check()
    expect(page.get_by_role("tab", name="4 · 监控")).to_be_visible(timeout=30_000)
    _tab(page, "4 · 监控")
    expect(page.locator("#monitor-samples img").first).to_be_visible(timeout=30_000)
    _shot(page, "demo-4-monitor-zh")
    _tab(page, "5 · 结果")
    expect(page.locator("#results-files")).to_contain_text("my-lora", timeout=30_000)
    page.locator("button.label-wrap", has_text="试一试").click()
    _try_it(page, expect, "分别用和不用 LoRA 生成", run_dir, 1)
    _shot(page, "demo-5-results-zh")
    context.close()
