"""End to end in a real browser: an edit LoRA from before/after pairs on FLUX.1 Kontext.

A tiny random-weight Kontext model is built into the studio's data folder. A creator uploads a zip
of pairs (control/ + target/, one target without its "before" image), sees the pairs side by side
and the unpaired file named, writes one instruction for every pair, types the local model folder
in the Train tab (which follows its family, Kontext, to the edit preset), trains a few steps on the
CPU, watches the Monitor reach "succeeded" with a sample, and in Results edits a picture of its
own with try-it: before, with the LoRA and without it.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from test_browser import (TRAIN_TIMEOUT_MS, _expect, _field, _fill_number, _open, _tab, browser,  # noqa: F401
                          pytestmark, studio)

INSTRUCTION = "flip it left to right"


def _picture(seed: int) -> Image.Image:
    """A distinct, sharp picture just above the import minimum of 256 px."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)).resize((256, 256), Image.NEAREST)


def _pairs_zip(folder: Path) -> Path:
    """control/ + target/ of two mirror-image pairs, and a target 'lonely' without its control."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pairs.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i, stem in enumerate(("cup", "hat")):
            before = _picture(i)
            for role, im in (("control", before), ("target", before.transpose(Image.Transpose.FLIP_LEFT_RIGHT))):
                z.writestr(f"{role}/{stem}.png", _png(im))
        z.writestr("target/lonely.png", _png(_picture(7)))
    return path


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_an_edit_lora_from_pairs(studio, browser, tmp_path):
    from studio.families import get_family

    url, data_dir = studio
    model = get_family("flux1-kontext").build_tiny(data_dir / "models" / "my-kontext")
    context, page = _open(browser, url, "en-US")
    expect = _expect()

    # 1 · Dataset: a zip of pairs; the pairs side by side; the target without a "before" named.
    _field(page, "dataset-new-name").fill("edits")
    page.locator("#dataset-create").click()
    expect(page.locator("#dataset-status")).to_contain_text("is ready")
    page.locator("#dataset-upload input[type=file]").set_input_files(str(_pairs_zip(tmp_path / "upload")))
    page.locator("#dataset-import").click()
    expect(page.locator("#dataset-status")).to_contain_text("3 image(s) added")
    expect(page.locator("#dataset-pairs img")).to_have_count(2)
    expect(page.locator("#dataset-pairs")).to_contain_text("cup · no instruction")
    problems = page.locator("#dataset-pairs-problems")
    expect(problems).to_contain_text("2 pair(s), 1 problem(s).")
    expect(problems).to_contain_text("lonely.png: no before image: add control/lonely")

    # 2 · Captions: one instruction for all pairs.
    _tab(page, "2 · Captions")
    page.locator("button.label-wrap", has_text="one instruction for all pairs").click()
    _field(page, "captions-pair-instruction").fill(INSTRUCTION)
    page.locator("#captions-pair-apply").click()
    expect(page.locator("#captions-status")).to_contain_text("written for all 2 pair(s)")
    expect(page.locator("#captions-table")).to_contain_text(INSTRUCTION)

    # 3 · Train: the local model folder typed in; the tab follows its family (Kontext) to the edit
    # preset; a few tiny steps.
    _tab(page, "3 · Train")
    custom = _field(page, "train-model-custom")
    custom.fill(str(model))
    custom.press("Tab")  # on to the preset list: leaving it unchanged keeps the settings typed next
    expect(page.locator("#train-family-text")).to_contain_text("FLUX.1 Kontext [dev]")
    for key, value in {"train-steps": 2, "train-resolution": 64, "train-rank": 4, "train-sample-every": 0}.items():
        _fill_number(page, key, value)
    expect(_field(page, "train-family")).to_have_value("FLUX.1 Kontext [dev] · edit LoRAs from before/after pairs")
    expect(_field(page, "train-preset")).to_have_value("Edit (before / after pairs)")
    expect(custom).to_have_value(str(model))
    expect(page.locator("#train-licence")).to_contain_text("Non-Commercial License")
    page.locator("#train-advanced").get_by_text("Advanced settings").first.click()
    for section in ("sample", "schedule"):
        page.locator(f"#adv-section-{section} button.label-wrap").first.click()
    for key, value in {"sample-steps": 2, "sample-width": 64, "sample-height": 64, "schedule-warmup_steps": 0}.items():
        _fill_number(page, f"adv-{key}", value)
    page.locator("#adv-sample-at_start input[type=checkbox]").uncheck()
    expect(_field(page, "train-prompts")).to_have_value("make it a watercolour painting")
    _field(page, "train-prompts").fill(INSTRUCTION)
    page.locator("#train-start").click()
    expect(page.locator("#train-status")).to_contain_text("is queued", timeout=30_000)

    # 4 · Monitor: success, with the sample drawn from the first pair's "before" image.
    _tab(page, "4 · Monitor")
    expect(page.locator("#monitor-jobs")).to_contain_text("succeeded", timeout=TRAIN_TIMEOUT_MS)
    page.locator("#monitor-refresh").click()
    expect(page.locator("#monitor-samples img").first).to_be_visible(timeout=30_000)
    expect(page.locator("#monitor-progress")).to_contain_text("Step 2 / 2 · took")

    from studio.jobs import JobStore

    job = JobStore(data_dir).get_job(1)
    run_dir = Path(job["run_dir"])
    assert job["config"]["model"] == {**job["config"]["model"], "base": str(model), "family": "flux1-kontext"}
    _assert_edit_lora_files(run_dir)
    samples = sorted(run_dir.glob("samples/*.png"))
    assert len(samples) == 1 and Image.open(samples[0]).text["control"] == "cup.png", samples

    # 5 · Results: try-it edits a picture of the user's own; before, with and without are shown.
    _tab(page, "5 · Results")
    expect(page.locator("#results-files")).to_contain_text("my-lora", timeout=30_000)
    page.locator("button.label-wrap", has_text="Try it").click()
    given = page.locator("#results-try-input img")
    expect(given).to_have_attribute("src", re.compile(r"/cup\.png$"))  # the run's first "before" image
    mine = tmp_path / "mine.png"
    _picture(42).save(mine)
    page.locator("#results-try-input").get_by_role("button", name="Remove Image").click()
    page.locator("#results-try-input input[type=file]").set_input_files(str(mine))
    expect(given).to_have_attribute("src", re.compile(r"/mine\.png$"))
    page.get_by_role("button", name="Generate with and without the LoRA").click()
    for side in ("with", "without"):
        expect(page.locator(f"#results-try-{side} img")).to_be_visible(timeout=TRAIN_TIMEOUT_MS)
    expect(given).to_have_attribute("src", re.compile(r"/mine\.png$"))  # the before, beside them
    drawn = sorted((run_dir / "tryit").glob("*/status.json"))
    status = json.loads(drawn[-1].read_text())
    assert status["state"] == "done" and np.array_equal(np.asarray(Image.open(status["before"])), np.asarray(
        Image.open(mine).convert("RGB")))
    context.close()


def _assert_edit_lora_files(run_dir: Path) -> None:
    """Both LoRA files exist and name FLUX.1 Kontext in their metadata."""
    from safetensors import safe_open

    for name in ("my-lora.safetensors", "my-lora-comfyui.safetensors"):
        with safe_open(str(run_dir / name), "np") as f:
            assert f.metadata()["model_family"] == "flux1-kontext", name
