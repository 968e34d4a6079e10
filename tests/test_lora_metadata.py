"""What the engine's LoRA files say and do: names but no local paths, the model really trained,
and the trained ΔW in every loader (alpha/rank folded into the diffusers file's weights)."""

from __future__ import annotations

import getpass
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import Events, make_images, tiny_config
from studio.config import resolve
from studio.engine import TrainState, build_state, run
from studio.train import checkpoint
from studio.lora_files import delta_weights, read_metadata
from studio.sharing import DEMO_NAME, dataset_name, model_name, shareable_config

# An absolute path: POSIX (/x/y, not the // of a URL), home-relative (~/x) or Windows (C:\x, C:/x).
ABSOLUTE_PATH = re.compile(r"(?:^|[\s\"'(=,\[:])(?:/(?!/)[^\s\"',]+|~/|[A-Za-z]:[\\/])")


def train_run(cfg: dict, run_dir: Path) -> TrainState:
    state = build_state(resolve(cfg, tier="cpu"), run_dir, Events())
    run(state)
    return state


def peft_deltas(model) -> dict[str, torch.Tensor]:
    return {name: layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
            for name, layer in model.named_modules() if hasattr(layer, "lora_A") and "default" in layer.lora_A}


def assert_same_deltas(got, expected):
    assert sorted(got) == sorted(expected) and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name].detach().float(), atol=1e-6, rtol=1e-5, msg=name)


@pytest.fixture(scope="module")
def local_run(tiny_model, tmp_path_factory):
    """A run on a local (non-demo) model folder and a studio-style dataset, deep in a 'home'."""
    home = tmp_path_factory.mktemp("home") / "alice-example"
    model = home / "models" / "my-flux-schnell"
    shutil.copytree(tiny_model, model)
    (model / "README.md").unlink()   # a folder of the user's own, not the demo model
    dataset = make_images(home / "studio_data" / "datasets" / "portraits" / "images", count=3)
    cfg = tiny_config(model, dataset, home / "runs", lora={"rank": 8, "alpha": 4},
                      schedule={"max_steps": 4, "warmup_steps": 0}, sample={"prompts": []},
                      optimizer={"lr": 5e-3})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STUDIO_DATA", str(home / "studio_data"))
        yield home, train_run(cfg, home / "runs" / "test-lora")


def test_metadata_names_the_model_and_dataset_but_no_local_path(local_run):
    home, trainer = local_run
    run_dir = trainer.run_dir
    secrets = [str(home), str(home.parent), "alice-example"]
    if str(Path.home()) not in ("/", ""):
        secrets.append(str(Path.home()))
    user = getpass.getuser()
    for name in ("test-lora.safetensors", "test-lora-comfyui.safetensors"):
        meta = read_metadata(run_dir / name)
        assert meta["base_model"] == "my-flux-schnell" and meta["dataset"] == "portraits"
        assert meta["ss_base_model_version"] == "flux1-schnell" and meta["modelspec.license"] == "apache-2.0"
        config = yaml.safe_load(meta["config"])
        assert config["model"]["base"] == "my-flux-schnell" and config["dataset"]["path"] == "portraits"
        assert "output_dir" not in config["save"] and config["lora"]["rank"] == 8
        for key, value in meta.items():
            for secret in secrets:
                assert secret not in value, (name, key, secret)
            assert not ABSOLUTE_PATH.search(value), (name, key, value[:200])
            if len(user) >= 3:
                assert not re.search(rf"\b{re.escape(user)}\b", value), (name, key, user)


def test_lora_files_give_the_trained_delta_in_every_loader_and_checkpoints_stay_peft(local_run, tiny_model):
    """rank 8 / alpha 4: the diffusers file's up·down (how ComfyUI and Forge apply it), its ΔW
    read by diffusers, the ComfyUI file and the live adapter agree; a checkpoint keeps peft's own
    (unscaled) weights, and a resume from it rebuilds the same adapter."""
    from diffusers import FluxPipeline

    home, trainer = local_run
    run_dir = trainer.run_dir
    expected = peft_deltas(trainer.transformer)
    tensors = load_file(run_dir / "test-lora.safetensors")
    raw = {k.removeprefix("transformer.").removesuffix(".lora_A.weight"): tensors[k.replace("lora_A", "lora_B")] @ v
           for k, v in tensors.items() if k.endswith(".lora_A.weight")}
    assert_same_deltas(raw, expected)
    assert_same_deltas(delta_weights(run_dir / "test-lora.safetensors"), expected)
    assert_same_deltas(delta_weights(run_dir / "test-lora-comfyui.safetensors"), expected)

    pipe = FluxPipeline.from_pretrained(str(home / "models" / "my-flux-schnell"))
    pipe.load_lora_weights(str(run_dir / "test-lora.safetensors"), adapter_name="default")
    assert_same_deltas(peft_deltas(pipe.transformer), expected)

    checkpoint.save(trainer)
    from studio.training_utils import latest_checkpoint
    _, lora, _ = latest_checkpoint(run_dir / "checkpoints")
    assert lora.keys() == checkpoint.lora_state(trainer).keys()
    assert all(torch.equal(lora[k], v) for k, v in checkpoint.lora_state(trainer).items())   # peft state, not folded
    resumed = build_state(trainer.cfg, run_dir, Events(), resume=True)
    checkpoint.load(resumed)
    assert resumed.step == 4
    assert_same_deltas(peft_deltas(resumed.transformer), expected)


def test_demo_run_names_the_demo_model_and_its_licence(tmp_path, studio_data):
    dataset = make_images(tmp_path / "ds", count=2)
    cfg = tiny_config("demo", dataset, tmp_path / "out", schedule={"max_steps": 1, "warmup_steps": 0},
                      sample={"prompts": []})
    trainer = train_run(cfg, tmp_path / "run")
    for name in ("test-lora.safetensors", "test-lora-comfyui.safetensors"):
        meta = read_metadata(trainer.run_dir / name)
        assert meta["base_model"] == DEMO_NAME and meta["base_family"] == "demo"
        assert meta["ss_base_model_version"] == DEMO_NAME
        assert meta["modelspec.architecture"] == f"{DEMO_NAME}/lora"
        assert meta["modelspec.license"] == "apache-2.0" and "demo model" in meta["licence"]
        assert "schnell" not in json.dumps({k: v for k, v in meta.items() if k != "config"}).lower()
        assert yaml.safe_load(meta["config"])["model"]["base"] == "demo"


@pytest.mark.parametrize("value, expected", [
    ("black-forest-labs/FLUX.1-dev", "black-forest-labs/FLUX.1-dev"),
    ("/home/alice/models/FLUX.1-dev", "FLUX.1-dev"),
    ("/home/alice/models/FLUX.1-dev/", "FLUX.1-dev"),
    ("C:\\Users\\alice\\flux", "flux"),
    ("./models/flux", "flux"),
    ("demo", DEMO_NAME),
])
def test_model_name(value, expected):
    assert model_name(value) == expected


def test_shareable_config_keeps_names_only():
    config = {"model": {"base": "/home/alice/m/flux", "transformer_file": "/home/alice/t.safetensors"},
              "dataset": {"path": "/home/alice/data/datasets/cats/images", "trigger_word": "sks"},
              "save": {"output_dir": "/home/alice/out", "run_name": "cats"}}
    out = shareable_config(config)
    assert out == {"model": {"base": "flux", "transformer_file": "t.safetensors"},
                   "dataset": {"path": "cats", "trigger_word": "sks"}, "save": {"run_name": "cats"}}
    assert config["save"]["output_dir"] == "/home/alice/out"   # the original is untouched
    assert dataset_name("/photos/holiday") == "holiday"
