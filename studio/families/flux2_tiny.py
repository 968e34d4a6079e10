"""Offline random-weight FLUX.2 [klein] pipelines for tests and benchmarks (nothing is downloaded).

The tokenizer is a Qwen2 tokenizer trained in well under a second on a small word corpus, with a
chat template that takes Qwen3's `enable_thinking` switch (Flux2KleinPipeline passes it). The
pipeline stacks the text model's hidden states 9, 18 and 27, so the tiny Qwen3 has 28 narrow
layers and the transformer's text width is three times the text model's. The VAE's batch-norm
statistics get non-trivial values: a fresh VAE has mean 0 and variance 1, which would hide a
missing latent normalisation.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .flux1_tiny import _corpus

SIZES = {
    # tiny: tests (seconds). small: FLUX.2's real latent geometry (32 channels, 8x VAE, 2x2 patches
    # → 128-channel tokens, head width 128 with rope axes 32 x 4).
    "tiny": dict(heads=2, head_dim=16, double=2, single=2, text_hidden=32, latent=4,
                 vae_channels=(8, 8, 8, 8), rope=(4, 4, 4, 4)),
    "small": dict(heads=2, head_dim=128, double=2, single=4, text_hidden=64, latent=32,
                  vae_channels=(32, 32, 64, 64), rope=(32, 32, 32, 32)),
}
TEXT_LAYERS = 28  # the pipeline reads hidden states 9, 18 and 27

# ChatML with Qwen3's thinking switch: what Flux2KleinPipeline's apply_chat_template call expects.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif -%}"
    "{%- endif -%}"
)
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def qwen_tokenizer(vocab_size: int = 500):
    """A Qwen2 tokenizer (the class Qwen3 checkpoints use) with a Qwen3-style chat template."""
    from transformers import Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer().train_new_from_iterator(_corpus(), vocab_size=vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.pad_token = "<|endoftext|>"
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    tokenizer.model_max_length = 131072
    return tokenizer


def build_klein(out_dir: str | Path, size: str = "tiny", distilled: bool = False, seed: int = 0,
                readme: str = "") -> Path:
    """Write a Flux2KleinPipeline with random weights in diffusers layout (atomically)."""
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen3Config, Qwen3ForCausalLM

    s = _sizes(size)
    tokenizer = qwen_tokenizer()
    transformer = _transformer(s, seed, guidance_embeds=False)
    vae = _vae(s, seed)
    text = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=s["text_hidden"], intermediate_size=s["text_hidden"] * 2,
        num_hidden_layers=TEXT_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=1000000.0,
        pad_token_id=tokenizer.pad_token_id))
    pipe = Flux2KleinPipeline(scheduler=_scheduler(), vae=vae, text_encoder=text, tokenizer=tokenizer,
                              transformer=transformer, is_distilled=distilled)
    return _save(pipe, out_dir, readme)


def _sizes(size: str) -> dict:
    """The dimensions of a tiny model size (library loading messages quietened for the build)."""
    from ..models import quiet_loading

    quiet_loading()
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    return SIZES[size]


def _transformer(s: dict, seed: int, guidance_embeds: bool):
    """A FLUX.2 transformer of size `s`, seeded; its text width is three stacked hidden states."""
    import torch
    from diffusers import Flux2Transformer2DModel

    torch.manual_seed(seed)
    return Flux2Transformer2DModel(
        patch_size=1, in_channels=s["latent"] * 4, num_layers=s["double"], num_single_layers=s["single"],
        attention_head_dim=s["head_dim"], num_attention_heads=s["heads"], joint_attention_dim=3 * s["text_hidden"],
        timestep_guidance_channels=256, mlp_ratio=3.0, axes_dims_rope=s["rope"], rope_theta=2000,
        guidance_embeds=guidance_embeds)


def _vae(s: dict, seed: int):
    """The FLUX.2 VAE of size `s`, its batch-norm statistics away from the trivial mean 0 / variance 1."""
    import torch
    from diffusers import AutoencoderKLFlux2

    vae = AutoencoderKLFlux2(
        in_channels=3, out_channels=3, latent_channels=s["latent"], block_out_channels=s["vae_channels"],
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=64, patch_size=(2, 2))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        vae.bn.running_mean.copy_(torch.randn(vae.bn.running_mean.shape, generator=generator) * 0.2)
        vae.bn.running_var.copy_(torch.rand(vae.bn.running_var.shape, generator=generator) + 0.5)
    return vae


def _scheduler():
    """FLUX's scheduler config; the FLUX.2 pipelines pass their own mu, so dynamic shifting is on."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


def _save(pipe, out_dir, readme: str, **save_options) -> Path:
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), **save_options)
    if readme:
        (tmp / "README.md").write_text(readme, encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)  # a half-written model is never mistaken for a complete one
    return out


# --------------------------------------------------------------------------- FLUX.2 [dev]

DEV_TEXT_LAYERS = 31  # Flux2Pipeline reads hidden states 10, 20 and 30
# Mistral Small 3.x: the system prompt, then [INST] … [/INST]; Flux2Pipeline sends content as a
# list of {"type": "text"} parts, with add_generation_prompt=False.
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- set text = namespace(v='') -%}"
    "{%- if message['content'] is string -%}{%- set text.v = message['content'] -%}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{%- set text.v = text.v + part['text'] -%}"
    "{%- elif part['type'] == 'image' -%}{%- set text.v = text.v + '[IMG]' -%}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}{{ '[SYSTEM_PROMPT]' + text.v + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' -%}{{ '[INST]' + text.v + '[/INST]' }}"
    "{%- else -%}{{ text.v + eos_token }}{%- endif -%}"
    "{%- endfor -%}"
)
MISTRAL_SPECIALS = ["[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]


def mistral_processor(vocab_size: int = 500):
    """A PixtralProcessor (what Mistral Small 3.x checkpoints ship as their tokenizer), built offline."""
    from transformers import LlamaTokenizer, PixtralImageProcessor, PixtralProcessor

    tokenizer = LlamaTokenizer().train_new_from_iterator(_corpus(), vocab_size=vocab_size)
    tokenizer.add_special_tokens({"additional_special_tokens": MISTRAL_SPECIALS})
    tokenizer.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"})
    tokenizer.model_max_length = 131072
    return PixtralProcessor(image_processor=PixtralImageProcessor(size={"longest_edge": 64}, patch_size=8),
                            tokenizer=tokenizer, patch_size=8, spatial_merge_size=1, chat_template=MISTRAL_CHAT_TEMPLATE)


def build_dev(out_dir: str | Path, size: str = "tiny", seed: int = 0, readme: str = "") -> Path:
    """Write a Flux2Pipeline with random weights (guidance-embedding transformer, Mistral3 text model)."""
    from diffusers import Flux2Pipeline
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    s = _sizes(size)
    processor = mistral_processor()
    tok = processor.tokenizer
    transformer = _transformer(s, seed, guidance_embeds=True)
    vae = _vae(s, seed)
    text = Mistral3ForConditionalGeneration(Mistral3Config(
        text_config=dict(model_type="mistral", vocab_size=len(tok), hidden_size=s["text_hidden"],
                         intermediate_size=s["text_hidden"] * 2, num_hidden_layers=DEV_TEXT_LAYERS,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=4096,
                         rms_norm_eps=1e-5, rope_theta=1000000000.0, sliding_window=None, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(model_type="pixtral", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, image_size=64, patch_size=8, num_channels=3, head_dim=8),
        image_token_index=tok.convert_tokens_to_ids("[IMG]"), spatial_merge_size=1, vision_feature_layer=-1,
        projector_hidden_act="gelu", multimodal_projector_bias=False))
    pipe = Flux2Pipeline(scheduler=_scheduler(), vae=vae, text_encoder=text, tokenizer=processor,
                         transformer=transformer)
    return _save(pipe, out_dir, readme)
