"""FLUX.2 [dev] on its tiny offline model: detection, the step against the FLUX.2 objective (with the
guidance embedding) built from Flux2Pipeline's own helpers, learning, resume, both LoRA files, a
worker job."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from engine_checks import (CAPTIONS, assert_lora_changes_output, assert_resume_is_bitwise_exact, assert_step_matches,
                           memorising_run, one_step, pixels, replay, resume_settings, run, squares, worker_job)
from flux2_helpers import cases, learning_config, noised, pipeline, velocity_error
from studio.config import deep_merge, resolve
from studio.families.base import get_family, inspect_model

pytestmark = pytest.mark.engine
DEV = get_family("flux2-dev")


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Path:
    return DEV.build_tiny(tmp_path_factory.mktemp("flux2-dev") / "tiny")


def test_detected_and_told_apart_from_klein(dev):
    info = inspect_model(str(dev))
    assert (info.family_name, info.variant, info.guidance_embeds) == ("flux2-dev", "dev", True)
    assert info.licence.startswith("FLUX [dev] Non-Commercial License")
    index = json.loads((dev / "model_index.json").read_text())
    transformer = json.loads((dev / "transformer/config.json").read_text())
    assert get_family("flux2-klein").detect(index, transformer) is None
    assert get_family("flux1").detect(index, transformer) is None
    full = {**DEV.full_config("dev"), "_class_name": "Flux2Transformer2DModel"}
    assert DEV.detect({}, full) == "dev" and get_family("flux2-klein").detect({}, full) is None
    assert DEV.weight_gib["bf16"] > 60 and {"attention", "diffusers_default", "all_linear"} <= set(DEV.target_sets)


def test_step_equals_the_flux2_objective_with_guidance(dev, tmp_path):
    folder = squares(tmp_path / "one", count=1)
    cfg = resolve(tiny_config(dev, folder, tmp_path / "out", lora={"rank": 4, "alpha": 8},
                              training={"timestep_sampling": "resolution_shift", "guidance": 2.5}), tier="cpu")
    trainer, loss, grads, state = one_step(cfg, tmp_path / "run", tmp_path / "data")

    pipe = pipeline(dev)
    gen = replay(state)
    with torch.no_grad():
        embeds, text_ids = pipe.encode_prompt(prompt=CAPTIONS[0], max_sequence_length=512)
        x0 = pipe._encode_vae_image(pixels(folder / "pic_0.png"), generator=None)
    noise, t, noisy = noised(x0, gen, cfg.training.logit_std)
    ids = pipe._prepare_latent_ids(noisy)
    pred = trainer.transformer(hidden_states=pipe._pack_latents(noisy), timestep=t, guidance=torch.tensor([2.5]),
                               encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=ids, return_dict=False)[0]
    assert_step_matches(trainer, loss, grads, ((pipe._unpack_latents_with_ids(pred, ids) - (noise - x0)) ** 2).mean(),
                        rtol=1e-4, atol=1e-6, relative_loss=True)


def test_worker_job_files_load_in_flux2_pipeline(dev, tmp_path):
    """A job through the worker; its diffusers file loads with Flux2Pipeline.load_lora_weights and
    changes the output, weight 0 gives the base bit for bit, the ComfyUI file is the same adapter."""
    from studio.verify import verify_run

    config = resolve(tiny_config(dev, squares(tmp_path / "ds"), tmp_path / "out", optimizer={"lr": 1e-2},
                                 schedule={"max_steps": 4}, lora={"rank": 4, "alpha": 4, "targets": "all_linear"},
                                 save={"run_name": "dev"}), tier="cpu")
    job = worker_job(tmp_path / "data", "dev", config)[2]
    run_dir = Path(job["run_dir"])
    assert all(c.ok for c in verify_run(run_dir))

    pipe = pipeline(dev)

    def generate(p):
        return p(prompt=CAPTIONS[0], num_inference_steps=2, height=64, width=64, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(7), output_type="np").images[0]

    with_lora = assert_lora_changes_output(pipe, run_dir / "dev.safetensors", lambda: generate(pipe), 1e-4)
    other = pipeline(dev)
    other.load_lora_weights(str(run_dir / "dev-comfyui.safetensors"), adapter_name="comfy")
    np.testing.assert_allclose(generate(other), with_lora, atol=1e-5)


def test_lora_memorises_the_training_latents(dev, tmp_path):
    """At fixed noise and noise levels (guidance 1, as trained), the trained LoRA predicts the training
    images' velocity far better than the base model does: memorisation in latent space."""
    cfg = learning_config(dev, squares(tmp_path / "ds"), tmp_path / "out")
    run_dir, dataset, _ = memorising_run(run, cfg, tmp_path)
    pipe = pipeline(dev)
    fixed = cases(pipe, [(dataset / f"pic_{i}.png", caption, None) for i, caption in enumerate(CAPTIONS)])
    base = velocity_error(pipe, fixed, guidance=1.0)
    pipe.load_lora_weights(str(run_dir / "test-lora.safetensors"), adapter_name="mine")
    learned = velocity_error(pipe, fixed, guidance=1.0)
    assert learned < 0.85 * base, (base, learned)


def test_resume_is_bitwise_exact(dev, tmp_path):
    cfg = tiny_config(dev, squares(tmp_path / "ds", count=2), tmp_path / "out",
                      **deep_merge(resume_settings(6), {"training": {"guidance": 2.0}}))
    assert_resume_is_bitwise_exact(partial(run, data_dir=tmp_path / "data"), cfg, tmp_path, at=3)
