"""LoRA files: both layouts describe the same ΔW as the trained peft adapter, and load back.

Everything runs on tiny random FLUX / CLIP models built from configs (offline, CPU).
"""

import json
import re

import pytest
import torch
from diffusers import FluxTransformer2DModel
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel

from studio.lora_files import LoraFileError, delta_weights, read_metadata, save_lora, validate_lora_file

RANK, ALPHA = 4, 8.0
TINY_FLUX = dict(patch_size=1, in_channels=4, num_layers=2, num_single_layers=2, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
DIFFUSERS_DEFAULT = ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj",
                     "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                     "ff_context.net.2"]
TARGET_SETS = {
    "attention": ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"],
    "diffusers_default": DIFFUSERS_DEFAULT,
    "all_linear": DIFFUSERS_DEFAULT + ["proj_mlp", "proj_out", "norm.linear", "norm1.linear", "norm1_context.linear"],
    # every Linear of a dev-shaped model: embedders, guidance, final layer (row-swapped in BFL)
    "every_linear": "every",
}
METADATA = {"base_model": "black-forest-labs/FLUX.1-dev", "model_variant": "dev", "trigger_word": "sks",
            "steps": 100, "resolution": 512, "dataset_size": 12, "config": {"lora": {"rank": RANK}}}


def tiny_transformer(dev=False, seed=0):
    torch.manual_seed(seed)
    return FluxTransformer2DModel(**TINY_FLUX, guidance_embeds=dev).eval()


def add_random_lora(model, targets, seed=1, alpha=ALPHA):
    """peft LoRA with non-zero B (gaussian init leaves B zero, so ΔW would be 0)."""
    if targets == "every":
        targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    config = LoraConfig(r=RANK, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian")
    if isinstance(model, FluxTransformer2DModel):
        model.add_adapter(config)
    else:  # transformers 5.24's add_adapter demands peft >= 0.22; peft's own injector works
        inject_adapter_in_model(config, model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return get_peft_model_state_dict(model)


def peft_deltas(model, adapter="default"):
    """ΔW straight from the live peft layers, independent of any file code."""
    return {name: layer.scaling[adapter] * layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight
            for name, layer in model.named_modules() if hasattr(layer, "lora_A") and adapter in layer.lora_A}


def assert_same_deltas(got, expected):
    assert sorted(got) == sorted(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name].detach(), atol=1e-6, rtol=0, msg=name)


def _clip_name(module):
    """CLIP checkpoint spelling; transformers 5's CLIPTextModel has no `text_model.` level."""
    return module if module.startswith("text_model.") else "text_model." + module


def flux_inputs(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    inputs = dict(hidden_states=torch.randn(1, 16, cfg.in_channels, generator=g),
                  encoder_hidden_states=torch.randn(1, 8, cfg.joint_attention_dim, generator=g),
                  pooled_projections=torch.randn(1, cfg.pooled_projection_dim, generator=g),
                  timestep=torch.tensor([0.5]), img_ids=torch.zeros(16, 3), txt_ids=torch.zeros(8, 3))
    if cfg.guidance_embeds:
        inputs["guidance"] = torch.tensor([1.0])
    return inputs


@pytest.fixture(scope="module", params=list(TARGET_SETS))
def saved(request, tmp_path_factory):
    dev = request.param == "every_linear"
    model = tiny_transformer(dev=dev)
    layers = add_random_lora(model, TARGET_SETS[request.param])
    out = tmp_path_factory.mktemp(request.param)
    paths = save_lora(out, "subject", layers, RANK, ALPHA, METADATA if dev else {**METADATA, "model_variant": "schnell"})
    return model, layers, paths, dev


def test_peft_state_dict_keys_are_what_save_lora_expects():
    model = tiny_transformer()
    keys = add_random_lora(model, TARGET_SETS["all_linear"])
    assert keys and all(re.fullmatch(r"[\w.]+\.lora_[AB]\.weight", k) for k in keys)
    assert not any(".default" in k or k.startswith(("base_model", "transformer.")) for k in keys)
    assert "single_transformer_blocks.1.proj_mlp.lora_A.weight" in keys
    assert "proj_out.lora_B.weight" in keys  # "proj_out" also matches the final layer


def test_both_files_give_the_trained_delta_weights(saved):
    model, _, paths, _ = saved
    expected = peft_deltas(model)
    assert_same_deltas(delta_weights(paths["diffusers"]), expected)
    assert_same_deltas(delta_weights(paths["comfyui"]), expected)


def test_kohya_file_fuses_qkv_and_scales_alpha(saved):
    _, _, paths, _ = saved
    tensors = load_file(paths["comfyui"])
    qkv = "lora_unet_double_blocks_0_img_attn_qkv"
    assert tensors[f"{qkv}.lora_down.weight"].shape == (3 * RANK, 32)
    assert tensors[f"{qkv}.lora_up.weight"].shape == (3 * 32, 3 * RANK)
    assert tensors[f"{qkv}.alpha"].item() == 3 * ALPHA
    # single blocks' linear1 always spans q, k, v and mlp rows (32·3 + 128)
    assert tensors["lora_unet_single_blocks_1_linear1.lora_up.weight"].shape == (3 * 32 + 128, 4 * RANK)
    modules = {k.rsplit(".", 2)[0] for k in tensors if k.endswith(".lora_down.weight")}
    assert all(f"{m}.alpha" in tensors for m in modules)
    assert all(k.startswith("lora_unet_") for k in tensors)


def test_diffusers_own_kohya_reader_agrees_on_double_blocks_and_globals(saved, tmp_path):
    """An independent reading of our fused layout and alphas: diffusers' kohya converter.

    It hard-codes full-size FLUX split sizes for single blocks, so those are left out here.
    """
    from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

    model, _, paths, _ = saved
    kohya = {k: v for k, v in load_file(paths["comfyui"]).items() if "single_blocks" not in k}
    converted = _convert_kohya_flux_lora_to_diffusers(kohya)
    got = {k.removeprefix("transformer.").removesuffix(".lora_A.weight"): converted[k.replace("lora_A", "lora_B")] @ v
           for k, v in converted.items() if k.endswith("lora_A.weight")}
    expected = {k: v for k, v in peft_deltas(model).items() if not k.startswith("single_")}
    assert_same_deltas(got, expected)


def test_diffusers_file_loads_into_a_fresh_transformer(saved):
    model, layers, paths, dev = saved
    fresh = tiny_transformer(dev=dev)
    inputs = flux_inputs(fresh)
    with torch.no_grad():
        base = fresh(**inputs).sample
        # folder + weight_name reads the adapter metadata, as load_lora_weights does (a bare file
        # path skips it; with the scale folded into lora_B that is exact too, see below).
        path = paths["diffusers"]
        fresh.load_lora_adapter(str(path.parent), weight_name=path.name, prefix="transformer", adapter_name="default")
        loaded = fresh(**inputs).sample
        trained = model(**inputs).sample
    reloaded = get_peft_model_state_dict(fresh)
    assert sorted(reloaded) == sorted(layers)
    # lora_A as trained; lora_B carries the scale alpha/rank, and the adapter applies it at 1.0
    assert all(torch.equal(reloaded[k], layers[k]) for k in layers if ".lora_A." in k)
    assert all(torch.equal(reloaded[k], layers[k] * (ALPHA / RANK)) for k in layers if ".lora_B." in k)
    assert_same_deltas(peft_deltas(fresh), peft_deltas(model))
    assert not torch.allclose(loaded, base)
    torch.testing.assert_close(loaded, trained, atol=1e-5, rtol=1e-5)


def test_diffusers_file_needs_no_alpha_to_give_the_trained_delta(saved):
    """ComfyUI and Forge apply a diffusers-layout file as ΔW = up·down, ignoring the adapter
    metadata: that product must already be the trained ΔW (here alpha/rank = 2)."""
    model, _, paths, _ = saved
    tensors = load_file(paths["diffusers"])
    raw = {k.removeprefix("transformer.").removesuffix(".lora_A.weight"):
           tensors[k.replace(".lora_A.", ".lora_B.")] @ v for k, v in tensors.items() if k.endswith(".lora_A.weight")}
    assert not any(k.endswith(".alpha") for k in tensors)
    assert_same_deltas(raw, peft_deltas(model))
    adapter = json.loads(read_metadata(paths["diffusers"])["lora_adapter_metadata"])
    assert adapter["transformer.lora_alpha"] == adapter["transformer.r"] == RANK


@pytest.mark.parametrize("rank, alpha", [(32, 16.0), (4, 3.0)])
def test_folded_scale_for_uneven_alpha(tmp_path, rank, alpha):
    """rank 32 / alpha 16 (a ComfyUI user got double the effect) and a ratio that is not a power of two."""
    model = tiny_transformer()
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["attn.to_q", "ff.net.2"], init_lora_weights="gaussian")
    model.add_adapter(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    paths = save_lora(tmp_path, "uneven", get_peft_model_state_dict(model), rank, alpha, METADATA)
    expected = peft_deltas(model)
    tensors = load_file(paths["diffusers"])
    raw = {k.removeprefix("transformer.").removesuffix(".lora_A.weight"):
           tensors[k.replace(".lora_A.", ".lora_B.")] @ v for k, v in tensors.items() if k.endswith(".lora_A.weight")}
    assert_same_deltas(raw, expected)
    assert_same_deltas(delta_weights(paths["diffusers"]), expected)
    assert_same_deltas(delta_weights(paths["comfyui"]), expected)
    info = validate_lora_file(paths["diffusers"])
    assert (info.rank, info.alpha) == (rank, alpha)   # the metadata still names the trained alpha
    # diffusers reads it back exactly, from a folder + weight name or from a bare file path
    fresh = tiny_transformer()
    inputs = flux_inputs(fresh)
    with torch.no_grad():
        trained = model(**inputs).sample
        fresh.load_lora_adapter(str(paths["diffusers"]), prefix="transformer", adapter_name="bare")
        torch.testing.assert_close(fresh(**inputs).sample, trained, atol=1e-5, rtol=1e-5)


def test_diffusers_file_loads_into_a_flux_pipeline(tmp_path):
    from diffusers import FluxPipeline

    from studio import models

    models.build_demo_model(tmp_path / "demo", size="tiny", dev=False)
    pipe = FluxPipeline.from_pretrained(tmp_path / "demo")
    layers = add_random_lora(pipe.transformer, DIFFUSERS_DEFAULT)
    te_layers = add_random_lora(pipe.text_encoder, ["q_proj", "v_proj"], alpha=2.0)
    inputs = flux_inputs(pipe.transformer)
    with torch.no_grad():
        trained = pipe.transformer(**inputs).sample
    paths = save_lora(tmp_path / "out", "demo", layers, RANK, ALPHA, METADATA, save_comfyui=False,
                      text_encoder_layers=te_layers, te_alpha=2.0)
    assert set(paths) == {"diffusers"}

    fresh = FluxPipeline.from_pretrained(tmp_path / "demo")
    with torch.no_grad():
        base = fresh.transformer(**inputs).sample
        fresh.load_lora_weights(str(paths["diffusers"]))
        loaded = fresh.transformer(**inputs).sample
    assert not torch.allclose(loaded, base)
    torch.testing.assert_close(loaded, trained, atol=1e-5, rtol=1e-5)
    # the CLIP LoRA went into the text encoder with its own alpha (diffusers names it default_0)
    assert_same_deltas({_clip_name(k): v for k, v in peft_deltas(fresh.text_encoder, "default_0").items()},
                       {_clip_name(k): v for k, v in peft_deltas(pipe.text_encoder).items()})


def test_metadata_in_both_files(saved):
    _, _, paths, dev = saved
    for path in paths.values():
        meta = read_metadata(path)
        assert meta["ss_network_dim"] == str(RANK) and float(meta["ss_network_alpha"]) == ALPHA
        assert meta["ss_network_module"] == "networks.lora_flux"
        assert meta["ss_base_model_version"] == ("flux1" if dev else "flux1-schnell")
        assert meta["modelspec.architecture"] == ("flux-1-dev/lora" if dev else "flux-1-schnell/lora")
        assert meta["trigger_word"] == "sks" and meta["modelspec.trigger_phrase"] == "sks"
        assert meta["base_model"] == METADATA["base_model"] and meta["modelspec.title"] == "subject"
        assert json.loads(meta["config"]) == METADATA["config"]
        info = validate_lora_file(path)
        assert (info.rank, info.alpha, info.has_text_encoder) == (RANK, ALPHA, False)
    adapter = json.loads(read_metadata(paths["diffusers"])["lora_adapter_metadata"])
    # alpha/rank is folded into lora_B, so the diffusers file's own adapter says alpha = rank
    assert adapter["transformer.r"] == RANK and adapter["transformer.lora_alpha"] == RANK
    assert validate_lora_file(paths["diffusers"]).layout == "diffusers"
    assert validate_lora_file(paths["comfyui"]).layout == "kohya"
    assert not list(paths["diffusers"].parent.glob(".*"))  # no temp files left behind


def test_clip_text_encoder_lora_round_trips_in_both_layouts(tmp_path):
    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, vocab_size=100, max_position_embeddings=16,
                                        bos_token_id=0, eos_token_id=2, pad_token_id=1))
    te_layers = add_random_lora(clip, ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"], seed=5, alpha=2.0)
    model = tiny_transformer()
    layers = add_random_lora(model, TARGET_SETS["attention"])
    paths = save_lora(tmp_path, "both", layers, RANK, ALPHA, METADATA, text_encoder_layers=te_layers,
                      te_rank=RANK, te_alpha=2.0)
    expected_te = {_clip_name(k): v for k, v in peft_deltas(clip).items()}
    expected = {**peft_deltas(model), **expected_te}
    assert_same_deltas(delta_weights(paths["diffusers"]), expected)
    assert_same_deltas(delta_weights(paths["comfyui"]), expected)
    kohya = load_file(paths["comfyui"])
    assert kohya["lora_te1_text_model_encoder_layers_1_self_attn_q_proj.alpha"].item() == 2.0
    assert "lora_te1_text_model_encoder_layers_0_mlp_fc2.lora_up.weight" in kohya
    assert validate_lora_file(paths["comfyui"]).has_text_encoder
    assert any(k.startswith("text_encoder.") for k in load_file(paths["diffusers"]))
    adapter = json.loads(read_metadata(paths["diffusers"])["lora_adapter_metadata"])
    assert adapter["text_encoder.lora_alpha"] == adapter["text_encoder.r"] == RANK   # 2.0/RANK folded into B
    te_tensors = load_file(paths["diffusers"])
    raw = {_clip_name(k.removeprefix("text_encoder.").removesuffix(".lora_A.weight")):
           te_tensors[k.replace(".lora_A.", ".lora_B.")] @ v
           for k, v in te_tensors.items() if k.startswith("text_encoder.") and k.endswith(".lora_A.weight")}
    assert_same_deltas(raw, expected_te)


def test_split_fused_false_keeps_kohya_modules(saved):
    _, _, paths, _ = saved
    raw = delta_weights(paths["comfyui"], split_fused=False)
    assert "lora_unet_double_blocks_1_img_attn_qkv" in raw
    split = delta_weights(paths["comfyui"])
    fused = torch.cat([split[f"transformer_blocks.1.attn.to_{p}"] for p in "qkv"])
    torch.testing.assert_close(raw["lora_unet_double_blocks_1_img_attn_qkv"], fused, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------- rejection


def _good_kohya():
    return {"lora_unet_img_in.lora_down.weight": torch.randn(4, 8),
            "lora_unet_img_in.lora_up.weight": torch.randn(16, 4),
            "lora_unet_img_in.alpha": torch.tensor(4.0)}


@pytest.mark.parametrize("case, message", [
    ("text", "not a readable safetensors file"),
    ("empty", "no LoRA tensors"),
    ("nan", "NaN or inf"),
    ("shape", "shapes do not fit"),
    ("partner", "has no partner"),
    ("alpha", "no .alpha tensor"),
])
def test_validate_rejects_broken_files(tmp_path, case, message):
    path = tmp_path / "broken.safetensors"
    tensors = _good_kohya()
    if case == "text":
        path.write_text("this is not a LoRA\n")
    else:
        if case == "empty":
            tensors = {}
        elif case == "nan":
            tensors["lora_unet_img_in.lora_up.weight"][3, 1] = float("nan")
        elif case == "shape":
            tensors["lora_unet_img_in.lora_up.weight"] = torch.randn(16, 5)
        elif case == "partner":
            del tensors["lora_unet_img_in.lora_up.weight"]
        elif case == "alpha":
            del tensors["lora_unet_img_in.alpha"]
        save_file(tensors, path)
    with pytest.raises(LoraFileError, match=re.escape(message)):
        validate_lora_file(path)


def test_good_minimal_kohya_file_validates(tmp_path):
    path = tmp_path / "ok.safetensors"
    save_file(_good_kohya(), path)
    info = validate_lora_file(path)
    assert (info.layout, info.num_modules, info.rank, info.alpha) == ("kohya", 1, 4, 4.0)


def test_save_rejects_wrong_rank_and_reserved_metadata(tmp_path):
    model = tiny_transformer()
    layers = add_random_lora(model, ["attn.to_q"])
    with pytest.raises(LoraFileError, match="rank is 8"):
        save_lora(tmp_path, "x", layers, 8, ALPHA, {})
    with pytest.raises(LoraFileError, match="written by diffusers"):
        save_lora(tmp_path, "x", layers, RANK, ALPHA, {"format": "pt"})
    assert not list(tmp_path.iterdir())
