"""FLUX.2 [dev] on its tiny offline model: detection, the step against the FLUX.2 objective (with the
guidance embedding) built from Flux2Pipeline's own helpers, learning, resume, both LoRA files, a
worker job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import Events, tiny_config
from flux2_helpers import (CAPTIONS, assert_lora_changes_and_zero_is_base, assert_resume_is_bitwise_exact,
                           assert_same_step, cases, learning_config, noised, one_step, pipeline, pixels, run, squares,
                           velocity_error)
from studio.config import resolve
from studio.engine import build_state
from studio.events import EXIT_OK
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
    trainer = build_state(cfg, tmp_path / "run", Events(), data_dir=tmp_path / "data")
    loss, grads, state = one_step(trainer)

    pipe = pipeline(dev)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(state)
    with torch.no_grad():
        embeds, text_ids = pipe.encode_prompt(prompt=CAPTIONS[0], max_sequence_length=512)
        x0 = pipe._encode_vae_image(pixels(folder / "pic_0.png"), generator=None)
    noise, t, noisy = noised(x0, gen, cfg.training.logit_std)
    ids = pipe._prepare_latent_ids(noisy)
    pred = trainer.transformer(hidden_states=pipe._pack_latents(noisy), timestep=t, guidance=torch.tensor([2.5]),
                               encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=ids, return_dict=False)[0]
    assert_same_step(trainer, loss, grads, ((pipe._unpack_latents_with_ids(pred, ids) - (noise - x0)) ** 2).mean())


def test_worker_job_files_load_in_flux2_pipeline(dev, tmp_path):
    """A job through the worker; its diffusers file loads with Flux2Pipeline.load_lora_weights and
    changes the output, weight 0 gives the base bit for bit, the ComfyUI file is the same adapter."""
    from studio.jobs import JobStore
    from studio.verify import verify_run
    from studio.worker import Worker

    config = resolve(tiny_config(dev, squares(tmp_path / "ds"), tmp_path / "out", optimizer={"lr": 1e-2},
                                 schedule={"max_steps": 4}, lora={"rank": 4, "alpha": 4, "targets": "all_linear"},
                                 save={"run_name": "dev"}), tier="cpu")
    store = JobStore(tmp_path / "data")
    job_id = store.create_job("dev", config.to_dict())
    Worker(tmp_path / "data", poll_interval=0.1).run_once()
    job = store.get_job(job_id)
    assert job["status"] == "succeeded", (job["error_message"], job["advice"])
    run_dir = Path(job["run_dir"])
    assert all(c.ok for c in verify_run(run_dir))

    pipe = pipeline(dev)

    def generate(p):
        return p(prompt=CAPTIONS[0], num_inference_steps=2, height=64, width=64, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(7), output_type="np").images[0]

    with_lora = assert_lora_changes_and_zero_is_base(pipe, run_dir / "dev.safetensors", lambda: generate(pipe), 1e-4)
    other = pipeline(dev)
    other.load_lora_weights(str(run_dir / "dev-comfyui.safetensors"), adapter_name="comfy")
    np.testing.assert_allclose(generate(other), with_lora, atol=1e-5)


def test_lora_memorises_the_training_latents(dev, tmp_path):
    """At fixed noise and noise levels (guidance 1, as trained), the trained LoRA predicts the training
    images' velocity far better than the base model does: memorisation in latent space."""
    dataset = squares(tmp_path / "ds")
    cfg = learning_config(dev, dataset, tmp_path / "out")
    code, events = run(cfg, tmp_path / "run", tmp_path / "data")
    assert code == EXIT_OK, events.of("error")
    pipe = pipeline(dev)
    fixed = cases(pipe, [(dataset / f"pic_{i}.png", caption, None) for i, caption in enumerate(CAPTIONS)])
    base = velocity_error(pipe, fixed, guidance=1.0)
    pipe.load_lora_weights(str(tmp_path / "run" / "test-lora.safetensors"), adapter_name="mine")
    learned = velocity_error(pipe, fixed, guidance=1.0)
    assert learned < 0.85 * base, (base, learned)


def test_resume_is_bitwise_exact(dev, tmp_path):
    assert_resume_is_bitwise_exact(dev, squares(tmp_path / "ds", count=2), tmp_path, training={"guidance": 2.0})
