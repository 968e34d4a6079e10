"""The model families in bench/gpu_flux.py: each family's transformer config (full size, or a tiny
one for the CPU smoke test), the shapes of its step's inputs, and its forward FLOPs.

- FLUX.1 [dev]/[schnell] and FLUX.1 Kontext share FLUX.1's transformer (gpu_flux.FULL / TINY and
  its analytic FLOPs formula). Kontext's step also carries reference-image tokens: one reference of
  the target's size doubles the image tokens, and the loss is on the target's tokens only.
- FLUX.2 [klein] / [dev]: the family's published config (`Family.full_config`); latents are the
  FLUX.2 VAE's 32 channels in 2x2 patches (128 per token, one token per 16x16 pixels); no pooled
  vector. FLOPs: 2 x tokens x the linear weights each token passes through (a double block's image
  and text streams each carry their own tokens, so half of its linear weights per token; a single
  block all of them; the LoRA's own A/B layers are linear layers of the block and counted alike)
  + 4·N²·D attention per block. The shared modulation layers run once per step and are left out,
  as are the embedders (under 1 %).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

FLUX1_LIKE = ("flux1", "flux1-kontext")


def family_of(name: str):
    from studio.families import get_family

    return get_family(name)


def default_variant(family) -> str:
    """The variant a LoRA is trained on: an undistilled base where the family has one."""
    names = list(family.variants)
    return next((n for n in names if n.startswith("base-")), "dev" if "dev" in names else names[0])


def transformer_config(family, variant: str, tiny: bool) -> dict:
    from bench.gpu_flux import FULL, TINY

    if family.name in FLUX1_LIKE:
        return {**(TINY if tiny else FULL), "guidance_embeds": family.variants[variant].guidance_embeds}
    if not tiny:
        return family.full_config(variant)
    with tempfile.TemporaryDirectory() as tmp:  # the family's own offline tiny model
        folder = family.build_tiny(Path(tmp) / "m", size="tiny", variant=variant)
        config = json.loads((Path(folder) / "transformer" / "config.json").read_text())
    return {k: v for k, v in config.items() if not k.startswith("_")}


def image_tokens(family, resolution: int) -> int:
    return (resolution // 16) ** 2


def make_inputs(family, cfg: dict, resolution: int, text_tokens: int, device: torch.device, seed: int):
    """(latents, text, reference or None) in the shapes the family's data pipeline gives."""
    g = torch.Generator(device).manual_seed(seed)
    if family.name in FLUX1_LIKE:
        shape = (1, cfg["in_channels"] // 4, resolution // 8, resolution // 8)  # packed 2x2 by the family
    else:
        shape = (1, cfg["in_channels"], resolution // 16, resolution // 16)   # already in 2x2 patches
    latents = torch.randn(shape, generator=g, device=device)
    text = {"embeds": torch.randn((1, text_tokens, cfg["joint_attention_dim"]), generator=g, device=device)}
    if "pooled_projection_dim" in cfg:
        text["pooled"] = torch.randn((1, cfg["pooled_projection_dim"]), generator=g, device=device)
    reference = torch.randn(shape, generator=g, device=device) if family.kind == "edit" else None
    return latents, text, reference


def forward_flops(family, cfg: dict, model, tokens: int, text_tokens: int, rank: int) -> float:
    """Forward FLOPs of one call, batch 1; `tokens`: every image token (target and references);
    `model` with its LoRA layers (FLUX.2: counted from its linear layers)."""
    from bench.gpu_flux import forward_flops as flux1_flops

    if family.name in FLUX1_LIKE:
        return flux1_flops(cfg, tokens, text_tokens, rank)
    width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    n = tokens + text_tokens

    def linear_weights(blocks) -> int:
        return sum(m.in_features * m.out_features for b in blocks for m in b.modules()
                   if isinstance(m, torch.nn.Linear))

    if hasattr(model, "transformer_blocks"):  # FLUX.2: joint blocks, half their weights per token
        double = linear_weights(model.transformer_blocks) / max(len(model.transformer_blocks), 1)
    else:  # FLUX.3: per-mode blocks, the image's and the text's (its reference-image blocks stay idle)
        double = (linear_weights(model.mode_blocks["image"]) + linear_weights(model.txt_mode_blocks)) / max(
            len(model.txt_mode_blocks), 1)
    single = linear_weights(model.single_transformer_blocks) / max(len(model.single_transformer_blocks), 1)
    layers = cfg["num_layers"] + cfg["num_single_layers"]
    return float(2 * n * (double / 2 * cfg["num_layers"] + single * cfg["num_single_layers"])
                 + 4 * n * n * width * layers)
