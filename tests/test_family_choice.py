"""`model.family`: which names it accepts (from the registry), how a wrong one is reported, the
family's own config overrides, and a model of another family refused before it loads."""

from __future__ import annotations

import pytest

from conftest import Events, make_images, tiny_config
from fake_family import FakeFamily, registered
from studio import engine
from studio.config import ConfigError, TrainConfig, problems, resolve
from studio.events import EXIT_FAILED
from studio.families import choice
from studio.families.base import Family
from studio.i18n import render_problem


def test_accepted_names_come_from_the_registry():
    names = choice.accepted_names()
    assert {"auto", "flux1", "flux1-dev", "flux1-schnell"} <= set(names)
    assert choice.lookup("flux1-dev")[1] == "dev" and choice.lookup("flux1")[1] == ""
    assert choice.lookup("FLUX1-Schnell")[0].name == "flux1"
    assert choice.lookup("auto") is None and choice.lookup("nope") is None
    with registered():
        assert {"fakefam", "fakefam-small", "fakefam-large"} <= set(choice.accepted_names())
        assert choice.lookup("fakefam-large") == (choice.get_family("fakefam"), "large")
    assert "fakefam" not in choice.accepted_names()  # gone with the family


def test_a_family_named_after_its_variant_is_its_own_alias():
    class Named(FakeFamily):
        name = "fake-dev"
        variants = {"dev": FakeFamily.variants["small"]}

    with registered(Named()):
        assert "fake-dev" in choice.accepted_names() and "fake-dev-dev" not in choice.accepted_names()
        assert choice.lookup("fake-dev")[1] == "dev"


@pytest.mark.parametrize("value, code, suggestion", [
    ("flux1-shnell", "unknown_family_near", "flux1-schnell"),
    ("flux1_dev", "unknown_family_near", "flux1-dev"),
    ("sdxl", "unknown_family", None),
])
def test_an_unknown_family_names_the_nearest_known_one(value, code, suggestion):
    found = [p for p in problems(resolve({"model": {"family": value}}, tier="cpu")) if p.key == "model.family"]
    assert [p.code for p in found] == [code]
    assert found[0].params["suggestion"] == suggestion and "flux1-schnell" in found[0].params["valid"]
    english, chinese = render_problem(found[0], "en"), render_problem(found[0], "zh-CN")
    assert value in english and "模型家族" in chinese
    if suggestion:
        assert f"Did you mean '{suggestion}'" in english and f"您是不是想写 '{suggestion}'" in chinese


@pytest.mark.parametrize("value", ["auto", "flux1", "flux1-dev", "flux1-schnell"])
def test_known_families_pass_validation(value):
    assert not [p for p in problems(resolve({"model": {"family": value}}, tier="cpu")) if p.key == "model.family"]


def test_a_registered_family_is_valid_and_its_overrides_sit_between_preset_and_user():
    with pytest.raises(ConfigError):  # not yet registered: the CLI refuses it
        from studio.config import check
        check(resolve({"model": {"family": "fakefam"}}, tier="cpu"))
    with registered():
        cfg = resolve({"model": {"family": "fakefam"}}, preset="portrait", tier="cpu")
        assert not problems(cfg)
        assert (cfg.optimizer.lr, cfg.dataset.resolution, cfg.training.shift) == (0.0002, 768, 2.5)
        assert cfg.lora.rank == 16  # the rest of the preset stays
        assert cfg.memory.device == "cpu"  # and the memory tier applies on top
        mine = resolve({"model": {"family": "fakefam-large"}, "optimizer": {"lr": 0.001}}, preset="portrait",
                       tier="cpu")
        assert mine.optimizer.lr == 0.001 and mine.dataset.resolution == 768  # the user's own setting wins
        # 'auto' with a published id of the family: the family is known without the network
        by_id = resolve({"model": {"base": "fake-labs/fake-small"}}, preset="portrait", tier="cpu")
        assert by_id.optimizer.lr == 0.0002
    # FLUX.1 has no overrides: the preset's values stand
    assert resolve({"model": {"family": "flux1"}}, preset="portrait", tier="cpu").optimizer.lr == 0.0004


def test_base_family_defaults():
    assert Family.kind == "text-to-image" and Family.config_overrides == {}
    flux1 = choice.get_family("flux1")
    assert flux1.kind == "text-to-image" and flux1.config_overrides == {}
    assert flux1.tier_for(None) == "cpu" and flux1.tier_for(23.99) == "16gb" and flux1.tier_for(6.0) == "8gb"
    fake = FakeFamily()  # a family with a minimum: smaller GPUs do not fit
    assert fake.tier_for(7.5, "small") == "8gb" and fake.tier_for(6.0, "small") is None
    assert fake.tier_for(24.0, "large") == "16gb" and fake.tier_for(16.0, "large") is None


# --------------------------------------------------------------------------- at training start

@pytest.fixture
def no_model_loading(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before its family was checked")

    from studio.families.flux1 import Flux1
    monkeypatch.setattr(Flux1, "load", load)


def _cfg(model_dir, tmp_path, family):
    images = make_images(tmp_path / "ds", count=1)
    return resolve(tiny_config(model_dir, images, tmp_path / "out", model={"base": str(model_dir), "family": family},
                               schedule={"max_steps": 1, "warmup_steps": 0},
                               sample={"prompts": [], "every": 0, "at_start": False}), tier="cpu")


@pytest.mark.parametrize("family, asked", [("flux1-dev", "FLUX.1 [dev]"), ("fakefam", "fakefam")])
def test_a_model_of_another_family_is_refused_before_it_loads(tiny_model, tmp_path, studio_data, no_model_loading,
                                                              family, asked):
    with registered():
        events = Events()
        assert engine.train(_cfg(tiny_model, tmp_path, family), tmp_path / "run", events) == EXIT_FAILED
    error = events.of("error")[0]
    assert error["code"] == "FAMILY_MISMATCH", error
    message = error["message"]
    assert f"model.family is '{family}' ({asked})" in message
    assert "is FLUX.1 [schnell] (family 'flux1', variant 'schnell')" in message
    assert str(tiny_model / "model_index.json") in message and str(tiny_model / "transformer/config.json") in message
    assert "'flux1-schnell' or 'auto'" in message
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("family", ["auto", "flux1", "flux1-schnell"])
def test_a_matching_family_passes_the_check(tiny_model, tmp_path, studio_data, family):
    from studio.train.state import inspect

    info = inspect(_cfg(tiny_model, tmp_path, family), studio_data)
    assert (info.family_name, info.family) == ("flux1", "schnell")


def test_the_setting_round_trips():
    cfg = TrainConfig.from_dict({"model": {"family": "flux1-dev"}})
    assert TrainConfig.from_yaml(cfg.to_yaml()).model.family == "flux1-dev"
