"""FLUX.2 [klein] end to end on its tiny offline model: detection, the training step against the
FLUX.2 objective computed with the diffusers pipeline's own helpers, learning, both LoRA files
(diffusers and ComfyUI), resume and a worker job."""

from __future__ import annotations

import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from engine_checks import (CAPTIONS, QUANTISED_CASES, QUANTISED_IDS, assert_lora_changes_output,
                           assert_resume_is_bitwise_exact, assert_step_matches, memorising_run, one_step, pixels,
                           quantised_run, replay, resume_settings, run, squares, worker_job)
from flux2_helpers import cases, learning_config, noised, pipeline, velocity_error
from studio.config import resolve
from studio.events import EXIT_FAILED
from studio.families.base import get_family, inspect_model

pytestmark = pytest.mark.engine
KLEIN = get_family("flux2-klein")


@pytest.fixture(scope="module")
def klein(tmp_path_factory) -> Path:
    return KLEIN.build_tiny(tmp_path_factory.mktemp("klein") / "tiny")


@pytest.fixture(scope="module")
def trained(klein, tmp_path_factory):
    """One training run shared by the learning and file tests."""
    root = tmp_path_factory.mktemp("klein-trained")
    cfg = learning_config(klein, squares(root / "ds"), root / "out", sample={"guidance": 4.0})
    return memorising_run(run, cfg, root)


# --------------------------------------------------------------------------- the model


def test_detected_from_configs_and_key_names(klein, tmp_path):
    info = inspect_model(str(klein))
    assert (info.family_name, info.variant, info.token_limit, info.guidance_embeds) == ("flux2-klein", "base-4b", 512, False)
    assert info.model_family.variants[info.variant].licence_id == "apache-2.0"
    distilled = tmp_path / "distilled"  # config files are all detection reads
    for name in ("model_index.json", "transformer/config.json", "vae/config.json"):
        (distilled / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(klein / name, distilled / name)
    index = json.loads((distilled / "model_index.json").read_text())
    (distilled / "model_index.json").write_text(json.dumps({**index, "is_distilled": True}))
    assert inspect_model(str(distilled)).variant == "4b"
    # a hub id (no model_index.json): the transformer's width says 4 B or 9 B; [dev] (guidance) is not klein
    full9 = {**KLEIN.full_config("9b"), "_class_name": "Flux2Transformer2DModel"}
    assert KLEIN.detect({}, full9) == "base-9b"
    assert KLEIN.detect({}, {**full9, "guidance_embeds": True}) is None
    assert get_family("flux1").detect(index, json.loads((klein / "transformer/config.json").read_text())) is None
    assert KLEIN.variants["9b"].licence_id == "flux-non-commercial-license" != KLEIN.variants["base-4b"].licence_id
    # single-file transformers: key names tell FLUX.2 from FLUX.1
    from safetensors import safe_open
    keys = list(safe_open(str(klein / "transformer" / "diffusion_pytorch_model.safetensors"), "pt").keys())
    assert KLEIN.detect_keys(keys) and not get_family("flux1").detect_keys(keys)
    bfl = ["double_blocks.0.img_attn.qkv.weight", "single_blocks.0.linear1.weight", "single_stream_modulation.lin.weight"]
    assert KLEIN.detect_keys(bfl) and not get_family("flux1").detect_keys(bfl)
    assert not KLEIN.detect_keys(["single_blocks.0.linear1.weight", "double_blocks.0.img_mod.lin.weight"])


def test_single_file_transformer_replaces_the_folders(klein, tmp_path):
    from diffusers import Flux2Transformer2DModel
    from safetensors.torch import save_file

    other = Flux2Transformer2DModel.from_pretrained(str(klein), subfolder="transformer")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    single = tmp_path / "klein-finetune.safetensors"
    save_file(other.state_dict(), str(single))
    pipe = KLEIN.load(inspect_model(str(klein)), str(single))
    assert torch.equal(pipe.transformer.x_embedder.weight, other.x_embedder.weight)
    assert not pipe.transformer.x_embedder.weight.requires_grad


def test_interface_facts():
    assert {"attention", "diffusers_default", "all_linear"} <= set(KLEIN.target_sets)
    assert KLEIN.kind == "text-to-image" and KLEIN.text_encoder_targets == []
    assert KLEIN.variant_weight_gib("base-9b")["bf16"] > KLEIN.variant_weight_gib("base-4b")["bf16"] > 7
    assert KLEIN.variant_tiers("4b")[0][1] < KLEIN.variant_tiers("9b")[0][1]
    assert KLEIN.block_of("single_transformer_blocks.3.attn.to_out.lora_A.default.weight") == "single.3"
    # FLUX.2's shift grows with the image: 512 px has 1024 tokens, 1024 px 4096
    assert 1 < KLEIN.resolution_shift(1024) < KLEIN.resolution_shift(4096)


def test_small_size_builds_with_real_latent_geometry(tmp_path):
    pipe = pipeline(KLEIN.build_tiny(tmp_path / "small", size="small", variant="4b"))
    assert pipe.transformer.config.in_channels == 128 and pipe.vae.config.latent_channels == 32
    assert pipe.config.is_distilled


# --------------------------------------------------------------------------- the step


def test_step_equals_the_flux2_objective(klein, tmp_path):
    """Loss and LoRA gradients of one step equal the FLUX.2 objective computed with the pipeline's
    own helpers (prompt encoding, VAE latents with batch-norm, patch packing, 4-D ids, the shift)."""
    folder = squares(tmp_path / "one", count=1)
    cfg = resolve(tiny_config(klein, folder, tmp_path / "out", lora={"rank": 4, "alpha": 8},
                              training={"timestep_sampling": "resolution_shift"}), tier="cpu")
    trainer, loss, grads, state = one_step(cfg, tmp_path / "run", tmp_path / "data")

    pipe = pipeline(klein)
    gen = replay(state)
    with torch.no_grad():
        embeds, text_ids = pipe.encode_prompt(prompt=CAPTIONS[0], max_sequence_length=512)
        x0 = pipe._encode_vae_image(pixels(folder / "pic_0.png"), generator=None)  # mode, patchify, batch norm
    noise, t, noisy = noised(x0, gen, cfg.training.logit_std)
    ids = pipe._prepare_latent_ids(noisy)
    pred = trainer.transformer(hidden_states=pipe._pack_latents(noisy), timestep=t, guidance=None,
                               encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=ids, return_dict=False)[0]
    pred = pipe._unpack_latents_with_ids(pred, ids)
    assert_step_matches(trainer, loss, grads, ((pred - (noise - x0)) ** 2).mean(), rtol=1e-4, atol=1e-6,
                        relative_loss=True)


# --------------------------------------------------------------------------- learning and files


def test_lora_memorises_the_training_latents(trained, klein):
    """At fixed noise and noise levels, the trained LoRA predicts the training images' velocity far
    better than the base model does (memorisation in latent space, not only a falling loss)."""
    run_dir, dataset, _ = trained
    pipe = pipeline(klein)
    fixed = cases(pipe, [(dataset / f"pic_{i}.png", caption, None) for i, caption in enumerate(CAPTIONS)])
    base = velocity_error(pipe, fixed)
    pipe.load_lora_weights(str(run_dir / "test-lora.safetensors"), adapter_name="mine")
    learned = velocity_error(pipe, fixed)
    # The random base's error is the target's variance plus its own noise; only a LoRA that has
    # learned these images (and how the noisy input relates to them) gets clearly below it.
    assert learned < 0.85 * base, (base, learned)


def test_diffusers_file_loads_changes_output_and_weight_zero_is_base(trained, klein):
    run_dir = trained[0]
    pipe = pipeline(klein)

    def generate(pipe=pipe):  # guidance 1: one pass per step (the run's own samples used guidance 4)
        return pipe(prompt=CAPTIONS[0], num_inference_steps=2, height=64, width=64, guidance_scale=1.0,
                    generator=torch.Generator().manual_seed(7), output_type="np").images[0]

    with_lora = assert_lora_changes_output(pipe, run_dir / "test-lora.safetensors", generate)
    # the ComfyUI file, read by diffusers' kohya FLUX.2 converter, is the same adapter
    other = pipeline(klein)
    other.load_lora_weights(str(run_dir / "test-lora-comfyui.safetensors"), adapter_name="comfy")
    np.testing.assert_allclose(generate(other), with_lora, atol=1e-5)


def test_both_files_same_delta_metadata_and_verify(trained):
    from studio.lora_files import read_metadata
    from studio.verify import verify_run

    run_dir, _, events = trained
    diffusers_file, comfy_file = run_dir / "test-lora.safetensors", run_dir / "test-lora-comfyui.safetensors"
    a, b = KLEIN.delta_weights(diffusers_file), KLEIN.delta_weights(comfy_file)
    assert set(a) == set(b) and any(".to_q" in k for k in a) and any("to_qkv_mlp_proj" in k for k in a)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-6, rtol=1e-5)
    for path in (diffusers_file, comfy_file):
        meta = read_metadata(path)
        assert (meta["model_family"], meta["model_variant"], meta["modelspec.license"]) == ("flux2-klein", "base-4b",
                                                                                           "apache-2.0")
        assert meta["ss_network_dim"] == "8" and KLEIN.validate(path).rank == 8
    assert events.of("start")[0]["licence"].startswith("Apache-2.0")
    # the end-of-run sample: guidance 4 against the empty prompt cached before the text encoder went
    sample = events.of("sample")[-1]
    assert sample["step"] == 50 and Image.open(run_dir / sample["path"]).size == (64, 64)
    checks = verify_run(run_dir)
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]


def test_comfyui_keys_match_the_full_size_key_map(tmp_path):
    """A full-size klein 4B LoRA (every target set, real shapes, rank 2) written by the family: every
    ComfyUI module is `lora_unet_` + a BFL weight name of the model (dots as underscores), with the
    weight's shape. The BFL names are written here and proven by diffusers' own checkpoint converter."""
    from diffusers.loaders.single_file_utils import convert_flux2_transformer_checkpoint_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    from studio.families.flux2_layouts import meta_transformer

    config = KLEIN.full_config("base-4b")
    h, mlp = 24 * 128, 3 * 24 * 128
    bfl = {}
    for i in range(5):
        for side in ("img", "txt"):
            bfl |= {f"double_blocks.{i}.{side}_attn.qkv.weight": (3 * h, h), f"double_blocks.{i}.{side}_attn.proj.weight": (h, h),
                    f"double_blocks.{i}.{side}_mlp.0.weight": (2 * mlp, h), f"double_blocks.{i}.{side}_mlp.2.weight": (h, mlp)}
    for i in range(20):
        bfl |= {f"single_blocks.{i}.linear1.weight": (3 * h + 2 * mlp, h), f"single_blocks.{i}.linear2.weight": (h, h + mlp)}
    model = meta_transformer(config)
    converted = convert_flux2_transformer_checkpoint_to_diffusers({k: torch.empty(s, device="meta") for k, s in bfl.items()})
    blocks = {n: tuple(p.shape) for n, p in model.state_dict().items()
              if n.startswith(("transformer_blocks.", "single_transformer_blocks.")) and "norm" not in n}
    assert {k: tuple(v.shape) for k, v in converted.items()} == blocks
    comfy_map = {"lora_unet_" + k.removesuffix(".weight").replace(".", "_"): s for k, s in bfl.items()}

    lora = type("L", (), {"targets": "all_linear", "target_modules": None, "double_blocks": None, "single_blocks": None})
    targets = KLEIN.target_modules(lora, model)
    model.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=targets))
    gen = torch.Generator().manual_seed(0)
    layers = {k: torch.randn(v.shape, generator=gen) * 0.01 for k, v in get_peft_model_state_dict(model).items()}
    from studio.families.flux2_layouts import write_lora
    paths = write_lora(KLEIN, "base-4b", tmp_path, "full", layers, 2, 2, {"model_variant": "base-4b"})
    from safetensors import safe_open
    with safe_open(str(paths["comfyui"]), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    modules = {k.removesuffix(".lora_up.weight") for k in shapes if k.endswith(".lora_up.weight")}
    assert len(modules) == 80  # 5 double blocks x 8 BFL layers (q/k/v fused) + 20 single blocks x 2
    for m in modules:
        assert (shapes[f"{m}.lora_up.weight"][0], shapes[f"{m}.lora_down.weight"][1]) == comfy_map[m], m
        assert shapes[f"{m}.alpha"] == ()
    assert set(shapes) == {f"{m}.{s}" for m in modules for s in ("lora_up.weight", "lora_down.weight", "alpha")}
    assert KLEIN.comfy_shapes(config) == comfy_map
    from studio.verify import verify_files
    checks = verify_files(paths["diffusers"], paths["comfyui"], config, "full size", targets, KLEIN)
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]


# --------------------------------------------------------------------------- resume and the worker


def test_resume_is_bitwise_exact(klein, tmp_path):
    cfg = tiny_config(klein, squares(tmp_path / "ds", count=2), tmp_path / "out", **resume_settings(6))
    assert_resume_is_bitwise_exact(partial(run, data_dir=tmp_path / "data"), cfg, tmp_path, at=3)


def test_text_encoder_lora_is_refused_with_a_clear_message(klein, tmp_path):
    cfg = tiny_config(klein, squares(tmp_path / "ds", count=1), tmp_path / "out", lora={"train_text_encoder": True})
    code, events = run(cfg, tmp_path / "run", tmp_path / "data")
    assert code == EXIT_FAILED
    error = events.of("error")[0]
    assert error["code"] == "CONFIG_INVALID" and "lora.train_text_encoder" in error["message"]
    assert "FLUX.2 [klein]" in error["message"]


def test_flux1s_guidance_against_the_empty_prompt_is_refused_with_a_clear_message(klein, tmp_path):
    cfg = tiny_config(klein, squares(tmp_path / "ds", count=1), tmp_path / "out", sample={"true_cfg": 3.0})
    code, events = run(cfg, tmp_path / "run", tmp_path / "data")
    assert code == EXIT_FAILED
    error = events.of("error")[0]
    assert error["code"] == "CONFIG_INVALID" and "sample.true_cfg" in error["message"]
    assert "FLUX.2 [klein]" in error["message"] and "sample.guidance" in error["message"]


def test_worker_runs_a_klein_job(klein, tmp_path):
    config = resolve(tiny_config(klein, squares(tmp_path / "ds"), tmp_path / "out", schedule={"max_steps": 3},
                                 save={"every": 2, "run_name": "klein"}), tier="cpu")
    store, job_id, job = worker_job(tmp_path / "data", "klein", config)  # the default `python -m studio train`
    assert job["exit_code"] == 0 and job["step"] == 3 and len(job["files"]) == 2
    assert all(Path(job["run_dir"], f).is_file() for f in job["files"])
    start = store.events(job_id, types=["start"])[0]
    assert start["family"] == "base-4b" and start["licence"].startswith("Apache-2.0")


@pytest.mark.parametrize("tier, precision, avx512_bf16", QUANTISED_CASES, ids=QUANTISED_IDS)
def test_quantised_base_trains_and_saves(klein, tmp_path, monkeypatch, cpu_quantisation, tier, precision,
                                         avx512_bf16):
    """The 12 and 16 GB tiers' quantised bases (bitsandbytes NF4 / int8) through the engine on the CPU
    kernels (engine_checks.quantised_run); the fused projection is the quantised PEFT layer."""
    state, files = quantised_run(klein, squares(tmp_path / "ds"), tmp_path, monkeypatch, cpu_quantisation, tier,
                                 precision, avx512_bf16)
    from peft.tuners.lora import bnb as peft_bnb

    layer = state.transformer.single_transformer_blocks[0].attn.to_qkv_mlp_proj
    assert isinstance(layer, peft_bnb.Linear4bit if precision == "nf4" else peft_bnb.Linear8bitLt)
    for path in files:
        assert KLEIN.validate(path).rank == 4
