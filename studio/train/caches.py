"""Content-addressed caches of what the frozen encoders produce: text embeddings and image latents.

A key is a hash of every input (caption or image digest and bucket, the encoder's identity, the
token limit), so a changed caption, image, resolution or model misses and everything else hits.
The family encodes; this module only decides what is encoded once and kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..data.dataset import TensorCache, component_fingerprint, load_control_pixels, load_pixels


@dataclass
class Caches:
    text: dict[str, dict]                      # caption → the family's cached text tensors
    latents: dict[int, torch.Tensor]           # sample id → latent distribution parameters (empty: encode per step)
    augment: object | None                     # the augmentation pipeline (latents are then never cached)
    stats: dict[str, int] = field(default_factory=dict)
    controls: dict[int, torch.Tensor] = field(default_factory=dict)  # sample id → its control's latent parameters


def encode_text(cfg, family, info, pipe, captions: list[str], device, data_dir: Path, warn, stats: dict) -> dict:
    """Caption → the family's text tensors; cached on disk by caption and text-encoder identity."""
    cache = TensorCache(data_dir / "cache" / "text") if cfg.dataset.cache_text_embeddings else None
    ident = component_fingerprint(info.path, "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    limit = info.token_limit
    out = {}
    family.text_encoders_to(pipe, device)
    for caption in dict.fromkeys(captions):
        key = TensorCache.key("text", ident, limit, caption)
        hit = cache.get(key) if cache else None
        if hit is None:
            tokens = family.count_tokens(pipe, caption)
            if tokens > limit:
                warn("PROMPT_TRUNCATED", f"Caption {caption[:60]!r}… has {tokens} {family.tokens_name} tokens; only the first "
                                         f"{limit} are used.")
            hit = family.encode_text(pipe, caption, device, limit)
            if cache:
                cache.put(key, hit)
        out[caption] = hit
    if cache:
        stats.update(text_hits=cache.hits, text_misses=cache.misses)
    return out


def encode_image(family, pipe, sample, augment, device) -> torch.Tensor:
    return family.encode_image(pipe, load_pixels(sample, augment).unsqueeze(0).to(device))


def encode_control(family, pipe, sample, device) -> torch.Tensor:
    """A sample's control image through its target's geometry → latent distribution parameters."""
    return family.encode_image(pipe, load_control_pixels(sample).unsqueeze(0).to(device))


def build_caches(cfg, family, info, pipe, samples, prompts: list[str], device, data_dir: Path, warn,
                 between: Callable[[], None]) -> Caches:
    """Encode every caption, prompt and (unless augmenting) image once, then free the text encoders.
    `between()` runs after each image (the engine checks for a stop signal there)."""
    stats: dict[str, int] = {}
    augment = None
    if cfg.dataset.augmentations:
        from ..data.augment import build_augmentations
        augment = build_augmentations([a.__dict__ for a in cfg.dataset.augmentations])
        warn("CACHE_BYPASSED", "Augmentation is on, so latents are encoded every step instead of cached "
                               "(a cached latent would be the un-augmented image).")
    text = encode_text(cfg, family, info, pipe, [s.caption for s in samples] + [""] + prompts, device, data_dir,
                       warn, stats)
    latents: dict[int, torch.Tensor] = {}
    if cfg.dataset.cache_latents and augment is None:
        cache = TensorCache(data_dir / "cache" / "latents")
        vae_ident = component_fingerprint(info.path, "vae")
        pipe.vae.to(device)
        for s in samples:
            key = TensorCache.key("latent", vae_ident, s.digest, s.bucket)
            hit = cache.get(key)
            if hit is None:
                hit = {"parameters": encode_image(family, pipe, s, None, device)}
                cache.put(key, hit)
            latents[s.id] = hit["parameters"]
            between()
        stats.update(latent_hits=cache.hits, latent_misses=cache.misses)
    controls: dict[int, torch.Tensor] = {}
    if cfg.dataset.cache_latents and any(s.control for s in samples):
        # A control's geometry follows its target (size and bucket), so both digests are in the key.
        cache = TensorCache(data_dir / "cache" / "latents")
        vae_ident = component_fingerprint(info.path, "vae")
        pipe.vae.to(device)
        for s in samples:
            key = TensorCache.key("control", vae_ident, s.control_digest, s.digest, s.bucket)
            hit = cache.get(key)
            if hit is None:
                hit = {"parameters": encode_control(family, pipe, s, device)}
                cache.put(key, hit)
            controls[s.id] = hit["parameters"]
            between()
        stats.update(control_hits=cache.hits, control_misses=cache.misses)
    family.free_text_encoders(pipe, keep_trainable=cfg.lora.train_text_encoder)
    if device.type == "cuda":
        pipe.vae.to("cpu")  # back on the GPU only to sample
        torch.cuda.empty_cache()
    return Caches(text, latents, augment, stats, controls)
