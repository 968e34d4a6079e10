"""The Train tab's "Use this proposal": the plan's model (family, variant, base model), tier,
resolution, steps and batch size go into the form as values the form accepts; a plan with nothing
to propose says why and changes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.ui import handlers as h
from studio.ui.handlers.form import form_names
from studio.ui.plan_view import plan_values


def _photos(folder: Path, n: int, size=(900, 800), controls: bool = False) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for sub in ("", "control") if controls else ("",):
        (folder / sub).mkdir(exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 45, 3), dtype=np.uint8)).resize(size, Image.NEAREST).save(
                folder / sub / f"p{i}.png")
    return folder


def _form(p: dict, preset: str) -> dict:
    """The form as the tab submits it after the click."""
    return {"family": p["family"], "variant": p["variant"], "base": p["base"], "custom_base": "", "preset": preset,
            "tier": p["tier"], "run_name": "r", "trigger": "ohwx", **p["values"]}


def test_the_proposal_for_a_gpu_fills_the_form(tmp_path):
    data = _photos(tmp_path / "photos", 4)
    p = plan_values(data, ("NVIDIA GeForce RTX 4090", 24.0), "portrait", "en")
    assert (p["family"], p["variant"], p["base"], p["tier"]) == \
        ("flux1", "dev", "black-forest-labs/FLUX.1-dev", "16gb")
    assert (p["values"]["dataset.resolution"], p["values"]["schedule.max_steps"],
            p["values"]["training.batch_size"]) == (768, 1000, 1)
    assert "FLUX.1 [dev] (black-forest-labs/FLUX.1-dev), tier 16gb, 768 px, 1000 steps, batch size 1" in p["message"]
    # The tier's own memory settings come with it (not the CPU tier's the form started from).
    tier_values, _ = h.preset_values("portrait", "16gb", "black-forest-labs/FLUX.1-dev")
    memory = [k for k in tier_values if k.startswith("memory.")]
    assert memory and all(p["values"][k] == tier_values[k] for k in memory)
    cfg = h.build_config(tmp_path, dataset=None, form=_form(p, "portrait"))
    assert (cfg.model.base, cfg.model.family, cfg.memory.tier, cfg.dataset.resolution, cfg.schedule.max_steps) == \
        ("black-forest-labs/FLUX.1-dev", "flux1-dev", "16gb", 768, 1000)
    assert "resolution: 768" in p["yaml"] and "tier: 16gb" in p["yaml"]
    # the chosen model (family, variant, base) and what is the user's own stay as they are
    assert set(p["values"]) == set(form_names()) - {"base", "custom_base", "preset", "tier", "run_name", "trigger",
                                                    "family", "variant"}


def test_the_proposal_without_a_gpu_is_the_demo_model_on_the_cpu(tmp_path):
    data = _photos(tmp_path / "photos", 5)
    p = plan_values(data, None, "style", "zh-CN")
    from studio.demo import studio_run

    run = studio_run()  # what the Train tab proposes on the demo model
    steps = run["schedule"]["max_steps"]
    assert (p["base"], p["tier"], p["values"]["dataset.resolution"], p["values"]["schedule.max_steps"]) == \
        ("demo", "cpu", run["dataset"]["resolution"], steps)
    assert "建议已填入表单" in p["message"] and "档位 cpu" in p["message"]
    cfg = h.build_config(tmp_path, dataset=None, form=_form(p, "style"))
    assert (cfg.model.base, cfg.memory.tier, cfg.schedule.max_steps) == ("demo", "cpu", steps)


def test_nothing_to_propose_is_a_clear_message(tmp_path):
    data = _photos(tmp_path / "photos", 3)
    # 2 GB: not even the smallest model's NF4 weights (its text encoder would be run on the CPU).
    with pytest.raises(h.UserError, match=r"Nothing fits on Tiny card: FLUX.2 \[klein\] Base 4B needs about"):
        plan_values(data, ("Tiny card", 2.0), "portrait", "en")
    with pytest.raises(h.UserError, match=r"Nothing fits on RTX 4090: FLUX.2 \[dev\] needs about 4\d"):
        plan_values(data, ("NVIDIA GeForce RTX 4090", 24.0), "portrait", "en", "flux2-dev")
    (tmp_path / "empty").mkdir()
    with pytest.raises(h.UserError, match="没有可读的照片"):
        plan_values(tmp_path / "empty", None, "portrait", "zh-CN")
    with pytest.raises(h.UserError):
        plan_values(None, None, "portrait", "en")


def test_the_train_tabs_button_answers_every_field_it_names(tmp_path):
    """The click handler as the page runs it: one value per output, the message last."""
    from studio.ui.build import build_ui

    data = tmp_path / "data"
    h.create_dataset(data, "cat")
    photos = _photos(tmp_path / "photos", 3)
    h.upload_files(data, "cat", [str(p) for p in sorted(photos.iterdir())])
    demo = build_ui(data)
    [event] = [f for f in demo.fns.values() if f.name == "on_apply_plan"]
    out = event.fn("cat", "portrait", "flux1", "schnell", "demo", "en")
    assert len(out) == len(event.outputs)
    labels = [getattr(o, "elem_id", None) for o in event.outputs]
    answer = dict(zip(labels, out))
    model = answer["train-model"]
    assert model["value"] in ("demo", "black-forest-labs/FLUX.1-dev") and answer["train-tier"]
    assert model["value"] in [value for _, value in model["choices"]]  # the model list offers it
    assert answer["train-variant"]["value"] in [value for _, value in answer["train-variant"]["choices"]]
    assert answer["train-resolution"] in (128, 768, 1024) and out[-1].startswith("The proposal is in the form")
    assert answer["train-family"] == "flux1"  # the demo model without a GPU, FLUX.1 [dev] on a 24 GB card
    # the new basis: the settings shown were proposed for this model, preset and tier
    assert out[-2] == ["flux1", answer["train-variant"]["value"], answer["train-preset"]["value"], answer["train-tier"],
                       model["value"]]
    missing = event.fn(None, "portrait", "flux1", "schnell", "demo", "en")
    assert all(isinstance(v, dict) for v in missing[:-1]) and "dataset" in missing[-1].lower()


def test_an_edit_dataset_gets_the_edit_model_and_its_preset(tmp_path):
    data = _photos(tmp_path / "pairs", 4, controls=True)
    p = plan_values(data, ("NVIDIA GeForce RTX 4090", 24.0), "portrait", "en")
    assert (p["family"], p["variant"], p["base"], p["preset"]) == \
        ("flux1-kontext", "dev", "black-forest-labs/FLUX.1-Kontext-dev", "edit")
    cfg = h.build_config(tmp_path, dataset=None, form=_form(p, p["preset"]))
    assert (cfg.model.family, cfg.memory.tier) == ("flux1-kontext-dev", p["tier"])


def test_the_chosen_family_is_honoured_and_the_demo_model_chooses_nothing(tmp_path):
    from studio.ui.plan_view import chosen_model

    assert chosen_model("flux1", "schnell", "demo") == (None, None)
    assert chosen_model("flux2-klein", "base-4b", "black-forest-labs/FLUX.2-klein-base-4B") == \
        ("flux2-klein", "base-4b")
    data = _photos(tmp_path / "photos", 3)
    p = plan_values(data, ("NVIDIA GeForce RTX 4090", 24.0), "portrait", "en", "flux2-klein", "base-4b")
    assert (p["family"], p["variant"], p["base"]) == ("flux2-klein", "base-4b", "black-forest-labs/FLUX.2-klein-base-4B")
    assert "FLUX.2 [klein] Base 4B (black-forest-labs/FLUX.2-klein-base-4B)" in p["message"]
    cfg = h.build_config(tmp_path, dataset=None, form=_form(p, "portrait"))
    assert (cfg.model.family, cfg.training.timestep_sampling) == ("flux2-klein-base-4b", "resolution_shift")


def test_the_train_tabs_plan_follows_the_chosen_model(tmp_path, monkeypatch):
    """On a (pretend) 24 GB card: the plan panel and the button honour a real model chosen in the form;
    on the demo model they propose the best model for the card."""
    from studio.ui.build import build_ui

    monkeypatch.setattr(h, "detect_gpu", lambda: ("NVIDIA GeForce RTX 4090", 24.0))
    data = tmp_path / "data"
    h.create_dataset(data, "cat")
    photos = _photos(tmp_path / "photos", 3)
    h.upload_files(data, "cat", [str(p) for p in sorted(photos.iterdir())])
    demo = build_ui(data)
    plan_events = [f for f in demo.fns.values() if f.name == "on_plan"]
    assert len(plan_events) == 4  # the base model chosen, and after a family, variant or model folder is chosen
    klein = ("flux2-klein", "base-4b", "black-forest-labs/FLUX.2-klein-base-4B")
    assert "Proposed: FLUX.2 [klein] Base 4B" in plan_events[0].fn("cat", *klein, "en")
    assert "Proposed: FLUX.1 [dev]" in plan_events[0].fn("cat", "flux1", "schnell", "demo", "en")
    [apply] = [f for f in demo.fns.values() if f.name == "on_apply_plan"]
    answer = dict(zip([getattr(o, "elem_id", None) for o in apply.outputs], apply.fn("cat", "portrait", *klein, "en")))
    assert answer["train-family"] == "flux2-klein" and answer["train-model"]["value"] == klein[2]
    assert answer["train-variant"]["value"] == "base-4b" and "FLUX.2 [klein] Base 4B" in answer["train-family-text"]
