"""The model-family registry and the FLUX.1 family's facts: detection from config files, one
source for token limits, licences and inference defaults, and a complete interface."""

from __future__ import annotations

import json

import pytest

from studio.families import ModelError, detect, families, get_family, inspect_model
from studio.families.base import Family
from studio.families.flux1 import FLUX1, VARIANTS


# Methods of Family with a working default (read from the class attributes).
DEFAULTED = {"token_limit", "variant_weight_gib", "variant_tiers", "variant_min_gpu_gib", "tier_for", "trains_from_pairs",
             "variant_lora_width", "variant_text_encoder_gib", "plan_facts",
             "text_encoders_to",  # moves the family's text_encoder_modules
             "usage_code"}  # None: the card's own from_pretrained lines


def test_flux1_implements_the_whole_interface():
    missing = [name for name, member in vars(Family).items()
               if callable(member) and not name.startswith("_") and getattr(type(FLUX1), name) is member
               and name not in DEFAULTED]
    assert not missing, f"FLUX.1 leaves these Family methods unimplemented: {missing}"
    assert get_family("flux1") is FLUX1
    with pytest.raises(ModelError, match="no model family 'sdxl'"):
        get_family("sdxl")


def test_detection_reads_the_configs(tiny_model, tiny_dev_model):
    for folder, variant in ((tiny_model, "schnell"), (tiny_dev_model, "dev")):
        index = json.loads((folder / "model_index.json").read_text())
        transformer = json.loads((folder / "transformer" / "config.json").read_text())
        assert detect(index, transformer) == (FLUX1, variant)
        info = inspect_model(str(folder))
        assert (info.family, info.family_name, info.token_limit) == (variant, "flux1", VARIANTS[variant].token_limit)
        assert info.guidance_embeds is VARIANTS[variant].guidance_embeds
    # an edit pipeline around the same transformer is not plain FLUX.1 (it is Kontext); nor is another transformer
    assert FLUX1.detect({"_class_name": "FluxKontextPipeline"}, {"_class_name": "FluxTransformer2DModel"}) is None
    assert detect({"_class_name": "FluxKontextPipeline"}, {"_class_name": "FluxTransformer2DModel"})[0].name \
        == "flux1-kontext"
    assert detect({}, {"_class_name": "SD3Transformer2DModel"}) is None
    # a hand-written config without a class name is recognised by FLUX.1's own keys
    assert detect({}, {"num_single_layers": 2, "joint_attention_dim": 32, "guidance_embeds": True}) == (FLUX1, "dev")


def test_a_model_of_no_known_family_is_refused_by_name(tmp_path):
    for part, cls in (("transformer", "SD3Transformer2DModel"), ("vae", "AutoencoderKL")):
        (tmp_path / part).mkdir()
        (tmp_path / part / "config.json").write_text(json.dumps({"_class_name": cls}))
    with pytest.raises(ModelError, match="SD3Transformer2DModel.*FluxPipeline"):
        inspect_model(str(tmp_path))


def test_variant_facts_have_one_source():
    from studio import publish, sharing

    for family in families():  # a file's or a card's licence is its family's variant's
        for name, v in family.variants.items():
            base = sharing.BaseIdentity(v.hub_id, name, family.name)
            assert (base.licence, base.licence_id) == (v.licence_text, v.licence_id) and v.licence_text
    assert sharing.BaseIdentity(sharing.DEMO_NAME, "demo").licence_id == "apache-2.0"
    for name, v in VARIANTS.items():
        assert publish._base_model({"base_model": "/local/model", "base_family": name}, name) == v.hub_id
    assert (VARIANTS["dev"].token_limit, VARIANTS["schnell"].token_limit) == (512, 256)
    assert (VARIANTS["dev"].steps, VARIANTS["dev"].guidance) == (28, 3.5)
    assert FLUX1.guess_variant("someone/flux1-SCHNELL-finetune") == "schnell"
    assert FLUX1.guess_variant("my-flux") == "dev"
    assert FLUX1.block_of("single_transformer_blocks.10.attn.to_q.lora_A.weight") == "single.10"
