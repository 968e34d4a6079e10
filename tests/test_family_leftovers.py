"""FLUX.1 facts that lived outside studio/families now come from the registry: the text-token
limit of `dataset check --model` and of the Captions tab, the report card's LoRA writer."""

from __future__ import annotations

import pytest
from PIL import Image

from fake_family import FakeFamily, registered
from studio.__main__ import main
from studio.config import TrainConfig
from studio.families import choice
from studio.report_card import checkpoint_lora, run_family


def test_token_limits_come_from_the_family():
    assert choice.token_limit("flux1-dev") == 512 and choice.token_limit("flux1-schnell") == 256
    assert choice.token_limit("dev") == 512 and choice.token_limit("schnell") == 256  # the old --model values
    assert choice.token_limit("flux1") == 256  # a whole family: its strictest
    assert choice.token_limit("nope") is None
    assert choice.shortest_token_limit() == (256, "FLUX.1 [schnell]")
    with registered():  # a family that reads fewer tokens sets the Captions tab's limit
        assert choice.token_limit("fakefam-large") == 128
        assert choice.shortest_token_limit()[0] == 128


@pytest.mark.parametrize("model, limit", [("flux1-schnell", 256), ("dev", 512), ("schnell", 256)])
def test_dataset_check_reads_the_limit_of_the_named_model(tmp_path, capsys, model, limit):
    folder = tmp_path / "ds"
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 100, 50)).save(folder / "a.png")
    (folder / "a.txt").write_text("a photo of sks")
    main(["dataset", "check", str(folder), "--model", model, "--json"])
    assert f'"t5_max_tokens": {limit}' in capsys.readouterr().out


def test_dataset_check_names_the_models_it_knows(tmp_path, capsys):
    (tmp_path / "ds").mkdir()
    assert main(["dataset", "check", str(tmp_path / "ds"), "--model", "sdxl"]) != 0
    assert "flux1-schnell" in capsys.readouterr().err


def test_the_report_card_writes_with_the_runs_family(tmp_path, monkeypatch):
    calls = []

    class Writer(FakeFamily):
        def write_lora(self, out_dir, name, transformer_layers, rank, alpha, metadata, **kwargs):
            calls.append((name, sorted(transformer_layers), rank, kwargs["save_comfyui"]))
            return {}

    import torch

    from studio import training_utils

    # the report card reads checkpoints through studio.training_utils
    monkeypatch.setattr(training_utils, "read_checkpoint",
                        lambda path: ({"transformer.blocks.0.lora_A.weight": torch.zeros(2, 2)}, {}))
    run = tmp_path / "run"
    run.mkdir()
    TrainConfig.from_dict({"model": {"base": "fake-labs/fake-small", "family": "fakefam"},
                           "lora": {"rank": 4}}).write(run / "config.yaml")
    with registered(Writer()):
        assert run_family(TrainConfig.from_yaml((run / "config.yaml").read_text())).name == "fakefam"
        checkpoint_lora(run, run / "checkpoints" / "step000010", tmp_path / "out", "n")
    assert calls == [("n", ["blocks.0.lora_A.weight"], 4, False)]
    assert run_family(TrainConfig()).name == "flux1"  # the demo model
