"""Noise levels of the flow-matching step: t ∈ (0, 1) per sample, by the configured scheme."""

from __future__ import annotations

import torch

from ..config import TrainConfig


def sample_timesteps(cfg: TrainConfig, batch_size: int, image_seq_len: int,
                     generator: torch.Generator, device, resolution_shift=None) -> torch.Tensor:
    """t ∈ (0, 1) per sample, by the configured scheme (see FLUX_NOTES: the field's choices).
    `resolution_shift(image_seq_len)`: the model family's shift, which the resolution_shift scheme needs."""
    from diffusers.training_utils import compute_density_for_timestep_sampling

    t_cfg = cfg.training
    scheme = t_cfg.timestep_sampling
    if scheme == "uniform":
        return compute_density_for_timestep_sampling("uniform", batch_size, device=device, generator=generator)
    if scheme == "logit_normal":
        return compute_density_for_timestep_sampling(
            "logit_normal", batch_size, logit_mean=t_cfg.logit_mean, logit_std=t_cfg.logit_std,
            device=device, generator=generator)
    # sigmoid, shift and resolution_shift all start from sigmoid(N(0, std)).
    t = torch.sigmoid(torch.randn((batch_size,), device=device, generator=generator) * t_cfg.logit_std)
    if scheme == "sigmoid":
        return t
    if scheme == "shift":
        shift = t_cfg.shift
    else:
        if resolution_shift is None:
            raise ValueError("timestep_sampling resolution_shift needs the model family's resolution_shift")
        shift = resolution_shift(image_seq_len)
    return shift * t / (1 + (shift - 1) * t)
