"""Content-addressed caches of what the frozen encoders produce: text embeddings and image latents.

A key is a hash of every input (caption or image digest and bucket, the encoder's identity, the
token limit), so a changed caption, image, resolution or model misses and everything else hits.
The family encodes; this module only decides what is encoded once and kept.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..core.text_encoders import GIB, encoders_fit, needed_bytes
from ..data.dataset import TensorCache, component_fingerprint, load_control_pixels, load_pixels


@dataclass
class Caches:
    text: dict[str, dict]                      # caption → the family's cached text tensors
    latents: dict[int, torch.Tensor]           # sample id → latent distribution parameters (empty: encode per step)
    augment: object | None                     # the augmentation pipeline (latents are then never cached)
    stats: dict[str, int] = field(default_factory=dict)
    controls: dict[int, torch.Tensor] = field(default_factory=dict)  # sample id → its control's latent parameters


def gpu_free_bytes(device) -> int:
    """Free memory of a CUDA device now (what this and other processes hold is not free)."""
    return torch.cuda.mem_get_info(device)[0]


def module_bytes(modules) -> int:
    """Bytes of the modules' weights and buffers, in the dtype they are loaded in."""
    return sum(t.numel() * t.element_size() for m in modules for t in itertools.chain(m.parameters(), m.buffers()))


def caption_device(encoder_bytes: int, device, free_bytes: int | None) -> torch.device:
    """Where captions are encoded: on `device`, unless it is a GPU whose free memory the text
    encoders do not fit with room to run (core/text_encoders.py); then on the CPU."""
    device = torch.device(device)
    if device.type != "cuda" or encoders_fit(encoder_bytes, free_bytes):
        return device
    return torch.device("cpu")


def encoders_on_cpu_message(names: list[str], encoder_bytes: int, free_bytes: int) -> str:
    what = " and ".join(names) + (" text encoders" if len(names) > 1 else " text encoder")
    return (f"The {what} ({encoder_bytes / GIB:.1f} GB) {'do' if len(names) > 1 else 'does'} not fit in the GPU's "
            f"{free_bytes / GIB:.1f} GB free (with room to run, {needed_bytes(encoder_bytes) / GIB:.1f} GB): captions "
            "are encoded on the CPU, once (they are cached) — slower, not wrong.")


def encode_text(cfg, family, info, pipe, captions: list[str], device, data_dir: Path, warn, stats: dict,
                free_memory: Callable[[torch.device], int] = gpu_free_bytes) -> dict:
    """Caption → the family's text tensors; cached on disk by caption and text-encoder identity.
    The encoders run on the GPU when they fit its free memory (`free_memory(device)`), else on the CPU."""
    cache = TensorCache(data_dir / "cache" / "text") if cfg.dataset.cache_text_embeddings else None
    ident = component_fingerprint(info.path, "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
    limit = info.token_limit
    out = {}
    encoders = family.text_encoder_modules(pipe)
    size = module_bytes(encoders.values())
    free = free_memory(device) if device.type == "cuda" else None
    where = caption_device(size, device, free)
    if where != device:
        warn("TEXT_ENCODERS_ON_CPU", encoders_on_cpu_message(list(encoders), size, free))
    family.text_encoders_to(pipe, where)
    for caption in dict.fromkeys(captions):
        key = TensorCache.key("text", ident, limit, caption)
        hit = cache.get(key) if cache else None
        if hit is None:
            tokens = family.count_tokens(pipe, caption)
            if tokens > limit:
                warn("PROMPT_TRUNCATED", f"Caption {caption[:60]!r}… has {tokens} {family.tokens_name} tokens; only the first "
                                         f"{limit} are used.")
            hit = family.encode_text(pipe, caption, where, limit)
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
                 between: Callable[[], None], free_memory: Callable[[torch.device], int] = gpu_free_bytes) -> Caches:
    """Encode every caption, prompt and (unless augmenting) image once, then free the text encoders.
    `between()` runs after each image (the engine checks for a stop signal there). An unquantised
    transformer is still on the CPU here (lora.place moves it after), so the encoders have the GPU
    to themselves; a quantised one was placed on the GPU at load and counts against its free memory."""
    stats: dict[str, int] = {}
    augment = None
    if cfg.dataset.augmentations:
        from ..data.augment import build_augmentations
        augment = build_augmentations([a.__dict__ for a in cfg.dataset.augmentations])
        warn("CACHE_BYPASSED", "Augmentation is on, so latents are encoded every step instead of cached "
                               "(a cached latent would be the un-augmented image).")
    text = encode_text(cfg, family, info, pipe, [s.caption for s in samples] + [""] + prompts, device, data_dir,
                       warn, stats, free_memory)
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
