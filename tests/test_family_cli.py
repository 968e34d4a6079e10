"""`python -m studio families` and `tiny-model --family`: both read the registry, so a family
registered later is listed and built without a change to the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fake_family import FakeFamily, registered
from studio.__main__ import main
from studio.events import EXIT_CONFIG, EXIT_OK
from studio.families import inspect_model


def test_families_lists_variants_sizes_licences_memory_and_tiers(capsys):
    assert main(["families"]) == EXIT_OK
    out = capsys.readouterr().out
    for text in ("flux1-dev", "flux1-schnell", "FLUX.1 [dev] Non-Commercial License", "Apache-2.0",
                 "11.9 B parameters", "bf16 22.2 GiB, int8 11.1 GiB, nf4 5.7 GiB",
                 "24gb from 26 GiB, 16gb from 15 GiB, 12gb from 11 GiB, 8gb (block offload) below",
                 "black-forest-labs/FLUX.1-schnell"):
        assert text in out, text
    assert "fakefam" not in out


def test_a_registered_family_is_listed_with_its_own_figures(capsys):
    with registered():
        assert main(["families"]) == EXIT_OK
        out = capsys.readouterr().out
        assert main(["families", "--json"]) == EXIT_OK
        listed = json.loads(capsys.readouterr().out)
    assert "fakefam-large" in out and "9 B parameters" in out and "Fake Non-Commercial" in out
    assert "16gb from 22 GiB, 8gb (block offload) from 22 GiB" in out  # the large variant's own table
    assert "settings this family changes" in out and '"lr": 0.0002' in out
    names = [f["name"] for f in listed]
    assert names[0] == "flux1" and names[-1] == "fakefam" and {"flux2-klein", "flux1-kontext"} <= set(names)
    large = listed[-1]["variants"]["large"]
    assert large["weight_gib"] == {"bf16": 16.88, "int8": 8.55} and large["licence_id"] == "fake-nc"
    assert listed[0]["variants"]["dev"]["token_limit"] == 512 and listed[0]["kind"] == "text-to-image"


@pytest.mark.parametrize("args, variant", [(["--family", "flux1-dev"], "dev"), (["--dev"], "dev"),
                                           (["--family", "flux1", "--variant", "dev"], "dev"), ([], "schnell")])
def test_tiny_model_builds_the_named_family_and_variant(tmp_path, capsys, args, variant):
    assert main(["tiny-model", str(tmp_path / "m"), *args]) == EXIT_OK
    info = inspect_model(str(tmp_path / "m"))
    assert (info.family_name, info.family) == ("flux1", variant)
    assert f"FLUX.1 [{variant}]-shaped model (flux1)" in capsys.readouterr().out


def test_tiny_model_asks_a_registered_family(tmp_path, capsys):
    calls = []

    class Buildable(FakeFamily):
        def build_tiny(self, out_dir, size="tiny", variant="", seed=0):
            calls.append((Path(out_dir), size, variant))
            Path(out_dir).mkdir(parents=True)
            return Path(out_dir)

    with registered(Buildable()):
        assert main(["tiny-model", str(tmp_path / "a"), "--family", "fakefam", "--size", "small"]) == EXIT_OK
        assert main(["tiny-model", str(tmp_path / "b"), "--family", "fakefam-large"]) == EXIT_OK
    assert calls == [(tmp_path / "a", "small", ""), (tmp_path / "b", "tiny", "large")]
    assert "tiny fakefam-shaped model (fakefam)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--family", "flux1-shnell"], "did you mean 'flux1-schnell'?"),
    (["--family", "flux1", "--variant", "pro"], "flux1 has the variants dev, schnell"),
    (["--family", "flux1-schnell", "--dev"], "--dev asks for FLUX.1 [dev]"),
])
def test_tiny_model_refuses_what_it_cannot_build(tmp_path, capsys, args, message):
    assert main(["tiny-model", str(tmp_path / "m"), *args]) == EXIT_CONFIG
    assert message in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_dev_is_flux1s_flag(tmp_path, capsys):
    with registered():
        assert main(["tiny-model", str(tmp_path / "m"), "--family", "fakefam", "--dev"]) == EXIT_CONFIG
    assert "--variant" in capsys.readouterr().err
