"""FLUX.2 [dev] on its tiny offline model: detection, the step against the FLUX.2 objective (with the
guidance embedding) built from Flux2Pipeline's own helpers, both LoRA files, a worker job."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from family_checks import assert_same_step, studio_step
from studio.config import resolve
from studio.engine import train
from studio.events import EXIT_OK
from studio.families.base import get_family, inspect_model
from test_family_flux2_klein import CAPTIONS, pixels, squares

pytestmark = pytest.mark.engine
DEV = get_family("flux2-dev")


def pipeline(model):
    from diffusers import Flux2Pipeline

    pipe = Flux2Pipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    return pipe


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
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    folder = squares(tmp_path / "one", count=1)
    cfg = resolve(tiny_config(dev, folder, tmp_path / "out", lora={"rank": 4, "alpha": 8},
                              training={"timestep_sampling": "resolution_shift", "guidance": 2.5}), tier="cpu")
    trainer, state, loss, grads = studio_step(cfg, tmp_path)

    pipe = pipeline(dev)
    gen = torch.Generator().manual_seed(0)
    gen.set_state(state)
    with torch.no_grad():
        embeds, text_ids = pipe.encode_prompt(prompt=CAPTIONS[0], max_sequence_length=512)
        x0 = pipe._encode_vae_image(pixels(folder / "pic_0.png"), generator=None)
    noise = torch.randn(x0.shape, generator=gen)
    sigma = torch.sigmoid(torch.randn((1,), generator=gen) * cfg.training.logit_std)
    shift = math.exp(compute_empirical_mu(x0.shape[2] * x0.shape[3], 50))
    t = shift * sigma / (1 + (shift - 1) * sigma)
    noisy = (1 - t) * x0 + t * noise
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

    base = generate(pipe)
    pipe.load_lora_weights(str(run_dir / "dev.safetensors"), adapter_name="mine")
    with_lora = generate(pipe)
    pipe.set_adapters(["mine"], adapter_weights=[0.0])
    weight_zero = generate(pipe)
    assert np.abs(with_lora - base).mean() > 1e-4
    np.testing.assert_array_equal(weight_zero, base)
    other = pipeline(dev)
    other.load_lora_weights(str(run_dir / "dev-comfyui.safetensors"), adapter_name="comfy")
    np.testing.assert_allclose(generate(other), with_lora, atol=1e-5)
