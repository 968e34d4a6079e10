"""TrainConfig: round trip, rejection of unknown keys and wrong types, presets, validation, docs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studio.config import (REPO_ROOT, ConfigError, TrainConfig, config_reference, list_presets, load_preset,
                           parse_override, resolve, validate)


def test_round_trip_is_exact():
    user = {"dataset": {"path": "/data/x", "trigger_word": "ohwx", "extra_resolutions": [768],
                        "augmentations": [{"name": "horizontal_flip", "prob": 0.5}]},
            "optimizer": {"lr": "3e-4"}, "lora": {"single_blocks": [0, 5]}}
    cfg = resolve(user, preset="style", tier="cpu")
    text = cfg.to_yaml()
    again = TrainConfig.from_yaml(text)
    assert again == cfg and again.to_yaml() == text
    assert cfg.optimizer.lr == 3e-4 and cfg.preset == "style" and cfg.lora.rank == 32


def test_unknown_key_names_the_nearest():
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"lora": {"rnak": 8}, "optimiser": {}})
    text = str(err.value)
    assert "lora.rnak: unknown setting. Did you mean 'rank'?" in text
    assert "optimiser: unknown setting. Did you mean 'optimizer'?" in text


@pytest.mark.parametrize("data,message", [
    ({"lora": {"rank": "sixteen"}}, "lora.rank: expected a whole number"),
    ({"lora": {"rank": 16.5}}, "lora.rank: expected a whole number"),
    ({"dataset": {"buckets": "yes"}}, "dataset.buckets: expected true or false"),
    ({"schedule": {"scheduler": "cosin"}}, "Did you mean 'cosine'"),
    ({"sample": {"prompts": "one prompt"}}, "sample.prompts: expected a list of text"),
    ({"optimizer": {"lr": float("nan")}}, "optimizer.lr: expected a number"),
    ({"dataset": [1, 2]}, "dataset: expected a mapping"),
])
def test_wrong_types_are_rejected(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_dict(data)


@pytest.mark.parametrize("preset", list_presets())
@pytest.mark.parametrize("tier", list_presets("memory"))
def test_every_preset_loads_and_validates(preset, tier):
    p = load_preset(preset)
    assert p.description and p.guidance["min_images"] > 0 and p.guidance["min_resolution"] >= 256
    model = {"family": p.families[0]} if p.families else {}  # an edit preset is for an edit family
    cfg = resolve({"dataset": {"path": "/data/x"}, "model": model}, preset=preset, tier=tier)
    assert validate(cfg) == []
    assert cfg.memory.tier == tier


def test_presets_cover_the_subjects_and_tiers():
    assert {"portrait", "style", "product", "concept"} <= set(list_presets())
    assert {"24gb", "16gb", "12gb", "8gb", "cpu"} == set(list_presets("memory"))


def test_override_order_and_parsing():
    cfg = resolve({"lora": {"rank": 8}}, preset="portrait", tier="cpu", overrides=["lora.rank=32", "sample.prompts=[a, b]"])
    assert cfg.lora.rank == 32 and cfg.sample.prompts == ["a", "b"] and cfg.lora.targets == "all_linear"
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("lora.rank")
    with pytest.raises(ConfigError, match="preset 'portriat' not found. Did you mean 'portrait'"):
        resolve({}, preset="portriat", tier="cpu")


@pytest.mark.parametrize("changes,needle", [
    ({"dataset": {"resolution": 500}}, "multiple of 16"),
    ({"memory": {"tier": "cpu", "mixed_precision": "fp16"}}, "fp16 needs a CUDA GPU"),
    ({"memory": {"tier": "cpu", "base_precision": "nf4"}}, "needs a CUDA GPU"),
    ({"optimizer": {"name": "adamw8bit"}, "memory": {"tier": "cpu"}}, "adamw8bit needs a CUDA GPU"),
    ({"schedule": {"max_steps": -5}}, "schedule.max_steps: must be at least 1"),
    ({"sample": {"true_cfg": 0.5}}, "sample.true_cfg: must be at least 1 (got 0.5)"),
    ({"optimizer": {"lr": 50.0}}, "not a usable learning rate"),
    ({"save": {"run_name": "../../etc"}}, "must be a plain name"),
    ({"dataset": {"augmentations": [{"name": "flipp"}]}}, "flipp"),
    ({"dataset": {"caption_dropout": 1.5}}, "must be in [0, 1)"),
])
def test_impossible_combinations_say_what_to_change(changes, needle):
    cfg = resolve(changes, tier="cpu")
    problems = validate(cfg)
    assert any(needle in p for p in problems), problems


def test_config_reference_is_generated_and_current():
    text = config_reference()
    for key in ("model.base", "lora.rank", "schedule.scheduler", "training.timestep_sampling", "memory.tier"):
        assert f"`{key}`" in text
    committed = (REPO_ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert committed == text, "docs/config.md is stale: run python -m studio config-reference -o docs/config.md"


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["model", "dataset", "lora", "optimizer", "schedule", "training", "memory",
                                        "sample", "save", "log", "preset", "junk"]),
                       yaml_values | st.dictionaries(st.text(max_size=15), yaml_values, max_size=5), max_size=6))
def test_fuzzed_configs_give_messages_not_crashes(data):
    try:
        cfg = TrainConfig.from_dict(data)
    except ConfigError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)
        return
    assert isinstance(validate(cfg), list)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_yaml_text(text):
    try:
        TrainConfig.from_yaml(text)
    except ConfigError as err:
        assert str(err)


@pytest.mark.parametrize("gib, tier", [(None, "cpu"), (79.6, "24gb"), (31.4, "24gb"), (23.99, "16gb"),
                                       (16.0, "16gb"), (15.0, "16gb"), (12.0, "12gb"), (10.0, "8gb"), (8.0, "8gb")])
def test_tier_for_memory(gib, tier):
    """H100 80 GB, RTX 5090, RTX 4090 / 3090 (24 GB), 16 GB cards, T4, 12 GB, 10 GB, 8 GB."""
    from studio.config import tier_for_memory
    assert tier_for_memory(gib) == tier


def test_bf16_flux_does_not_fit_a_24_gb_card():
    """Why a 24 GB card gets the 16 GB tier: the real FLUX.1 transformer (built on the meta device,
    no weights) holds more bf16 weights than such a card leaves for training; int8 and NF4 fit."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    from bench.gpu_flux import FULL
    from studio.families import get_family

    flux1 = get_family("flux1")
    TIER_MIN_GIB = flux1.tier_min_gib

    with init_empty_weights():
        model = FluxTransformer2DModel(**FULL)
    total = sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert 11.8e9 < total < 12.0e9 and linear / total > 0.999
    bf16 = total * 2 / 2**30
    nf4 = (linear * (0.5 + 1 / 64) + (total - linear) * 2) / 2**30  # 4 bits + one int8 scale per 64
    assert bf16 > 22 and dict(TIER_MIN_GIB)["24gb"] > bf16 + 2 > 24  # 24 GB cards: total 23.99 GiB
    assert dict(TIER_MIN_GIB)["16gb"] > linear / 2**30 + 2  # int8 weights plus headroom
    assert dict(TIER_MIN_GIB)["12gb"] > nf4 + 4
    # what `python -m studio families` prints is the architecture's count
    assert all(abs(v.parameters_b - total / 1e9) < 0.01 for v in flux1.variants.values())


# --------------------------------------------------------------------------- reading a config file


def test_a_key_given_twice_is_refused_naming_it_and_both_lines(tmp_path):
    """PyYAML keeps the last of two equal keys: rank 64 would train, or dataset.path would vanish."""
    path = tmp_path / "my.yaml"
    path.write_text("lora:\n  rank: 8\ndataset:\n  path: /data/cats\nlora:\n  rank: 64\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        TrainConfig.load(path)
    assert err.value.problems == [f"{path}: 'lora' is given twice, at line 1 and line 5; keep one "
                                  "(only one of them would be used)."]
    with pytest.raises(ConfigError, match=r"'dataset\.trigger_word' is given twice, at line 2 and line 4"):
        TrainConfig.from_yaml("dataset:\n  trigger_word: ohwx\n  path: /x\n  trigger_word: sks\n")
    # Equal keys in different sections, list items and aliases are fine.
    cfg = TrainConfig.from_yaml("lora: {rank: 8}\nsample:\n  prompts: [a, b]\n  every: 0\n"
                                "save: &s {every: 5}\nlog: {every: 2}\n")
    assert cfg.lora.rank == 8 and cfg.save.every == 5 and cfg.log.every == 2


def test_a_folder_given_as_the_config_is_named_a_folder(tmp_path):
    from studio.config import read_text

    with pytest.raises(ConfigError, match="this is a folder, not a config file; give the path of a YAML file"):
        read_text(tmp_path)


@pytest.mark.parametrize("where", ["argument", "config"])
def test_an_unknown_tier_names_the_valid_tiers(where):
    with pytest.raises(ConfigError) as err:
        if where == "argument":
            resolve({}, tier="99gb")  # python -m studio train --tier 99gb
        else:
            resolve({"memory": {"tier": "99gb"}})
    assert err.value.problems == ["memory tier '99gb' not found. Valid memory tiers: 24gb, 16gb, 12gb, 8gb, cpu "
                                  "(or auto: chosen from the detected GPU)."]


# --------------------------------------------------------------------------- warm-up


@pytest.mark.parametrize("preset", list_presets())
@pytest.mark.parametrize("steps", [1, 10, 20, 50])
def test_a_warmup_the_user_did_not_set_fits_a_short_run(preset, steps):
    """Every preset with 50 or fewer steps trains: its warm-up becomes a tenth of the run, and the
    resolved config says so beside the value."""
    families = load_preset(preset).families
    cfg = resolve({"model": {"family": families[0]}} if families else {}, preset=preset, tier="cpu",
                  overrides=[f"schedule.max_steps={steps}"])
    assert validate(cfg) == []
    preset_warmup = load_preset(preset).config["schedule"]["warmup_steps"]
    if preset_warmup >= steps:
        assert cfg.schedule.warmup_steps == steps // 10
        line = next(line for line in cfg.to_yaml().splitlines() if "warmup_steps" in line)
        assert line == (f"  warmup_steps: {steps // 10}  # fitted to {steps} steps (a tenth of the run): "
                        f"the {preset} preset's {preset_warmup} would not fit")
        assert TrainConfig.from_yaml(cfg.to_yaml()) == cfg  # the note is a comment
    else:
        assert cfg.schedule.warmup_steps == preset_warmup and not cfg.notes


def test_a_warmup_the_user_set_is_theirs_to_fix():
    for user, overrides in (({"schedule": {"warmup_steps": 50}}, ["schedule.max_steps=50"]),
                            ({}, ["schedule.max_steps=50", "schedule.warmup_steps=50"])):
        cfg = resolve(user, preset="style", tier="cpu", overrides=overrides)
        assert cfg.schedule.warmup_steps == 50 and not cfg.notes
        assert validate(cfg) == ["schedule.warmup_steps: 50 must be below schedule.max_steps (50)."]
    # Without a preset, the default warm-up (20) is fitted the same way.
    cfg = resolve({"schedule": {"max_steps": 15}}, tier="cpu")
    assert cfg.schedule.warmup_steps == 1 and "the default 20 would not fit" in cfg.notes["schedule.warmup_steps"]
