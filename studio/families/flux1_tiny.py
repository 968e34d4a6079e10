"""The offline FLUX.1-shaped model with random weights: tests, benchmarks and the demo.

`python -m studio tiny-model` and the built-in `demo` base model use it; nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..sharing import DEMO_README_HEADING
from .flux1 import TOKEN_LIMITS

# --------------------------------------------------------------------------- demo model

SIZES = {
    # FLUX-shaped, random weights. tiny: tests (seconds). small: real latent geometry for benchmarks.
    "tiny": dict(heads=2, head_dim=16, double=2, single=2, text_dim=32, latent=4,
                 vae_channels=(8, 8, 8, 8), rope=[4, 4, 8]),
    "small": dict(heads=4, head_dim=64, double=2, single=4, text_dim=64, latent=16,
                  vae_channels=(32, 32, 64, 64), rope=[16, 24, 24]),
}

_WORDS = ("a photo of the person man woman cat dog house tree car street city beach forest "
          "mountain river sky cloud sun night light red green blue yellow black white small large "
          "old new portrait painting drawing style in on at with and smiling standing sitting "
          "wearing holding table chair window room garden flower shirt hat glasses face hair "
          "eyes close up wide shot studio outdoors indoors soft warm cold dark bright sks ohwx").split()


def _corpus(n: int = 2000):
    import random
    rng = random.Random(0)
    for _ in range(n):
        yield " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))


def tiny_components(size: str = "tiny", dev: bool = False, seed: int = 0) -> dict:
    """The components of a FLUX.1-shaped pipeline with random weights (the keyword arguments of
    FluxPipeline and FluxKontextPipeline, which share the architecture), built offline."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    from ..models import quiet_loading

    quiet_loading()
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    s = SIZES[size]
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=s["latent"] * 4, num_layers=s["double"], num_single_layers=s["single"],
        attention_head_dim=s["head_dim"], num_attention_heads=s["heads"], joint_attention_dim=s["text_dim"],
        pooled_projection_dim=s["text_dim"], guidance_embeds=dev, axes_dims_rope=s["rope"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=s["latent"], block_out_channels=s["vae_channels"],
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=64, use_quant_conv=False,
        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    clip = CLIPTextModel(CLIPTextConfig(
        hidden_size=s["text_dim"], intermediate_size=s["text_dim"] * 2, num_hidden_layers=2,
        num_attention_heads=2, vocab_size=1000, max_position_embeddings=77, projection_dim=s["text_dim"],
        bos_token_id=0, eos_token_id=2, pad_token_id=1))
    t5 = T5EncoderModel(T5Config(
        d_model=s["text_dim"], d_ff=s["text_dim"] * 2, d_kv=8, num_layers=2, num_heads=4,
        vocab_size=1000, relative_attention_num_buckets=8, decoder_start_token_id=0))
    clip_tok = CLIPTokenizer().train_new_from_iterator(_corpus(), vocab_size=1000)
    clip_tok.model_max_length = 77
    t5_tok = T5Tokenizer().train_new_from_iterator(_corpus(), vocab_size=1000)
    t5_tok.model_max_length = TOKEN_LIMITS["dev" if dev else "schnell"]
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)
    return dict(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tok,
                text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer)


def build_demo_model(out_dir: str | Path, size: str = "tiny", dev: bool = False, seed: int = 0) -> Path:
    """Write a FLUX-shaped FluxPipeline with random weights, fully offline, in diffusers layout."""
    from diffusers import FluxPipeline

    out = Path(out_dir)
    pipe = FluxPipeline(**tiny_components(size, dev, seed))
    tmp = out.with_name(out.name + ".partial")
    pipe.save_pretrained(tmp)
    (tmp / "README.md").write_text(
        f"{DEMO_README_HEADING} ({size}, {'dev' if dev else 'schnell'}-shaped)\n\n"
        "Random weights in the FLUX.1 architecture, built offline by `python -m studio tiny-model`. "
        "It makes noise, not pictures: it exists so that every part of the studio can be tried "
        "and tested without downloading FLUX.1.\n", encoding="utf-8")
    if out.exists():
        import shutil
        shutil.rmtree(out)
    os.replace(tmp, out)  # a half-written demo model is never mistaken for a complete one
    return out
