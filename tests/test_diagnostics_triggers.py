"""Every catalogue code that can happen on a CPU, triggered through its real path, with the
message checked as the CLI prints it and as the Monitor tab shows it.

Already asserted elsewhere and not repeated here: the codes of RANK_TOO_LARGE,
GUIDANCE_UNSUPPORTED, BLOCK_OUT_OF_RANGE and NO_IMAGES for a missing folder (test_engine),
NAN_LOSS without NaN checkpoints (test_engine, test_faults), OUT_OF_MEMORY at the 16gb tier
and SAVE_FAILED of a checkpoint (test_training_utils, test_faults), captioner messages of
load_captioner (test_captioning).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import Events, make_images, tiny_config
from faulty_trainer import FaultHooks
from studio.config import resolve
from studio.diagnostics import CATALOGUE
from studio.events import EXIT_CONFIG, EXIT_FAILED, EXIT_OOM, Broadcast, ConsoleReporter
from studio.engine import train
from studio.families import get_family
from studio.ui import runs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.engine


def run(cfg_dict, run_dir, tier="cpu", fault=""):
    """The engine as the CLI drives it: events to a listener and to the console printer."""
    events, console = Events(), io.StringIO()
    cfg = resolve(cfg_dict, tier=tier) if isinstance(cfg_dict, dict) else cfg_dict
    code = train(cfg, run_dir, Broadcast(events, ConsoleReporter(console)), hooks=FaultHooks(fault))
    return code, events, console.getvalue()


def quick(model, images, tmp, **sections):
    sections.setdefault("sample", {})
    sections["sample"] = {"prompts": [], "every": 0, "at_start": False, **sections["sample"]}
    sections.setdefault("schedule", {"max_steps": 1, "warmup_steps": 0})
    return tiny_config(model, images, tmp / "out", **sections)


def assert_presented(code: str, error: dict, console: str) -> None:
    """The CLI line and the Monitor tab (English and Chinese) carry the message and advice."""
    assert error["code"] == code and error["advice"] == CATALOGUE[code].advice
    assert f"ERROR [{code}] {error['message']}" in console and CATALOGUE[code].advice in console
    job = {"error_message": error["message"], "advice": error["advice"], "error_code": code}
    shown = runs.job_status_markdown(job, "en")
    assert error["message"] in shown and error["advice"] in shown
    zh = runs.job_status_markdown(job, "zh-CN")
    assert error["message"] in zh and error["advice"] not in zh  # the advice is translated


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "images", count=2)


def test_rank_too_large_from_the_cli(tiny_model, images, tmp_path, studio_data):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(quick(tiny_model, images, tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "studio", "train", str(config), "--tier", "cpu",
                          "--set", "lora.rank=500", "--run-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == EXIT_FAILED, out.stderr[-2000:]
    assert "ERROR [RANK_TOO_LARGE] lora.rank 500 is larger than this model's layers allow" in out.stderr
    assert CATALOGUE["RANK_TOO_LARGE"].advice in out.stderr and "Traceback" not in out.stderr
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    error = next(e for e in events if e["type"] == "error")
    assert error["code"] == "RANK_TOO_LARGE" and "use at most" in error["message"]
    assert events[-1]["type"] == "done" and events[-1]["status"] == "failed"


def test_nan_loss_message_names_the_step_and_learning_rate(tiny_model, images, tmp_path, studio_data):
    code, events, console = run(quick(tiny_model, images, tmp_path, schedule={"max_steps": 3, "warmup_steps": 0,
                                                                          "scheduler": "constant"}),
                                tmp_path / "run", fault="nan@0")
    assert code == EXIT_FAILED and not events.of("step")
    error = events.of("error")[0]
    assert "The loss became nan at step 1 (learning rate" in error["message"]
    assert_presented("NAN_LOSS", error, console)


def test_prompt_longer_than_t5_limit_warns(tiny_model, tmp_path, studio_data):
    images = make_images(tmp_path / "images", count=1)
    long_caption = " ".join(f"word{i} detail" for i in range(400))
    (images / "photo_0.txt").write_text(long_caption)
    code, events, console = run(quick(tiny_model, images, tmp_path), tmp_path / "run")
    assert code == 0, events.of("error")
    [warning] = [w for w in events.of("warning") if w["code"] == "PROMPT_TRUNCATED"]
    # the family's text encoder (FLUX.1: T5) and the variant's limit (schnell: 256)
    assert get_family("flux1").tokens_name == "T5"
    assert f"{get_family('flux1').tokens_name} tokens; only the first 256 are used" in warning["message"]
    assert warning["message"].startswith("Caption 'word0 detail")
    assert f"WARNING [PROMPT_TRUNCATED] {warning['message']}" in console
    assert "python -m studio families" in CATALOGUE["PROMPT_TRUNCATED"].advice  # each model's limit
    # A short caption gives no such warning.
    (images / "photo_0.txt").write_text("a short caption")
    _, events, _ = run(quick(tiny_model, images, tmp_path), tmp_path / "run2")
    assert not [w for w in events.of("warning") if w["code"] == "PROMPT_TRUNCATED"]


def test_out_of_memory_at_the_lowest_tier_advises_smaller_settings(tiny_model, images, tmp_path, studio_data):
    code, events, console = run(quick(tiny_model, images, tmp_path, schedule={"max_steps": 3, "warmup_steps": 0}),
                                tmp_path / "run", fault="oom@1")
    assert code == EXIT_OOM
    error = events.of("error")[0]
    assert error["next_tier"] is None
    assert "Out of GPU memory at step 1. Lower the resolution or batch size" in error["message"]
    assert_presented("OUT_OF_MEMORY", error, console)


def test_model_missing_names_the_folder(images, tmp_path, studio_data):
    missing = tmp_path / "no-such-model"
    started = time.monotonic()
    code, events, console = run(quick(missing, images, tmp_path), tmp_path / "run")
    assert code == EXIT_FAILED and time.monotonic() - started < 60
    error = events.of("error")[0]
    assert str(missing) in error["message"] and "does not exist" in error["message"]
    assert_presented("MODEL_MISSING", error, console)
    # A folder that exists but is not a diffusers model says what is missing.
    (tmp_path / "not-a-model").mkdir()
    _, events, _ = run(quick(tmp_path / "not-a-model", images, tmp_path), tmp_path / "run2")
    assert "no transformer/config.json here" in events.of("error")[0]["message"]


def test_model_missing_hub_id_offline_fails_fast_and_says_where_it_looked(images, tmp_path, studio_data,
                                                                         monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    code, events, console = run(quick("no-such-org/no-such-flux-model", images, tmp_path), tmp_path / "run")
    assert code == EXIT_FAILED and time.monotonic() - started < 30
    error = events.of("error")[0]
    assert "no-such-org/no-such-flux-model" in error["message"] and "Hugging Face cache" in error["message"]
    assert_presented("MODEL_MISSING", error, console)


def test_no_images_when_every_file_is_unusable(tiny_model, tmp_path, studio_data):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "fake.png").write_text("not an image")
    (junk / "empty.jpg").write_bytes(b"")
    (junk / "notes.txt").write_text("a caption without an image")
    code, events, console = run(quick(tiny_model, junk, tmp_path), tmp_path / "run")
    assert code == EXIT_FAILED
    error = events.of("error")[0]
    assert "no usable images found" in error["message"] and str(junk) in error["message"]
    assert any(w["code"] == "NO_IMAGES" and "fake.png" in w["message"] for w in events.of("warning"))
    assert_presented("NO_IMAGES", error, console)


def test_captioner_unavailable_offline_in_the_ui_and_cli(tmp_path, monkeypatch):
    from studio.ui import handlers as h
    from studio.ui.handlers import UserError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "data"
    h.create_dataset(data, "caps")
    make_images(data / "datasets" / "caps" / "images", count=1, captions=False)
    with pytest.raises(UserError) as err:
        h.caption_images(data, "caps", "no-such-org/no-such-captioner", "ohwx", "dog", "start", "", "", False)
    message = str(err.value)
    assert "basic captioner" in message and "no-such-org/no-such-captioner" in message
    assert "[CAPTIONER_UNAVAILABLE]" in message and "Traceback" not in message
    assert "basic captioner" in CATALOGUE["CAPTIONER_UNAVAILABLE"].advice

    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "studio", "caption", str(data / "datasets" / "caps"),
                          "--captioner", "no-such-org/no-such-captioner"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "no-such-org/no-such-captioner" in out.stderr and "basic" in out.stderr, out
    assert "ERROR [CAPTIONER_UNAVAILABLE]" in out.stderr


def test_config_invalid_reaches_the_engine_as_an_event(tiny_model, images, tmp_path, studio_data):
    cfg = resolve(quick(tiny_model, images, tmp_path), tier="cpu")
    cfg.dataset.resolution = 70  # past the loader, as a hand-built config would be
    cfg.optimizer.lr = -1.0
    code, events, console = run(cfg, tmp_path / "run")
    assert code == EXIT_CONFIG
    error = events.of("error")[0]
    assert "dataset.resolution: 70 must be a multiple of 16" in error["message"]
    assert "optimizer.lr: -1.0 is not a usable learning rate" in error["message"]
    assert_presented("CONFIG_INVALID", error, console)


def test_guidance_unsupported_names_the_model(tiny_model, images, tmp_path, studio_data):
    code, events, console = run(quick(tiny_model, images, tmp_path, training={"guidance": 3.5}), tmp_path / "run")
    assert code == EXIT_FAILED
    error = events.of("error")[0]
    assert f"training.guidance is 3.5, but {tiny_model} has no guidance embeddings" in error["message"]
    assert_presented("GUIDANCE_UNSUPPORTED", error, console)


def test_save_failed_when_the_final_lora_cannot_be_written(tiny_model, images, tmp_path, studio_data):
    run_dir = tmp_path / "run"
    (run_dir / "test-lora.safetensors").mkdir(parents=True)  # the file's name is taken by a folder
    code, events, console = run(quick(tiny_model, images, tmp_path), run_dir)
    assert code == EXIT_FAILED
    error = events.of("error")[0]
    assert error["message"].startswith("Writing the LoRA files failed:")
    assert_presented("SAVE_FAILED", error, console)


@pytest.mark.skipif(torch.cuda.is_available(), reason="GPU_REQUIRED can only be triggered without a GPU")
def test_gpu_required_for_a_gpu_tier_on_a_cpu_machine(tiny_model, images, tmp_path, studio_data):
    code, events, console = run(quick(tiny_model, images, tmp_path), tmp_path / "run", tier="16gb")
    assert code == EXIT_FAILED
    error = events.of("error")[0]
    assert "memory.tier 16gb needs a CUDA GPU and none was found; choose the cpu tier" in error["message"]
    assert_presented("GPU_REQUIRED", error, console)


@pytest.mark.skipif(torch.cuda.is_available(), reason="GPU_REQUIRED can only be triggered without a GPU")
def test_gpu_required_for_gpu_only_settings_when_auto_finds_no_gpu(tiny_model, images, tmp_path, studio_data):
    """`memory.device: auto` with a quantised base and 8-bit AdamW on a machine without a GPU: the
    engine names each setting before loading anything (not an error from inside diffusers)."""
    cfg = quick(tiny_model, images, tmp_path, memory={"tier": "24gb", "device": "auto", "base_precision": "nf4"},
                optimizer={"name": "adamw8bit"})
    code, events, console = run(cfg, tmp_path / "run", tier="24gb")
    assert code == EXIT_FAILED
    error = events.of("error")[0]
    assert error["message"].startswith("No CUDA GPU was found, and memory.base_precision nf4 needs one")
    assert "optimizer.name adamw8bit needs one" in error["message"]
    assert_presented("GPU_REQUIRED", error, console)


def test_package_missing_names_the_setting_and_the_package(tiny_model, images, tmp_path, studio_data, monkeypatch):
    monkeypatch.setitem(sys.modules, "prodigyopt", None)  # what an environment without it looks like
    cfg = quick(tiny_model, images, tmp_path, optimizer={"name": "prodigy", "lr": 1.0})
    code, events, console = run(cfg, tmp_path / "run")
    assert code == EXIT_FAILED
    error = events.of("error")[0]
    assert error["message"].startswith("optimizer.name prodigy needs the prodigyopt package, which is not installed")
    assert_presented("PACKAGE_MISSING", error, console)


def test_every_catalogue_code_has_a_translated_advice():
    from studio.i18n import catalogue

    zh = catalogue("zh-CN")
    for code in CATALOGUE:
        assert f"diag.{code}.advice" in zh, code
