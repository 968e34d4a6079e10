"""The Train tab starts with the model: family and variant choices (description, licence in plain
words, fit and tier on the detected GPU) from the registry, the base models and presets that
follow them, and the `model.family` the form writes. English and Chinese."""

from __future__ import annotations

import pytest
from ui_forms import _train_fields, data, filled  # noqa: F401  (fixtures)

from fake_family import FakeFamily, registered
from studio.ui import handlers as h
from studio.ui.handlers import model_choice as mc

RTX_4090 = ("NVIDIA GeForce RTX 4090", 23.99)
DEV_ID = "black-forest-labs/FLUX.1-dev"
SHOWN = ["flux1", "schnell", "portrait", "cpu", "demo"]  # the model, preset, tier and base a fresh tab shows


class FakeEdit(FakeFamily):
    name = "fakeedit"
    kind = "edit"


def test_family_and_variant_choices_say_what_each_is_and_whether_it_fits():
    assert ("FLUX.1 [dev] / FLUX.1 [schnell]", "flux1") in mc.family_choices()
    klein = dict((v, label) for label, v in mc.family_choices())["flux2-klein"]  # takes reference images
    assert klein.endswith(" · text to image, or edit LoRAs when the dataset has before/after pairs")
    assert "数据集有前后对照图时训练编辑 LoRA" in dict((v, label) for label, v in mc.family_choices(lang="zh-CN"))["flux2-dev"]
    labels = dict((v, label) for label, v in mc.variant_choices("flux1", RTX_4090))
    assert labels["dev"] == ("FLUX.1 [dev] — guidance-distilled, 28 steps, non-commercial licence · "
                             "Fits this GPU (23.99 GiB) in the 16gb memory tier.")
    assert "No NVIDIA GPU detected" in dict((v, label) for label, v in mc.variant_choices("flux1", None))["schnell"]
    zh = dict((v, label) for label, v in mc.variant_choices("flux1", RTX_4090, "zh-CN"))
    assert "引导蒸馏" in zh["dev"] and "适合此显卡（23.99 GiB），使用 16gb 显存档位" in zh["dev"]


def test_a_registered_family_is_offered_with_its_own_fit():
    with registered(), registered(FakeEdit()):
        names = [name for _, name in mc.family_choices(RTX_4090)]
        assert names[0] == "flux1" and {"fakefam", "fakeedit"} <= set(names)
        assert ("Fake [small] / Fake [large] · edit LoRAs from before/after pairs", "fakeedit") in mc.family_choices()
        labels = dict((v, label) for label, v in mc.variant_choices("fakefam", ("T4", 15.0)))
        assert labels["small"].endswith("Fits this GPU (15 GiB) in the 16gb memory tier.")
        assert labels["large"].endswith("Too large for this GPU (15 GiB): needs at least 22 GiB.")
        text = mc.model_markdown("fakefam", "large", ("T4", 15.0))
        assert "Fake Non-Commercial" in text and "`fakefam-large`" in text
        assert mc.suggested_base("fakefam", "large", ("T4", 15.0)) == "fake-labs/fake-large"  # no demo of it
        assert mc.suggested_base("fakefam", "small", ("T4", 15.0)) == "fake-labs/fake-small"


def test_the_licence_is_in_plain_words_in_both_languages():
    text = mc.model_markdown("flux1", "dev", None, "zh-CN")
    assert "非商业许可" in text and "**许可：**" in text and "未检测到 NVIDIA 显卡" in text
    assert "Apache-2.0: LoRAs trained on FLUX.1 [schnell] may be used commercially." in mc.model_markdown(
        "flux1", "schnell")


def test_the_demo_model_stays_the_default_without_a_gpu():
    assert mc.default_model() == ("flux1", "schnell")  # the demo model's own family and variant
    assert mc.base_choices("flux1", "schnell")[:2] == ["demo", "black-forest-labs/FLUX.1-schnell"]
    assert mc.base_choices("flux1", "dev")[0] == DEV_ID  # the demo model is schnell-shaped
    assert mc.suggested_base("flux1", "schnell", None) == "demo"
    assert mc.suggested_tier("flux1", "schnell", "demo", None) == "cpu"
    assert mc.suggested_base("flux1", "dev", RTX_4090) == DEV_ID
    assert mc.suggested_tier("flux1", "dev", DEV_ID, RTX_4090) == "16gb"


@pytest.mark.parametrize("family, variant, base, custom, expected", [
    ("flux1", "schnell", "demo", "", "auto"),
    ("flux1", "dev", DEV_ID, "", "flux1-dev"),
    ("flux1", "dev", DEV_ID, "/models/my-flux", "flux1"),  # a typed-in model: the run checks its family
])
def test_the_form_writes_model_family(filled, family, variant, base, custom, expected):
    fields = _train_fields(family=family, variant=variant, base=base, custom_base=custom)
    assert h.form_model(fields["form"])["family"] == expected
    if not custom:
        cfg = h.build_config(filled, **fields)
        assert cfg.model.family == expected and cfg.model.base == base
        back = h.fields_from_config(cfg)
        assert (back["family"], back["variant"], back["base"], back["custom_base"]) == (family, variant, base, "")


def test_an_imported_custom_model_keeps_its_family(filled, tiny_dev_model):
    fields = _train_fields(family="flux1", variant="dev", base=DEV_ID, custom_base=str(tiny_dev_model))
    cfg = h.build_config(filled, **fields)
    back = h.fields_from_config(cfg)
    assert (back["family"], back["variant"], back["custom_base"]) == ("flux1", "dev", str(tiny_dev_model))
    assert back["base"] == DEV_ID  # the list shows the variant's published model; the typed one overrides it
    assert "Non-Commercial" in h.licence_text(str(tiny_dev_model))


def test_the_proposed_config_follows_the_family():
    with registered():
        values, text = h.preset_values("portrait", "cpu", "fake-labs/fake-small", "fakefam-small")
        assert values["optimizer.lr"] == 0.0002 and values["dataset.resolution"] == 768
        assert "family: fakefam-small" in text
    values, _ = h.preset_values("portrait", "cpu", DEV_ID, "flux1-dev")
    assert values["optimizer.lr"] == 0.0004 and values["dataset.resolution"] == 512  # FLUX.1: the preset's own


def test_licences_of_published_names_come_from_the_registry():
    assert "Apache-2.0" in h.licence_text("someone/FLUX.1-schnell-finetune")
    assert "非商业" in h.licence_text(DEV_ID, "zh-CN")
    assert "Licence unknown" in h.licence_text("someone/sdxl-base")
    with registered():
        assert "Fake Non-Commercial" in h.licence_text("fake-labs/fake-large")


def test_choosing_a_family_updates_the_tab(tmp_path):
    """The tab's own handler: variants, base models, presets, tier and the proposal follow the family."""
    from studio.ui.build import build_ui

    with registered():
        demo = build_ui(tmp_path)
        on_model = next(f.fn for f in demo.fns.values() if f.name == "on_model")
        out = on_model("fakefam", "", "portrait", SHOWN, "en")
        assert out[0]["value"] == "small" and [v for _, v in out[0]["choices"]] == ["small", "large"]
        assert "Fake [small]" in out[1]
        assert out[2]["value"] == "fake-labs/fake-small"  # no GPU, and no demo model of this family
        assert "demo" not in [v for _, v in out[2]["choices"]]  # the demo model is FLUX.1's
        assert out[5] == "cpu"  # no GPU here
        assert "Apache-2.0" in out[6]
        assert out[-1] == ["fakefam", "small", "portrait", "cpu", "fake-labs/fake-small"]  # what is now shown
        flux = on_model("flux1", "schnell", "portrait", out[-1], "zh-CN")
        assert flux[2]["value"] == "demo" and "时间步蒸馏" in flux[1]


def test_a_dropdown_left_without_a_new_choice_keeps_the_typed_settings(tmp_path):
    """Gradio sends a dropdown's "input" event whenever it loses focus (a click elsewhere, a Tab
    through the form): the model, preset, tier or base model it shows is then the one the settings
    were proposed for, and the settings typed since stay. A new choice proposes anew."""
    from studio.ui.build import build_ui

    demo = build_ui(tmp_path)
    on_model = next(f for f in demo.fns.values() if f.name == "on_model")
    on_preset = next(f for f in demo.fns.values() if f.name == "on_preset")
    kept = on_model.fn("flux1", "schnell", "portrait", SHOWN, "en")
    assert len(kept) == len(on_model.outputs) and all(v == {"__type__": "update"} for v in kept)
    kept = on_preset.fn("portrait", "cpu", "flux1", "schnell", "demo", "", SHOWN, "en")
    assert len(kept) == len(on_preset.outputs) and all(v == {"__type__": "update"} for v in kept)
    out = on_preset.fn("portrait", "cpu", "flux1", "schnell", DEV_ID, "", SHOWN, "en")
    proposed = dict(zip([getattr(o, "elem_id", None) for o in on_preset.outputs], out))
    assert proposed["train-steps"] == h.preset_values("portrait", "cpu", DEV_ID)[0]["schedule.max_steps"]
    assert out[-1] == ["flux1", "schnell", "portrait", "cpu", DEV_ID]  # the new basis


def test_a_typed_model_folder_brings_its_family(tmp_path):
    """A local model folder typed as the model: the tab switches to its family and variant (read from
    its config files), with that family's presets and proposal, and keeps the folder; a folder of
    the family shown, or anything that is not a model folder, only updates the licence."""
    from studio.families import get_family
    from studio.ui.build import build_ui

    folder = str(get_family("flux1-kontext").build_tiny(tmp_path / "my kontext"))
    assert mc.detected(folder) == ("flux1-kontext", "dev")
    assert mc.detected("black-forest-labs/FLUX.1-Kontext-dev") is None and mc.detected(str(tmp_path)) is None
    demo = build_ui(tmp_path / "data")
    on_custom = next(f for f in demo.fns.values() if f.name == "on_custom")
    ids = [getattr(o, "elem_id", None) for o in on_custom.outputs]
    out = on_custom.fn(folder + " ", "demo", "portrait", SHOWN, "en")
    answer = dict(zip(ids, out))
    assert answer["train-family"] == "flux1-kontext" and answer["train-variant"]["value"] == "dev"
    assert answer["train-preset"]["value"] == "edit" and answer["train-model-custom"] == folder
    assert "Non-Commercial" in answer["train-licence"]
    edit_steps = h.preset_values("edit", "cpu", folder, "flux1-kontext")[0]["schedule.max_steps"]
    assert answer["train-steps"] == edit_steps and out[-1][:3] == ["flux1-kontext", "dev", "edit"]
    again = dict(zip(ids, on_custom.fn(folder, answer["train-model"]["value"], "edit", out[-1], "en")))
    assert "Non-Commercial" in again["train-licence"]
    assert all(v == {"__type__": "update"} for k, v in again.items() if k != "train-licence")
    elsewhere = dict(zip(ids, on_custom.fn("someone/FLUX.1-schnell-v2", "demo", "portrait", SHOWN, "en")))
    assert "Apache-2.0" in elsewhere["train-licence"] and elsewhere["train-family"] == {"__type__": "update"}
