"""The Train tab's "Use this proposal": the plan's model, tier, resolution, steps and batch size go
into the form as values the form accepts; a plan with nothing to propose says why and changes
nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.ui import handlers as h
from studio.ui.handlers.form import form_names
from studio.ui.plan_view import plan_values


def _photos(folder: Path, n: int, size=(900, 800)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 45, 3), dtype=np.uint8)).resize(size, Image.NEAREST).save(
            folder / f"p{i}.png")
    return folder


def _form(p: dict, preset: str) -> dict:
    """The form as the tab submits it after the click."""
    return {"base": p["base"], "custom_base": "", "preset": preset, "tier": p["tier"], "run_name": "r",
            "trigger": "ohwx", **p["values"]}


def test_the_proposal_for_a_gpu_fills_the_form(tmp_path):
    data = _photos(tmp_path / "photos", 4)
    p = plan_values(data, ("NVIDIA GeForce RTX 4090", 24.0), "portrait", "en")
    assert (p["base"], p["tier"]) == ("black-forest-labs/FLUX.1-dev", "16gb")
    assert (p["values"]["dataset.resolution"], p["values"]["schedule.max_steps"],
            p["values"]["training.batch_size"]) == (768, 1000, 1)
    assert "black-forest-labs/FLUX.1-dev, tier 16gb, 768 px, 1000 steps, batch size 1" in p["message"]
    # The tier's own memory settings come with it (not the CPU tier's the form started from).
    tier_values, _ = h.preset_values("portrait", "16gb", "black-forest-labs/FLUX.1-dev")
    memory = [k for k in tier_values if k.startswith("memory.")]
    assert memory and all(p["values"][k] == tier_values[k] for k in memory)
    cfg = h.build_config(tmp_path, dataset=None, form=_form(p, "portrait"))
    assert (cfg.model.base, cfg.memory.tier, cfg.dataset.resolution, cfg.schedule.max_steps) == \
        ("black-forest-labs/FLUX.1-dev", "16gb", 768, 1000)
    assert "resolution: 768" in p["yaml"] and "tier: 16gb" in p["yaml"]
    # the chosen model (family, variant, base) and what is the user's own stay as they are
    assert set(p["values"]) == set(form_names()) - {"base", "custom_base", "preset", "tier", "run_name", "trigger",
                                                    "family", "variant"}


def test_the_proposal_without_a_gpu_is_the_demo_model_on_the_cpu(tmp_path):
    data = _photos(tmp_path / "photos", 5)
    p = plan_values(data, None, "style", "zh-CN")
    assert (p["base"], p["tier"], p["values"]["dataset.resolution"], p["values"]["schedule.max_steps"]) == \
        ("demo", "cpu", 256, 150)
    assert "建议已填入表单" in p["message"] and "档位 cpu" in p["message"]
    cfg = h.build_config(tmp_path, dataset=None, form=_form(p, "style"))
    assert (cfg.model.base, cfg.memory.tier, cfg.schedule.max_steps) == ("demo", "cpu", 150)


def test_nothing_to_propose_is_a_clear_message(tmp_path):
    data = _photos(tmp_path / "photos", 3)
    with pytest.raises(h.UserError, match="Nothing fits on Tiny card: the smallest tier needs about"):
        plan_values(data, ("Tiny card", 4.0), "portrait", "en")
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
    basis = ["flux1", "schnell", "portrait", "cpu", "demo"]
    out = event.fn("cat", "portrait", basis, "en")
    assert len(out) == len(event.outputs)
    labels = [getattr(o, "elem_id", None) for o in event.outputs]
    answer = dict(zip(labels, out))
    assert answer["train-model"] in ("demo", "black-forest-labs/FLUX.1-dev") and answer["train-tier"]
    assert answer["train-resolution"] in (256, 768, 1024) and out[-1].startswith("The proposal is in the form")
    assert out[-2] == ["flux1", "schnell", "portrait", answer["train-tier"], answer["train-model"]]  # the new basis
    missing = event.fn(None, "portrait", basis, "en")
    assert all(isinstance(v, dict) for v in missing[:-1]) and "dataset" in missing[-1].lower()
