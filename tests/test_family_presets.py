"""Presets per model family: a preset's `families:` list (absent: every text-to-image family),
list_presets filtered by family, and a preset that does not suit the chosen family refused."""

from __future__ import annotations

import shutil

import pytest

from fake_family import FakeFamily, registered
from studio.__main__ import main
from studio.config import ConfigError, list_presets, load_preset, presets, resolve
from studio.events import EXIT_CONFIG, EXIT_OK
from studio.families import get_family
from studio.i18n import render_problem


class EditFamily(FakeFamily):
    name = "fakeedit"
    kind = "edit"


@pytest.fixture
def preset_dir(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    (folder / "memory").mkdir(parents=True)
    shutil.copy(presets.PRESETS_DIR / "memory" / "cpu.yaml", folder / "memory" / "cpu.yaml")
    body = "title: {t}\ndescription: d\n{f}config:\n  lora:\n    rank: 8\n"
    for name, families in (("anyone", ""), ("fakeonly", "families: [fakefam]\n"),
                           ("devonly", "families: [flux1-dev]\n"), ("edits", "families: [fakeedit]\n")):
        (folder / f"{name}.yaml").write_text(body.format(t=name, f=families))
    monkeypatch.setattr(presets, "PRESETS_DIR", folder)
    return folder


def test_presets_follow_the_family(preset_dir):
    with registered(), registered(EditFamily()):
        assert list_presets() == ["anyone", "devonly", "edits", "fakeonly"]  # no family: every preset
        assert list_presets(family="flux1") == ["anyone", "devonly"]
        assert list_presets(family="flux1-dev") == ["anyone", "devonly"]
        assert list_presets(family="flux1-schnell") == ["anyone"]
        assert list_presets(family=get_family("fakefam")) == ["anyone", "fakeonly"]
        assert list_presets(family="fakeedit") == ["edits"]  # an edit family gets only presets that name it
        assert load_preset("devonly").families == ["flux1-dev"] and load_preset("anyone").families is None


def test_a_preset_for_another_family_is_refused(preset_dir):
    with registered(), registered(EditFamily()):
        with pytest.raises(ConfigError) as err:
            resolve({"model": {"family": "fakefam"}}, preset="devonly", tier="cpu")
        (problem,) = err.value.items
        assert problem.code == "preset_wrong_family" and problem.params["valid"] == "anyone, fakeonly"
        assert "not for the fakefam model family" in problem.english()
        assert "fakefam 模型家族" in render_problem(problem, "zh-CN")
        assert resolve({"model": {"family": "fakefam"}}, preset="fakeonly", tier="cpu").lora.rank == 8


def test_a_preset_naming_an_unknown_family_is_an_error(preset_dir):
    (preset_dir / "typo.yaml").write_text("title: t\ndescription: d\nfamilies: [flux1-dev, flux-kontext]\nconfig: {}\n")
    with pytest.raises(ConfigError) as err:
        load_preset("typo")
    assert err.value.items[0].code == "preset_unknown_family" and "flux-kontext" in err.value.problems[0]


def test_the_shipped_presets_all_suit_flux1():
    """Every shipped subject preset suits FLUX.1; the edit preset only the edit family."""
    from studio.config import load_preset

    text_to_image = [name for name in list_presets() if load_preset(name).families is None]
    assert list_presets(family="flux1-dev") == list_presets(family="flux1-schnell") == text_to_image
    assert "edit" not in text_to_image and list_presets(family="flux1-kontext") == ["edit"]


def test_presets_command_filters_by_family(preset_dir, capsys):
    with registered(), registered(EditFamily()):
        assert main(["presets", "--family", "fakefam"]) == EXIT_OK
        out = capsys.readouterr().out
        assert "fakeonly" in out and "devonly" not in out and "[families: fakefam]" in out
        assert main(["presets", "--family", "fakefm"]) == EXIT_CONFIG
        assert "did you mean 'fakefam'?" in capsys.readouterr().err


def test_a_preset_is_read_once_per_version_of_its_file(preset_dir):
    first = load_preset("anyone")
    first.config["lora"]["rank"] = 99  # what a caller does with its copy stays with it
    assert load_preset("anyone").config["lora"]["rank"] == 8
    path = preset_dir / "anyone.yaml"
    path.write_text(path.read_text().replace("rank: 8", "rank: 16  # edited by hand"))
    assert load_preset("anyone").config["lora"]["rank"] == 16  # an edited file is read again
    path.write_text("title: t\ndescription: d\nconfig:\n  lora:\n    rnak: 4\n")
    with pytest.raises(ConfigError):
        load_preset("anyone")  # and checked again
