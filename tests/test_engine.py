"""The engine on the tiny offline FLUX model: the math, learning, output files, resume, caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import Events, make_images, tiny_config
from engine_checks import (assert_lora_changes_output, assert_resume_is_bitwise_exact, assert_same_delta_weights,
                           assert_step_matches, memorising_settings, one_step, quiet_pipeline, replay,
                           resume_settings, run_with_data_folder, shifted_transformer_file)
from faulty_trainer import FaultHooks
from studio.config import resolve
from studio.engine import build_state, train
from studio.events import EXIT_CONFIG, EXIT_FAILED, EXIT_OK


def run(cfg_dict, run_dir, resume=False, tier="cpu", fault=""):
    events = Events()
    code = train(resolve(cfg_dict, tier=tier), run_dir, events, resume=resume, hooks=FaultHooks(fault))
    return code, events


def lora_tensors(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


# --------------------------------------------------------------------------- the math


def test_one_step_matches_formulas(tiny_model, tmp_path, studio_data):
    """Loss and gradients of one step equal an independent computation from the formulas."""
    from diffusers import FluxPipeline

    folder = tmp_path / "square"
    folder.mkdir()
    pixels = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    (folder / "a.txt").write_text("a photo of sks")
    cfg = resolve(tiny_config(tiny_model, folder, tmp_path / "out", lora={"rank": 4, "alpha": 8}), tier="cpu")
    trainer, loss, grads, state = one_step(cfg, tmp_path / "run")

    # Independent: encode text with a fresh pipeline, then the formulas of FLUX_NOTES.
    gen = replay(state)
    pipe = FluxPipeline.from_pretrained(str(tiny_model))
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt("a photo of sks", None, max_sequence_length=256)
        x = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        mean, logvar = pipe.vae.encode(x).latent_dist.parameters.chunk(2, dim=1)
    std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
    latents = mean + std * torch.randn(mean.shape, generator=gen)
    latents = (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=gen)
    sigma = torch.sigmoid(torch.randn((1,), generator=gen) * cfg.training.logit_std)
    s = cfg.training.shift
    t = s * sigma / (1 + (s - 1) * sigma)
    noisy = (1 - t) * latents + t * noise

    def pack(z):  # 2x2 patches → tokens of 4·C features
        b, c, h, w = z.shape
        return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)

    h, w = latents.shape[2:]
    img_ids = torch.zeros(h // 2, w // 2, 3)
    img_ids[..., 1] = torch.arange(h // 2)[:, None]
    img_ids[..., 2] = torch.arange(w // 2)[None, :]
    pred = trainer.transformer(hidden_states=pack(noisy), timestep=t, guidance=None, pooled_projections=pooled,
                               encoder_hidden_states=embeds, txt_ids=torch.zeros(embeds.shape[1], 3),
                               img_ids=img_ids.reshape(-1, 3), return_dict=False)[0]
    assert_step_matches(trainer, loss, grads, ((pred - pack(noise - latents)) ** 2).mean())


# --------------------------------------------------------------------------- learning and output


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """One real training run shared by the output tests (the slowest part of the suite)."""
    root = tmp_path_factory.mktemp("trained")
    cfg = tiny_config(tiny_model, make_images(root / "ds", count=4), root / "out",
                      **memorising_settings(lr=3e-3, rank=16, max_steps=200),
                      training={"timestep_sampling": "sigmoid", "batch_size": 2},
                      sample={"every": 100, "at_start": True}, save={"every": 100})
    return run_with_data_folder(run, cfg, root)


def test_training_learns_and_writes_everything(trained):
    run_dir, code, events = trained
    assert code == EXIT_OK, events.of("error")
    losses = [e["loss"] for e in events.of("step")]
    assert len(losses) == 200
    # A random tiny model has a high loss floor; memorising four images still cuts it clearly.
    first, last = np.mean(losses[:40]), np.mean(losses[-40:])
    assert last < 0.9 * first, (first, last)
    for name in ("config.yaml", "test-lora.safetensors", "test-lora-comfyui.safetensors"):
        assert (run_dir / name).is_file(), name
    samples = events.of("sample")
    assert sorted({e["step"] for e in samples}) == [0, 100, 200]
    assert all((run_dir / e["path"]).is_file() for e in samples)
    assert Image.open(run_dir / samples[0]["path"]).text["prompt"] == "a photo of sks"
    step = events.of("step")[-1]
    assert step["it_s"] > 0 and step["eta_s"] == 0
    assert any(e["block_grad_norms"] for e in events.of("step"))
    assert events.of("checkpoint")[0]["step"] == 100


def test_lora_changes_output_and_strength_zero_is_base(trained, tiny_model):
    """The diffusers file loads with FluxPipeline.load_lora_weights and changes the output;
    at strength 0 the output equals the base model's exactly."""
    from diffusers import FluxPipeline

    run_dir = trained[0]
    pipe = quiet_pipeline(FluxPipeline, tiny_model)

    def generate():
        return pipe("a photo of sks", num_inference_steps=2, height=64, width=64,
                    generator=torch.Generator().manual_seed(7), output_type="np").images[0]

    assert_lora_changes_output(pipe, run_dir / "test-lora.safetensors", generate)


def test_comfyui_file_has_same_delta_weights(trained):
    from studio.lora_files import delta_weights, read_metadata

    run_dir = trained[0]
    assert_same_delta_weights(delta_weights(run_dir / "test-lora.safetensors"),
                              delta_weights(run_dir / "test-lora-comfyui.safetensors"))
    for name in ("test-lora.safetensors", "test-lora-comfyui.safetensors"):
        meta = read_metadata(run_dir / name)
        for key in ("base_model", "trigger_word", "rank", "alpha", "steps", "resolution", "dataset_size",
                    "dataset_hash", "config", "ss_network_dim", "ss_network_alpha", "ss_base_model_version"):
            assert meta.get(key), (name, key)
        assert meta["trigger_word"] == "sks" and meta["ss_network_dim"] == "16" and meta["steps"] == "200"
        # the tiny model is the studio's demo model (build_demo_model), and the files say so
        assert meta["dataset_size"] == "4" and meta["ss_base_model_version"] == "flux-lora-studio-demo"
        assert yaml.safe_load(meta["config"])["lora"]["rank"] == 16


# --------------------------------------------------------------------------- resume and caches


def test_resume_is_bitwise_exact(tiny_model, tmp_path, studio_data):
    cfg = tiny_config(tiny_model, make_images(tmp_path / "ds", count=3), tmp_path / "out", **resume_settings(10))
    # SIGTERM after step 4: the engine checkpoints and exits "interrupted"; resumed, it ends as a straight run.
    assert_resume_is_bitwise_exact(run, cfg, tmp_path, at=4)


def test_caches_hit_and_invalidate(tiny_model, tmp_path, studio_data):
    dataset = make_images(tmp_path / "ds", count=2)
    cfg = tiny_config(tiny_model, dataset, tmp_path / "out", schedule={"max_steps": 1})

    def stats(cfg_dict):
        code, events = run(cfg_dict, tmp_path / "run")
        assert code == EXIT_OK, events.of("error")
        return events.of("start")[0]

    first = stats(cfg)
    assert first["latent_misses"] == 2 and first["latent_hits"] == 0
    second = stats(cfg)
    assert second["latent_hits"] == 2 and second["latent_misses"] == 0
    assert second["text_misses"] == 0

    (dataset / "photo_0.txt").write_text("a new caption for sks")   # caption changed
    make_images(tmp_path / "other", count=1)
    Image.open(tmp_path / "other" / "photo_0.png").rotate(90).save(dataset / "photo_1.png")  # image changed
    third = stats(cfg)
    assert third["latent_misses"] == 1 and third["latent_hits"] == 1
    assert third["text_misses"] == 1

    fourth = stats(tiny_config(tiny_model, dataset, tmp_path / "out", schedule={"max_steps": 1},
                               dataset={"resolution": 96}))  # resolution changed
    assert fourth["latent_misses"] == 2


def test_model_change_invalidates_cache(tiny_model, tmp_path, studio_data):
    import shutil
    from studio.models import build_demo_model

    dataset = make_images(tmp_path / "ds", count=1)
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    cfg = tiny_config(model, dataset, tmp_path / "out", schedule={"max_steps": 1})
    run(cfg, tmp_path / "run")
    build_demo_model(model, size="tiny", seed=5)  # same path, different weights
    _, events = run(cfg, tmp_path / "run")
    start = events.of("start")[0]
    assert start["latent_misses"] == 1 and start["text_misses"] >= 1


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("log_every", [1, 4])
def test_nan_loss_stops_without_nan_checkpoint(tiny_model, tmp_path, studio_data, log_every):
    """fp32 on a CPU does not overflow, so NaN is injected into the loss from step 3 on; with
    sparse logging the checkpoint guard must catch it before the loss check does."""
    from studio.training_utils import list_checkpoints, read_checkpoint

    dataset = make_images(tmp_path / "ds", count=2)
    cfg = tiny_config(tiny_model, dataset, tmp_path / "out", schedule={"max_steps": 40, "scheduler": "constant"},
                      save={"every": 1, "keep_last": 50}, log={"every": log_every})
    code, events = run(cfg, tmp_path / "run", fault="nan@3")
    assert code == EXIT_FAILED
    error = events.of("error")[0]
    assert error["code"] == "NAN_LOSS" and "learning rate" in error["advice"]
    assert len(events.of("step")) <= 3
    saved = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in saved] == ["step000001", "step000002", "step000003"][:len(saved)] and saved
    for path in saved:
        lora, _ = read_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in lora.values()), path


def test_compiled_blocks_train_like_eager(tiny_model, tmp_path, studio_data, monkeypatch):
    """memory.compile: diffusers' compile_repeated_blocks (torch.compile of each transformer block)
    gives the eager run's losses and a valid LoRA (inductor's CPU backend here, about a minute)."""
    from studio.lora_files import validate_lora_file

    dataset = make_images(tmp_path / "ds", count=2)
    compiled_blocks = []
    from studio.train import loop
    original = loop.build_state

    def spy(*args, **kwargs):
        state = original(*args, **kwargs)
        compiled_blocks.extend(b for b in state.transformer.transformer_blocks if b._compiled_call_impl is not None)
        return state

    monkeypatch.setattr(loop, "build_state", spy)
    losses = {}
    for compile_ in (False, True):
        cfg = tiny_config(tiny_model, dataset, tmp_path / f"out-{compile_}", memory={"compile": compile_},
                          schedule={"max_steps": 2, "warmup_steps": 0}, log={"every": 1})
        code, events = run(cfg, tmp_path / f"run-{compile_}")
        assert code == EXIT_OK, events.of("error")
        losses[compile_] = [e["loss"] for e in events.of("step")]
        validate_lora_file(events.of("done")[-1]["files"][0])
    assert len(compiled_blocks) == 2  # the tiny model's two double blocks, compiled in the second run only
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)


def test_model_dependent_validation(tiny_model, tmp_path, studio_data):
    dataset = make_images(tmp_path / "ds", count=1)
    code, events = run(tiny_config(tiny_model, dataset, tmp_path / "o", lora={"rank": 500, "alpha": 1}), tmp_path / "r1")
    assert code == EXIT_FAILED and events.of("error")[0]["code"] == "RANK_TOO_LARGE"
    code, events = run(tiny_config(tiny_model, dataset, tmp_path / "o", training={"guidance": 3.5}), tmp_path / "r2")
    assert code == EXIT_FAILED and events.of("error")[0]["code"] == "GUIDANCE_UNSUPPORTED"
    code, events = run(tiny_config(tiny_model, dataset, tmp_path / "o", lora={"single_blocks": [7]}), tmp_path / "r3")
    assert code == EXIT_FAILED and events.of("error")[0]["code"] == "BLOCK_OUT_OF_RANGE"
    singles = json.loads((tiny_model / "transformer" / "config.json").read_text())["num_single_layers"]
    assert f"this model has {singles} single blocks" in events.of("error")[0]["message"]  # the model's own count
    code, events = run(tiny_config(tiny_model, tmp_path / "missing", tmp_path / "o"), tmp_path / "r4")
    assert code == EXIT_FAILED and events.of("error")[0]["code"] == "NO_IMAGES"


def test_dev_model_trains_with_guidance_and_block_selection(tiny_dev_model, tmp_path, studio_data):
    dataset = make_images(tmp_path / "ds", count=2)
    cfg = tiny_config(tiny_dev_model, dataset, tmp_path / "out", training={"guidance": 1.0},
                      lora={"targets": "all_linear", "double_blocks": [1], "single_blocks": [0]})
    code, events = run(cfg, tmp_path / "run")
    assert code == EXIT_OK, events.of("error")
    keys = lora_tensors(tmp_path / "run" / "test-lora.safetensors").keys()
    assert any(".transformer_blocks.1." in k for k in keys)
    assert not any(".transformer_blocks.0." in k for k in keys)
    assert any(".single_transformer_blocks.0.proj_mlp" in k for k in keys)
    assert not any(".single_transformer_blocks.1." in k for k in keys)


def test_cancel_flag_checkpoints_and_stops(tiny_model, tmp_path, studio_data):
    dataset = make_images(tmp_path / "ds", count=2)
    control = tmp_path / "run" / "control"
    control.mkdir(parents=True)
    (control / "cancel").touch()
    code, events = run(tiny_config(tiny_model, dataset, tmp_path / "out"), tmp_path / "run")
    assert code == 3 and events.of("done")[0]["status"] == "cancelled"
    assert events.of("checkpoint")[0]["step"] == 1 and not (control / "cancel").exists()


def test_cli_exit_codes(tiny_model, tmp_path, studio_data):
    import subprocess
    import sys
    import yaml

    dataset = make_images(tmp_path / "ds", count=1)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_config(tiny_model, dataset, tmp_path / "out", schedule={"max_steps": 2})))
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora:\n  rnak: 4\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    cmd = [sys.executable, "-m", "studio", "train"]
    out = subprocess.run(cmd + [str(bad)], capture_output=True, text=True, env=env)
    assert out.returncode == EXIT_CONFIG and "Did you mean 'rank'" in out.stderr
    out = subprocess.run(cmd + [str(good), "--set", "dataset.resolution=70"], capture_output=True, text=True, env=env)
    assert out.returncode == EXIT_CONFIG and "multiple of 16" in out.stderr
    out = subprocess.run(cmd + [str(good), "--tier", "cpu"], capture_output=True, text=True, env=env)
    assert out.returncode == EXIT_OK, out.stderr[-2000:]
    run_dir = tmp_path / "out" / "test-lora"
    assert (run_dir / "test-lora-comfyui.safetensors").is_file()
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # Set-up warnings (here the dataset check's advice on the made-up images) come before `start`.
    first = next(e for e in events if e["type"] != "warning")
    assert first["type"] == "start" and events[-1] == {**events[-1], "type": "done", "status": "succeeded"}
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2]


def test_single_file_transformer_replaces_the_folders(tiny_model, tmp_path, studio_data):
    """model.transformer_file: a single .safetensors transformer, the rest from the folder."""
    from diffusers import FluxTransformer2DModel

    single = tmp_path / "flux-finetune.safetensors"
    other = shifted_transformer_file(FluxTransformer2DModel, tiny_model, single)
    dataset = make_images(tmp_path / "ds", count=1)
    cfg = resolve(tiny_config(tiny_model, dataset, tmp_path / "out", model={"transformer_file": str(single)}), tier="cpu")
    trainer = build_state(cfg, tmp_path / "run", Events())
    loaded = trainer.transformer.x_embedder.base_layer.weight if hasattr(trainer.transformer.x_embedder, "base_layer") \
        else trainer.transformer.x_embedder.weight
    assert torch.equal(loaded, other.x_embedder.weight)
    missing = resolve(tiny_config(tiny_model, dataset, tmp_path / "out", model={"transformer_file": str(tmp_path / "nope.safetensors")}), tier="cpu")
    code, events = run(missing.to_dict(), tmp_path / "run2")
    assert code == EXIT_FAILED and events.of("error")[0]["code"] == "MODEL_MISSING"
    assert "nope.safetensors" in events.of("error")[0]["message"]


def try_it_child(out: Path, **request) -> None:
    import subprocess
    import sys

    out.mkdir()
    (out / "request.json").write_text(json.dumps({"out": str(out), **request}))
    done = subprocess.run([sys.executable, "-m", "studio.jobs.tryit", str(out / "request.json")],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "status.json").read_text())["state"] == "done"


@pytest.mark.parametrize("strength", [1.0, 0.0])
def test_try_it_child_draws_with_and_without_the_lora(trained, tiny_model, tmp_path, strength):
    """The try-it job's child process: same prompt and seed, with and without the LoRA."""
    out = tmp_path / "tryit"
    try_it_child(out, base=str(tiny_model), lora=str(trained[0] / "test-lora.safetensors"), prompt="a photo of sks",
                 steps=2, width=64, height=64, seed=3, strength=strength, guidance=3.5)
    with_lora = np.asarray(Image.open(out / "with.png"), dtype=np.int16)
    without = np.asarray(Image.open(out / "without.png"), dtype=np.int16)
    if strength:
        assert np.abs(with_lora - without).mean() > 0.5
    else:
        np.testing.assert_array_equal(with_lora, without)


def test_try_it_child_guides_against_the_empty_prompt_when_the_run_did(trained, tiny_model, tmp_path):
    """sample.true_cfg reaches try-it: the same prompt and seed draw differently with it."""
    request = dict(base=str(tiny_model), lora=str(trained[0] / "test-lora.safetensors"), prompt="a photo of sks",
                   steps=2, width=64, height=64, seed=3, strength=1.0, guidance=3.5)
    try_it_child(tmp_path / "plain", **request)
    try_it_child(tmp_path / "guided", **request, true_cfg=3.0)
    for name in ("without.png", "with.png"):
        plain = np.asarray(Image.open(tmp_path / "plain" / name), dtype=np.int16)
        guided = np.asarray(Image.open(tmp_path / "guided" / name), dtype=np.int16)
        assert np.abs(plain - guided).mean() > 0.5, name
