"""The Train tab's handlers: the config built from the form's named fields, what presets and the
demo model propose, validation in both languages, queueing a job."""

from __future__ import annotations

import pytest
from ui_forms import _train_fields, data, filled  # noqa: F401  (fixtures)

from studio.jobs import JobStore
from studio.ui import handlers as h


def test_build_config_from_fields(filled):
    cfg = h.build_config(filled, **_train_fields())
    d = cfg.to_dict()
    assert d["preset"] == "portrait" and d["memory"]["tier"] == "cpu" and d["model"]["base"] == "demo"
    assert d["schedule"]["max_steps"] == 20 and d["lora"]["rank"] == 4 and d["dataset"]["resolution"] == 64
    assert d["sample"]["prompts"] == ["a photo of [trigger]"] and d["save"]["run_name"] == "cat-lora"
    assert d["dataset"]["path"] == str(filled / "datasets" / "cat" / "images")
    # Advanced fields carry the preset's values, so the preset shows through.
    assert d["lora"]["targets"] == "all_linear" and d["dataset"]["caption_dropout"] == 0.05


@pytest.mark.parametrize("preset", ["portrait", "style"])
def test_a_short_run_from_a_preset_fits_the_warmup_the_user_left_alone(filled, preset):
    """50 steps with the advanced settings untouched: the preset's warm-up (20 or 50) is fitted to
    the run and the resolved config says so; a warm-up the user typed is still checked as given."""
    # The preset's own proposal (a real model's; the demo model proposes a run of its own, DEMO_RUN).
    advanced, _ = h.preset_values(preset, "cpu", "black-forest-labs/FLUX.1-dev")
    cfg = h.build_config(filled, **_train_fields(preset=preset, steps=50, advanced=advanced))
    h.check_config(filled, cfg, "en")
    assert cfg.schedule.warmup_steps == (5 if preset == "style" else 20)
    assert ("fitted to 50 steps" in h.fields_from_config(cfg)["yaml"]) == (preset == "style")
    advanced["schedule.warmup_steps"] = 60
    with pytest.raises(h.UserError, match="warmup_steps"):
        h.check_config(filled, h.build_config(filled, **_train_fields(preset=preset, steps=50, advanced=advanced)))


def test_advanced_fields_cover_every_other_setting_and_round_trip(filled):
    keys = [s.key for s in h.advanced_settings()]
    assert "optimizer.betas" in keys and "memory.mixed_precision" in keys and "schedule.max_steps" not in keys
    advanced, _ = h.preset_values("style", "cpu")
    assert set(advanced) == set(h.BASIC_KEYS) | set(keys)
    advanced["optimizer.betas"] = "[0.8, 0.95]"
    advanced["lora.double_blocks"] = "[0, 1]"
    cfg = h.build_config(filled, **_train_fields(advanced=advanced, preset="style"))
    assert cfg.optimizer.betas == [0.8, 0.95] and cfg.lora.double_blocks == [0, 1]
    fields = h.fields_from_config(cfg)
    assert fields["preset"] == "style" and fields["optimizer.betas"] == "[0.8, 0.95]"
    assert h.import_config(h.export_config(cfg)).to_dict() == cfg.to_dict()


def test_validation_problems_are_readable_in_both_languages(filled):
    bad = _train_fields(steps=0, resolution=100)
    with pytest.raises(h.UserError) as en:
        h.check_config(filled, h.build_config(filled, **bad), "en")
    assert "Please fix these settings first" in str(en.value) and "`dataset.resolution`" in str(en.value)
    with pytest.raises(h.UserError) as zh:
        h.check_config(filled, h.build_config(filled, **{**bad, "lang": "zh-CN"}), "zh-CN")
    assert "请先修正以下设置" in str(zh.value) and "必须是 16 的倍数" in str(zh.value) and "至少为 1" in str(zh.value)
    with pytest.raises(h.UserError, match="whole number"):
        h.build_config(filled, **_train_fields(steps=2.5))
    with pytest.raises(h.UserError, match="optimizer.betas"):
        h.build_config(filled, **_train_fields(advanced={"optimizer.betas": "[0.9"}))


def test_start_training_queues_a_job_only_when_valid(filled):
    with pytest.raises(h.UserError, match="Pick a dataset"):
        h.start_training(filled, h.build_config(filled, **_train_fields(dataset=None)))
    h.create_dataset(filled, "empty")
    with pytest.raises(h.UserError, match="no images"):
        h.start_training(filled, h.build_config(filled, **_train_fields(dataset="empty")))
    assert JobStore(filled).list_jobs() == []
    job_id, message = h.start_training(filled, h.build_config(filled, **_train_fields()))
    assert f"#{job_id}" in message
    job = JobStore(filled).get_job(job_id)
    assert job["status"] == "queued" and job["name"] == "cat-lora"
    assert job["config"]["schedule"]["max_steps"] == 20


def test_a_public_space_without_login_refuses_training(filled, monkeypatch):
    import argparse

    import app

    monkeypatch.setenv("SPACE_ID", "someone/flux-lora-studio")
    monkeypatch.delenv("STUDIO_AUTH", raising=False)
    # apply_space_settings writes os.environ itself: setenv first so teardown removes it again.
    monkeypatch.setenv("STUDIO_TRAINING_REFUSED", "")
    monkeypatch.delenv("STUDIO_TRAINING_REFUSED")
    monkeypatch.delenv("STUDIO_DATA", raising=False)
    args = argparse.Namespace(data_dir="./studio_data")
    assert app.apply_space_settings(args, None) is None
    assert args.data_dir == "/tmp/studio_data"  # local disk, not a network mount
    with pytest.raises(h.UserError, match="STUDIO_AUTH"):
        h.start_training(filled, h.build_config(filled, **_train_fields()))
    assert JobStore(filled).list_jobs() == []

    monkeypatch.delenv("STUDIO_TRAINING_REFUSED")
    monkeypatch.setenv("STUDIO_AUTH", "me:secret-pass")
    assert app.apply_space_settings(argparse.Namespace(data_dir="./studio_data"), None) == [("me", "secret-pass")]
    assert "STUDIO_TRAINING_REFUSED" not in __import__("os").environ


def test_licence_and_tier_texts():
    assert "Non-Commercial" in h.licence_text("black-forest-labs/FLUX.1-dev")
    assert "Apache-2.0" in h.licence_text("black-forest-labs/FLUX.1-schnell")
    assert "演示模型" in h.licence_text("demo", "zh-CN")
    assert "人像" in h.preset_text("portrait", "zh-CN") and "CPU" in h.tier_text("cpu")


def test_the_demo_model_proposes_a_short_run_and_real_models_keep_the_presets():
    from studio.config import resolve

    demo, demo_yaml = h.preset_values("portrait", "cpu", "demo")
    steps, resolution, sample_every = demo["schedule.max_steps"], demo["dataset.resolution"], demo["sample.every"]
    # A few hundred steps at most: 400 at 128 px took 54–56 s on a quiet 2-core CPU (docs/benchmarks.md).
    assert steps <= 500 and resolution <= 512 and 0 < sample_every <= steps
    cfg = h.proposed_config("portrait", "cpu", "demo")
    assert cfg.sample.width <= 512 and cfg.sample.height <= 512 and cfg.schedule.warmup_steps < steps
    assert h.DEMO_RUN["schedule"]["max_steps"] == steps  # one place to retune
    for base in ("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-schnell"):
        real = h.proposed_config("style", "24gb", base).to_dict()
        preset = resolve({"model": {"base": base}}, preset="style", tier="24gb").to_dict()
        assert real == preset and real["schedule"]["max_steps"] >= 1000


def test_the_dataset_picker_left_without_a_new_choice_redraws_nothing(filled):
    """Gradio sends the picker's "input" event whenever it loses focus: the dataset the tabs show
    again changes nothing (the Train tab would propose anew over the settings typed since);
    another dataset is drawn in every tab."""
    from studio.ui.build import build_ui

    h.create_dataset(filled, "dog")
    demo = build_ui(filled)
    on_pick = next(f for f in demo.fns.values() if f.name == "on_dataset_pick")
    values = [c.value for c in on_pick.inputs[3:]]  # the tabs' own fields, as the page starts
    kept = on_pick.fn("cat", "cat", "en", *values)
    assert len(kept) == len(on_pick.outputs) and all(v == {"__type__": "update"} for v in kept)
    drawn = dict(zip([getattr(o, "elem_id", None) for o in on_pick.outputs], on_pick.fn("dog", "cat", "en", *values)))
    assert drawn["dataset-gallery"] == [] and drawn["train-steps"] == h.DEMO_RUN["schedule"]["max_steps"]
    assert on_pick.fn("dog", "cat", "en", *values)[-1] == "dog"  # now the dataset shown
