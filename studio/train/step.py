"""The training step: one flow-matching loss on a batch, and the per-block gradient norms.

noisy = (1−t)·x + t·ε, target ε − x, MSE on the family's packed tokens. The family turns
latents, noise level and text into the transformer's inputs; this module owns the recipe.
"""

from __future__ import annotations

import math

import torch

from .caches import encode_control, encode_image
from .timesteps import sample_timesteps


def text_batch(state, ids: list[int]) -> dict:
    """The batch's text conditioning, with captions dropped (replaced by "") at the configured rate."""
    drop = state.cfg.dataset.caption_dropout
    dropped = torch.rand(len(ids), generator=state.host_generator).tolist() if drop > 0 else [1.0] * len(ids)
    captions = ["" if d < drop else state.samples[i].caption for d, i in zip(dropped, ids)]
    return state.family.text_inputs(state.pipe, [state.text[c] for c in captions], captions,
                                    state.text_encoder, state.device)


def latent_batch(state, ids: list[int]) -> torch.Tensor:
    """Latents of the batch: drawn from the cached distributions, or encoded now when not cached."""
    device = state.device
    if state.caches.latents:
        params = torch.stack([state.caches.latents[i] for i in ids])
        if device.type == "cuda":  # pinned: the copy to the GPU overlaps with compute
            params = params.pin_memory()
        params = params.to(device, non_blocking=True)
    else:
        state.pipe.vae.to(device)
        params = torch.stack([encode_image(state.family, state.pipe, state.samples[i], state.caches.augment, device)
                              for i in ids]).to(device)
    return state.family.latents(state.pipe, params, state.generator, device)


def reference_batch(state, ids: list[int]) -> torch.Tensor | None:
    """Reference (control) latents of an edit batch, or None when the samples have no control image."""
    if state.samples[ids[0]].control is None:
        return None
    device = state.device
    if state.caches.controls:
        params = torch.stack([state.caches.controls[i] for i in ids]).to(device, non_blocking=True)
    else:
        state.pipe.vae.to(device)
        params = torch.stack([encode_control(state.family, state.pipe, state.samples[i], device) for i in ids])
    return state.family.reference_latents(state.pipe, params, device)


def loss(state, ids: list[int]) -> torch.Tensor:
    """One flow-matching loss on the batch of sample `ids`."""
    latents = latent_batch(state, ids)
    reference = reference_batch(state, ids)
    text = text_batch(state, ids)
    dtype = state.accelerator.unwrap_model(state.model).dtype
    guidance = state.family.training_guidance(state.info, state.cfg.training.guidance)
    return flow_matching_loss(state.model, state.family, state.cfg, latents, text, guidance, state.generator,
                              state.device, dtype, reference=reference)


def flow_matching_loss(model, family, cfg, latents, text: dict, guidance, generator, device, dtype,
                       reference=None) -> torch.Tensor:
    """The loss of `model` on normalised latents and text conditioning: noise level t by the
    configured scheme, noisy = (1−t)·x + t·ε, target ε − x, MSE in the family's packed layout.
    `reference`: an edit family's reference latents; they condition the prediction, the loss is
    on the target's tokens only. (bench/gpu_flux.py times exactly this on the full-size model.)"""
    noise = torch.randn(latents.shape, generator=generator, device=device)
    t = sample_timesteps(cfg, latents.shape[0], family.image_seq_len(latents), generator, device,
                         family.resolution_shift)
    t_ = t.view(-1, 1, 1, 1)
    noisy = (1 - t_) * latents + t_ * noise
    kwargs, target = family.model_inputs(noisy, noise - latents, t, text, guidance, dtype, reference=reference)
    pred = family.prediction(model(**kwargs), target)
    return torch.nn.functional.mse_loss(pred.float(), target.float())


def block_norms(state) -> dict[str, float]:
    """Gradient norm per block (the Monitor's heat map), by the family's block names."""
    sums: dict[str, float] = {}
    for name, p in state.accelerator.unwrap_model(state.model).named_parameters():
        if p.grad is not None:
            block = state.family.block_of(name)
            sums[block] = sums.get(block, 0.0) + float(p.grad.float().pow(2).sum())
    return {k: math.sqrt(v) for k, v in sums.items()}
