"""Handlers of the studio UI: inputs → dataset files, config dicts and job-store changes.

They are plain functions, so these tests call them directly with a temporary data folder;
no browser, no server, no torch.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ui_forms import _png, _train_fields, data, filled  # noqa: F401  (fixtures)

from studio.config import resolve
from studio.jobs import JobStore
from studio.verify import Check, save_checks
from studio.ui import handlers as h
from studio.ui import job_status, runs
from studio.ui import report_view as rv

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ dataset


def test_create_dataset_validates_the_name(data):
    name, message = h.create_dataset(data, "my cat")
    assert name == "my-cat" and (data / "datasets" / "my-cat" / "images").is_dir() and "ready" in message
    assert "already exists" in h.create_dataset(data, "my-cat")[1]
    with pytest.raises(h.UserError, match="name"):
        h.create_dataset(data, "../etc")
    with pytest.raises(h.UserError, match="请输入"):
        h.create_dataset(data, "", lang="zh-CN")
    assert h.list_datasets(data) == ["my-cat"]


def test_upload_images_and_zip_then_remove(data, tmp_path):
    h.create_dataset(data, "cat")
    zipped = tmp_path / "more.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        buf = io.BytesIO()
        Image.open(_png(tmp_path / "z.png", 9)).save(buf, "PNG")
        z.writestr("inside.png", buf.getvalue())
        z.writestr("inside.txt", "ohwx cat on a sofa")
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"PK\x03\x04 not really an image")
    message = h.upload_files(data, "cat", [str(_png(tmp_path / "a.png", 1)), str(zipped), str(fake)])
    assert "2 image(s) added, 1 item(s) skipped" in message and "fake.png" in message
    zh = h.upload_files(data, "cat", [str(fake)], lang="zh-CN")
    assert "已跳过 fake.png：内容不是图片" in zh  # a zip named like an image is not opened as a zip
    items = rv.gallery_items(data, "cat")
    assert [caption for _, caption in items] == ["a · no caption", "inside · captioned"]
    assert "Removed 1" in h.remove_images(data, "cat", ["a"])
    assert [c for _, c in rv.gallery_items(data, "cat")] == ["inside · captioned"]


def test_upload_total_cap_and_missing_inputs(data, tmp_path):
    h.create_dataset(data, "cat")
    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * (2 * 1024**2))
    with pytest.raises(h.UserError, match="more than the limit of 1 MB"):
        h.upload_files(data, "cat", [str(big)], max_total_mb=1)
    with pytest.raises(h.UserError, match="Choose some photos"):
        h.upload_files(data, "cat", [])
    with pytest.raises(h.UserError, match="Pick or create"):
        h.upload_files(data, None, [str(big)])


def test_quality_report_says_what_to_do_in_both_languages(filled):
    report = h.run_report(filled, "cat", "portrait", 512, "ohwx")
    codes = {w["code"] for w in report["warnings"]}
    assert {"too_few_images", "missing_captions", "below_resolution"} <= codes
    en = rv.report_markdown(report, "en")
    assert "What to do" in en and "at least 8" in en
    zh = rv.report_markdown(report, "zh-CN")
    assert "怎么办" in zh and "图片数量少于此预设的最低要求" in zh
    statuses = [c for _, c in rv.gallery_items(filled, "cat", report, "zh-CN")]
    assert all("无标注" in s and "低于预设的 512 像素" in s for s in statuses)


# ------------------------------------------------------------------ captions


def test_basic_captioning_and_editing(filled):
    seen = []
    message = h.caption_images(filled, "cat", "basic", "ohwx", "animal", "start", "", "", False, "en",
                               progress=lambda done, total: seen.append((done, total)))
    assert "Captioned 3 image(s)" in message and seen[-1] == (3, 3)
    rows = h.caption_table(filled, "cat")
    assert [r[1] for r in rows] == ["ohwx animal, cat"] * 3 and all(r[2] > 0 for r in rows)
    assert "saved" in h.save_caption(filled, "cat", "cat_0", "ohwx cat on grass")
    assert h.read_caption(filled, "cat", "cat_0") == "ohwx cat on grass"
    assert "Changed 1" in h.bulk_edit(filled, "cat", find="grass", replace="snow")
    assert h.read_caption(filled, "cat", "cat_0") == "ohwx cat on snow"
    assert "Changed 3" in h.bulk_edit(filled, "cat", prefix="photo", suffix="high quality")
    assert h.read_caption(filled, "cat", "cat_1") == "photo, ohwx animal, cat, high quality"
    # Only-missing leaves edited captions alone; a cleared caption is captioned again.
    h.save_caption(filled, "cat", "cat_2", "")
    assert "Captioned 1" in h.caption_images(filled, "cat", "basic", "ohwx", "cat", "start", "", "", False)
    assert h.read_caption(filled, "cat", "cat_0") == "photo, ohwx cat on snow, high quality"


def test_caption_notes_for_long_and_non_latin_captions(filled):
    note = h.save_caption(filled, "cat", "cat_0", "一只猫坐在沙发上", lang="zh-CN")
    assert "已保存" in note and "拉丁字母" in note
    h.save_caption(filled, "cat", "cat_1", "word " * 300)  # past schnell's 256, within dev's 512
    notes = {r[0]: r[3] for r in h.caption_table(filled, "cat")}
    assert "the 256-token limit of FLUX.1 [schnell]" in notes["cat_1"]  # the registry's shortest limit
    assert "Latin" in notes["cat_0"] and notes["cat_2"] == ""
    with pytest.raises(h.UserError, match="Click an image"):
        h.save_caption(filled, "cat", None, "x")


def test_unavailable_captioner_is_a_readable_message(filled, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(filled / "no-hf-home"))
    with pytest.raises(h.UserError, match="basic captioner"):
        h.caption_images(filled, "cat", "florence2", "ohwx", "", "start", "", "", False)

# ------------------------------------------------------------------ monitor and results


def _proven(run_dir: Path) -> None:
    save_checks(run_dir, [Check(i, i, True) for i in ("readable_diffusers", "readable_comfyui", "diffusers_keys",
                                                       "comfyui_keys", "same_delta")])


def _fake_run(data: Path, status="succeeded") -> int:
    store = JobStore(data)
    job_id = store.create_job("cat-lora", resolve({"dataset": {"trigger_word": "ohwx"}}, "portrait", "cpu").to_dict())
    job = store.claim_next("test")
    run_dir = Path(job["run_dir"])
    (run_dir / "samples").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(run_dir / "samples" / "step000010_p0.png")
    (run_dir / "cat-lora.safetensors").write_bytes(b"x")
    (run_dir / "cat-lora-comfyui.safetensors").write_bytes(b"x")
    (run_dir / "config.yaml").write_text("{}")
    (run_dir / "train.log").write_text("\n".join(f"line {i}" for i in range(100)))
    # As the training run leaves it: its files proven (studio/verify.py; the checks themselves are
    # tested in test_verify.py, hidden downloads for files that fail them too).
    _proven(run_dir)
    events = [{"type": "start", "max_steps": 20, "start_step": 0}]
    events += [{"type": "step", "step": s, "max_steps": 20, "loss": 1.0 / s, "lr": 1e-4, "it_s": 2.0, "eta_s": 5,
                "block_grad_norms": {"double.0": 0.1 * s, "single.1": 0.2} if s % 5 == 0 else None}
               for s in range(1, 11)]
    events += [{"type": "sample", "step": 10, "path": "samples/step000010_p0.png", "prompt": "a photo of ohwx"}]
    store.append_events(job_id, events)
    if status != "running":
        store.finish(job_id, status, files=[str(run_dir / "cat-lora.safetensors")])
    return job_id


def test_monitor_view_reads_progress_charts_samples_and_log(data):
    job_id = _fake_run(data, status="running")
    view = runs.job_view(data, job_id, "en")
    assert "Step 10 / 20" in view["progress"] and "2.00 it/s" in view["progress"]
    assert len(view["loss"]["step"]) == 20 and set(view["loss"]["series"]) == {"raw", "smoothed"}
    assert view["lr"]["lr"] == [1e-4] * 10
    assert view["heatmap"].ndim == 3 and view["blocks"] == ["double.0", "single.1"]
    assert view["samples"][0][1] == "step 10 · a photo of ohwx"
    assert view["log"].splitlines()[-1] == "line 99" and len(view["log"].splitlines()) == runs.LOG_TAIL_LINES
    assert runs.job_rows(data, "zh-CN")[0][2] == "🏃 训练中"
    assert "cat-lora" in runs.compare_curves(data, [job_id])["job"][0]


def test_monitor_controls_change_the_store(data):
    job_id = _fake_run(data, status="running")
    assert "next step" in runs.control(data, job_id, "sample", "en")
    runs.control(data, job_id, "save", "en")
    assert JobStore(data).get_job(job_id)["status"] == "running"
    assert "stopping" in runs.control(data, job_id, "cancel", "en")
    with pytest.raises(h.UserError, match="only"):
        runs.control(data, job_id, "resume", "en")
    with pytest.raises(h.UserError, match="No job"):
        runs.control(data, None, "cancel", "en")


def test_results_files_card_and_publish_guards(data, monkeypatch):
    job_id = _fake_run(data)
    view = runs.result_view(data, job_id, "en")
    assert [Path(f).name for f in view["files"]] == ["cat-lora-comfyui.safetensors", "cat-lora.safetensors",
                                                     "config.yaml"]
    assert "ohwx" in view["card"] and "cat-lora-comfyui.safetensors" in view["card"] and view["samples"]
    assert "触发词" in runs.model_card(JobStore(data).get_job(job_id), "zh-CN")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(h.UserError, match="user/name"):
        runs.publish(data, job_id, "no-slash", "", True)
    with pytest.raises(h.UserError, match="No token"):
        runs.publish(data, job_id, "me/cat", "", True)
    # Where a typed token could land when publishing really runs: test_publish.py,
    # test_results_tab_publishes_a_finished_job.


def test_ui_modules_do_not_import_torch():
    code = "import sys, studio.ui.build, app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_app_help_and_file_policy(tmp_path):
    out = subprocess.run([sys.executable, "app.py", "--help"], cwd=ROOT, capture_output=True, text=True, check=True)
    for flag in ("--host", "--port", "--data-dir", "--auth", "--share", "--max-upload-mb", "--no-worker"):
        assert flag in out.stdout
    from app import parse_args, parse_auth
    from studio.ui.build import launch_kwargs

    assert parse_args([]).share is False
    assert parse_auth("ann:secret") == [("ann", "secret")]
    with pytest.raises(SystemExit):
        parse_auth("no-colon")
    (tmp_path / "runs" / "1-x").mkdir(parents=True)
    kw = launch_kwargs(tmp_path)
    root = tmp_path.resolve()
    assert kw["allowed_paths"] == [str(root / "datasets"), str(root / "runs")]
    for blocked in ("studio.db", "cache", "models", "runs/1-x/checkpoints", ".env"):
        assert str(root / blocked) in kw["blocked_paths"]
    assert set(kw["i18n"].translations) == {"en", "zh-CN"}


def test_duplicate_rerun_with_edits_and_confirmed_delete(filled):
    from studio.ui import runs

    job_id, _ = h.start_training(filled, h.build_config(filled, **_train_fields()))
    store = JobStore(filled)
    store.request_cancel(job_id)  # queued → cancelled at once, so it may be deleted
    copy_message = runs.manage(filled, job_id, "duplicate")
    copy_id = max(j["id"] for j in store.list_jobs())
    assert f"#{copy_id}" in copy_message and store.get_job(copy_id)["config"] == store.get_job(job_id)["config"]

    text = runs.job_config_yaml(filled, job_id).replace("max_steps: 20", "max_steps: 33")
    message = runs.manage(filled, job_id, "rerun", config_yaml=text)
    rerun_id = max(j["id"] for j in store.list_jobs())
    assert f"#{rerun_id}" in message and store.get_job(rerun_id)["config"]["schedule"]["max_steps"] == 33
    with pytest.raises(h.UserError, match="max_stepz"):
        runs.manage(filled, job_id, "rerun", config_yaml=text.replace("max_steps:", "max_stepz:"))
    with pytest.raises(h.UserError, match="multiple of 16"):
        runs.manage(filled, job_id, "rerun", config_yaml=text.replace("resolution: 64", "resolution: 70"))
    with pytest.raises(h.UserError, match="`schedule.max_stepz`：未知的设置项。您是不是想写 'max_steps'"):
        runs.manage(filled, job_id, "rerun", "zh-CN", config_yaml=text.replace("max_steps:", "max_stepz:"))

    with pytest.raises(h.UserError, match="Tick the box"):
        runs.manage(filled, job_id, "delete")
    assert any(j["id"] == job_id for j in store.list_jobs())
    assert f"#{job_id}" in runs.manage(filled, job_id, "delete", confirmed=True)
    assert not any(j["id"] == job_id for j in store.list_jobs())


# ------------------------------------------------------------------ what a creator meets in the first hour


def test_report_labels_and_advice_use_the_real_values(filled):
    """A 320x288 image at 512 px is both upscaled and below the portrait preset's minimum: one
    label says so with the number; the advice names no resolution that would not help."""
    report = h.run_report(filled, "cat", "portrait", 512, None)
    statuses = [c for _, c in rv.gallery_items(filled, "cat", report, "en")]
    assert statuses and all(s.endswith("no caption, below the preset's 512 px") for s in statuses), statuses
    en = rv.report_markdown(report, "en")
    assert "512 or 768" not in en and "short side is at least 512 px (the smallest here is 288 px)" in en
    assert "python -m studio" not in en  # UI advice speaks of tabs, not the command line
    zh = rv.report_markdown(report, "zh-CN")
    assert "短边至少 512 像素的原图（这里最小的只有 288 像素）" in zh
    assert all("低于预设的 512 像素" in c for _, c in rv.gallery_items(filled, "cat", report, "zh-CN"))


def test_messages_quote_what_the_user_typed_and_real_limits(filled, tmp_path):
    for lang, frame in (("en", "must be a plain name"), ("zh-CN", "不是简单的名称")):
        with pytest.raises(h.UserError) as problem:
            h.check_config(filled, h.build_config(filled, **_train_fields(run_name="<b>x</b>", lang=lang)), lang)
        # Markdown would render <b>x</b> as a bold "x"; escaped, it shows what was typed.
        assert "'&lt;b&gt;x&lt;/b&gt;'" in str(problem.value) and frame in str(problem.value)
    tiny = _png(tmp_path / "tiny.png", 5, size=(200, 120))
    zh = h.upload_files(filled, "cat", [str(tiny)], lang="zh-CN")
    assert "图片只有 200×120 像素，短边至少需要 256 像素" in zh
    en = h.upload_files(filled, "cat", [str(tiny)], lang="en")
    assert "minimum of 256 px" in en and "limits." not in en


def test_each_dataset_remembers_its_words_and_settings(filled):
    from studio.ui import remembered

    h.create_dataset(filled, "dog")
    assert remembered.caption_settings(filled, "cat")["trigger"] == "ohwx"  # nothing yet: the default
    h.caption_images(filled, "cat", "basic", "zqx", "cat", "end", "", "", False)
    remembered.save_caption_settings(filled, "cat", trigger="zqx", class_word="cat", captioner="basic",
                                     placement="end")
    assert remembered.caption_settings(filled, "cat") == {"trigger": "zqx", "class_word": "cat",
                                                          "captioner": "basic", "placement": "end"}
    assert remembered.caption_settings(filled, "dog")["trigger"] == "ohwx"

    job_id, _ = h.start_training(filled, h.build_config(filled, **_train_fields(
        trigger="zqx", steps=33, prompts="[trigger] asleep on a red sofa\na second prompt")))
    job = remembered.last_job(filled, "cat")
    assert job["id"] == job_id and remembered.last_job(filled, "dog") is None
    fields = h.fields_from_config(h.TrainConfig.from_dict(job["config"]))
    assert fields["trigger"] == "zqx" and fields["schedule.max_steps"] == 33
    assert remembered.try_it_prompt(job) == "zqx asleep on a red sofa"
    assert remembered.try_it_prompt({"config": {"dataset": {"trigger_word": "k9"}, "sample": {"prompts": []}}}) \
        == "a photo of k9"
    # Without saved captioning words, the trigger comes from the dataset's newest job.
    (filled / "datasets" / "cat" / remembered.CAPTION_SETTINGS).unlink()
    h.start_training(filled, h.build_config(filled, **_train_fields(trigger="woofy")))
    assert remembered.caption_settings(filled, "cat")["trigger"] == "woofy"


def test_the_monitor_follows_the_newest_running_job_unless_one_was_picked():
    def jobs(*pairs):  # (id, status), newest first as the store lists them
        return [{"id": i, "status": s} for i, s in sorted(pairs, reverse=True)]

    first = jobs((1, "running"))
    assert job_status.pick_job(first, None) == 1
    two_running = jobs((1, "running"), (2, "queued"))
    assert job_status.pick_job(two_running, None) == 1  # #2 has not started
    started = jobs((1, "succeeded"), (2, "running"))
    assert job_status.pick_job(started, None) == 2  # ...and the Monitor switches when it does
    assert job_status.pick_job(jobs((1, "succeeded"), (2, "failed")), None) == 2  # none running: the newest
    assert job_status.pick_job([], None) is None

    pin = job_status.pin_for(1, started)  # the user picked #1 by hand
    assert job_status.pick_job(started, pin) == 1
    assert job_status.pick_job(jobs((1, "succeeded"), (2, "succeeded")), pin) == 1
    assert job_status.pick_job(jobs((1, "succeeded"), (2, "succeeded"), (3, "running")), pin) == 3  # new work
    assert job_status.pick_job(jobs((2, "running")), pin) == 2  # the picked job was deleted


def test_status_words_follow_the_job_status_not_the_worker_code():
    base = {"step": 12, "max_steps": 40, "it_s": 1.5, "eta_s": 653, "started_at": 1000.0, "finished_at": 1100.0}
    cancelled = {**base, "status": "cancelled", "error_code": None, "error_message": "cancelled."}
    interrupted = {**base, "status": "interrupted", "error_code": "WORKER_RESTARTED",
                   "error_message": "the worker restarted and the training process was gone"}
    failed = {**base, "status": "failed", "error_code": "OUT_OF_MEMORY", "error_message": "Out of GPU memory",
              "advice": "Choose the next lower memory tier."}
    texts = {name: job_status.job_status_markdown(job, "en") for name, job in
             (("cancelled", cancelled), ("interrupted", interrupted), ("failed", failed))}
    assert texts["cancelled"].startswith("**Cancelled:**") and "Failed" not in texts["cancelled"]
    assert texts["interrupted"].startswith("**Interrupted:**") and "Resume" in texts["interrupted"]
    assert "Failed" not in texts["interrupted"]
    assert texts["failed"].startswith("**Failed:** Out of GPU memory")
    zh = job_status.job_status_markdown(failed, "zh-CN")
    assert zh.startswith("**失败：**") and "选择下一个更低的显存档位" in zh  # a catalogue code: advice in Chinese
    assert job_status.job_status_markdown({**cancelled, "error_message": None}, "zh-CN") == "**已取消**"
    # No stale ETA once a job stopped: its total time instead (100 s).
    for job in (cancelled, interrupted, failed, {**base, "status": "succeeded"}):
        shown = job_status.progress_html(job, "en")
        assert "ETA" not in shown and "took 1:40" in shown, shown
    assert "ETA 10:53" in job_status.progress_html({**base, "status": "running"}, "en")
    assert "用时 1:40" in job_status.progress_html(cancelled, "zh-CN")


def test_monitor_events_hide_gradio_timers(tmp_path):
    """Timer strings ("processing | 0.1/0.2s") must never show inside the job's status texts."""
    from studio.ui.build import build_ui

    config = build_ui(tmp_path).config
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    watched = {ids["monitor-progress"], ids["monitor-status"], ids["monitor-message"]}
    deps = [d for d in config["dependencies"] if watched & set(d["outputs"])]
    assert len(deps) >= 5  # poll, refresh, pick, tab select, actions
    assert all(d["show_progress"] == "hidden" for d in deps), [d["show_progress"] for d in deps]


def test_busy_indicators_cover_a_few_components_per_event(tmp_path):
    """gradio keeps a busy state for every component an event covers (its outputs unless
    show_progress_on says otherwise) and, on every status message of every later event, copies each
    covered component's value to update it: a page load writing a hundred components made every
    dataset pick and preset switch pay for them. Each event covers at most a handful."""
    from studio.api import expose
    from studio.ui.build import build_ui

    demo = build_ui(tmp_path)
    expose(demo, tmp_path)
    config = demo.config
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    covered = {}
    for dep in config["dependencies"]:
        if dep["backend_fn"]:
            shown_on = dep["show_progress_on"] or dep["outputs"]
            covered[(tuple(map(tuple, dep["targets"])), len(dep["outputs"]))] = shown_on
    assert max(len(on) for on in covered.values()) <= 8, sorted(len(on) for on in covered.values())
    # The events that write most: the page load, a dataset pick, the Train tab's model and preset.
    writers = {key: on for key, on in covered.items() if key[1] > 50}
    assert len(writers) >= 8, len(writers)
    report, preset_text, model_text = ids["dataset-report"], ids["train-preset-text"], ids["train-family-text"]
    assert {tuple(on) for on in writers.values()} <= {(report,), (preset_text,), (model_text,), (ids["train-status"],)}
    load = next(on for (targets, _), on in writers.items() if targets and targets[0][1] == "load")
    assert load == [report]


def test_dataset_pictures_are_not_copied_on_every_pick(tmp_path):
    """Gallery pictures under datasets/ are served where they lie (gradio's static paths): no
    blocked-path checks, hashing and copying of each thumbnail on every dataset pick."""
    from gradio.utils import is_static_file

    from studio.ui.build import build_ui

    thumb = tmp_path / "datasets" / "cats" / ".thumbs" / "a.jpg"
    thumb.parent.mkdir(parents=True)
    thumb.write_bytes(b"jpeg")
    checkpoint = tmp_path / "runs" / "1-cats" / "checkpoints" / "lora.safetensors"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    assert not is_static_file(str(thumb))
    from gradio.data_classes import _StaticFiles

    build_ui(tmp_path)
    assert is_static_file(str(thumb)) and not is_static_file(str(checkpoint))
    registered = len(_StaticFiles.all_paths)
    build_ui(tmp_path)  # a second page for the same data folder adds nothing to gradio's list
    assert len(_StaticFiles.all_paths) == registered


def test_the_model_card_downloads_as_readme_beside_the_lora_files(data):
    from safetensors.numpy import save_file

    from studio.publish import model_card

    job_id = _fake_run(data)
    run_dir = Path(JobStore(data).get_job(job_id)["run_dir"])
    meta = {"base_model": "black-forest-labs/FLUX.1-schnell", "base_family": "schnell", "trigger_word": "ohwx"}
    save_file({"lora_A.weight": np.zeros((4, 8), np.float32)}, str(run_dir / "cat-lora.safetensors"), metadata=meta)
    save_file({"lora_down.weight": np.zeros((4, 8), np.float32)}, str(run_dir / "cat-lora-comfyui.safetensors"),
              metadata=meta)
    _proven(run_dir)
    files = runs.result_view(data, job_id, "en")["files"]
    assert [Path(f).name for f in files] == ["cat-lora-comfyui.safetensors", "cat-lora.safetensors", "README.md",
                                             "config.yaml"]
    assert Path(files[2]).read_text("utf-8") == model_card(run_dir)  # the card `publish` uploads
