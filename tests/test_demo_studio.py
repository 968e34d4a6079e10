"""The studio offers the committed demo model: `model.base: demo`, the Train tab's proposal, the demo dataset."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from studio.demo import MODEL_DIR, sampling_defaults
from studio.demo.dataset import STUDIO_NAME, TRIGGER


def test_demo_base_is_the_committed_model():
    from studio.models import inspect_model, resolve_base
    from studio.sharing import DEMO_NAME, base_identity

    assert Path(resolve_base("demo")) == MODEL_DIR
    info = inspect_model("demo")
    assert Path(info.path) == MODEL_DIR and info.family == "schnell" and info.t5_max_length == 256
    assert info.latent_channels == 16 and info.vae_scale_factor == 8
    identity = base_identity("demo", info.path, info.family, info.family_name)
    assert identity.name == DEMO_NAME and identity.licence_id == "apache-2.0"
    # The folder given by its path is recognised as the demo model too (its README's first line).
    assert base_identity(str(MODEL_DIR), str(MODEL_DIR), "schnell", "flux1").name == DEMO_NAME
    assert resolve_base("black-forest-labs/FLUX.1-dev") == "black-forest-labs/FLUX.1-dev"  # real models unchanged


def test_train_tab_proposes_the_demo_models_own_resolution_and_sampling():
    from studio.ui import handlers as h

    cfg = h.proposed_config("concept", "cpu", "demo")
    assert cfg.dataset.resolution == 128 and (cfg.sample.width, cfg.sample.height) == (128, 128)
    assert cfg.sample.steps == sampling_defaults()["num_inference_steps"]
    assert cfg.sample.true_cfg == sampling_defaults()["true_cfg_scale"] == 3.0  # the model's guidance
    assert cfg.sample.at_start  # the first samples show the base's look, before the LoRA changes it
    assert all("[trigger]" in p for p in cfg.sample.prompts)
    real = h.proposed_config("concept", "cpu", "black-forest-labs/FLUX.1-schnell")
    assert real.dataset.resolution == 512 and real.sample.width == 512  # the preset's, as before
    assert real.sample.true_cfg == 1.0


def test_demo_dataset_is_one_click_away(tmp_path):
    from studio.ui import remembered
    from studio.ui.dataset import add_demo_dataset

    name, message = add_demo_dataset(tmp_path, "en")
    images = tmp_path / "datasets" / name / "images"
    pictures = sorted(images.glob("*.png"))
    assert name == STUDIO_NAME and len(pictures) == 12 and "12 image(s) added" in message
    assert TRIGGER in message
    for picture in pictures:  # accepted by the studio's import: at least its 256 px floor
        assert min(Image.open(picture).size) >= 256
        assert TRIGGER in picture.with_suffix(".txt").read_text(encoding="utf-8").split()
    assert remembered.train_trigger(tmp_path, name) == TRIGGER  # the Train tab proposes it

    again, message = add_demo_dataset(tmp_path, "zh-CN")  # a second click selects it, adds nothing
    assert again == name and len(sorted(images.glob("*.png"))) == 12 and "演示" in message


def test_a_missing_demo_model_says_how_to_get_it_back(tmp_path, monkeypatch):
    import pytest

    import studio.demo
    from studio.models import ModelError, resolve_base

    monkeypatch.setattr(studio.demo, "MODEL_DIR", tmp_path / "model")
    with pytest.raises(ModelError, match=r"missing from .*git checkout -- studio/demo/model.*build-demo"):
        resolve_base("demo")
