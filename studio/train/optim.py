"""Optimiser and learning-rate schedule: parameter groups per block kind, AdamW / 8-bit / Prodigy."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..models import require_package


def param_groups(cfg: TrainConfig, transformer: torch.nn.Module, text_encoder, block_of) -> list[dict]:
    """One parameter group per block kind (`block_of`: the model family's), each at its rate."""
    o = cfg.optimizer
    groups: dict[str, dict] = {}
    for name, p in transformer.named_parameters():
        if not p.requires_grad:
            continue
        kind = block_of(name).split(".")[0]
        lr = {"double": o.double_blocks_lr, "single": o.single_blocks_lr}.get(kind) or o.lr
        groups.setdefault(kind, {"params": [], "lr": lr, "name": kind})["params"].append(p)
    if text_encoder is not None:
        params = [p for p in text_encoder.parameters() if p.requires_grad]
        groups["text_encoder"] = {"params": params, "lr": o.text_encoder_lr or o.lr, "name": "text_encoder"}
    return list(groups.values())


def build_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    o = cfg.optimizer
    kwargs = dict(betas=tuple(o.betas), weight_decay=o.weight_decay, eps=o.eps)
    if o.name == "adamw":
        return torch.optim.AdamW(groups, fused=o.fused or None, **kwargs)
    if o.name == "adamw8bit":  # a CUDA GPU is checked for by the engine (config.gpu_only_settings)
        require_package("bitsandbytes", "optimizer.name adamw8bit")
        import bitsandbytes as bnb
        return bnb.optim.AdamW8bit(groups, **kwargs)
    require_package("prodigyopt", "optimizer.name prodigy")
    from prodigyopt import Prodigy
    return Prodigy(groups, betas=tuple(o.betas), weight_decay=o.weight_decay, safeguard_warmup=True,
                   use_bias_correction=True)


def build_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    from diffusers.optimization import get_polynomial_decay_schedule_with_warmup, get_scheduler

    s, steps = cfg.schedule, cfg.schedule.max_steps
    if s.scheduler == "cyclic":
        # Triangular cycling between two rates; the group rates scale in proportion.
        scale = [g["lr"] / cfg.optimizer.lr for g in optimizer.param_groups]
        return torch.optim.lr_scheduler.CyclicLR(
            optimizer, base_lr=[s.cyclic_base_lr * k for k in scale], max_lr=[s.cyclic_max_lr * k for k in scale],
            step_size_up=s.cyclic_step_size, mode="triangular", cycle_momentum=False)
    if s.scheduler == "cosine":
        # Warm-up, then cosine down to min_lr (diffusers' cosine always ends at 0).
        warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=max(s.warmup_steps, 1))
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(steps - s.warmup_steps, 1), eta_min=s.min_lr)
        return torch.optim.lr_scheduler.SequentialLR(optimizer, [warm, cos], milestones=[max(s.warmup_steps, 1)])
    kwargs = {}
    if s.scheduler == "cosine_with_restarts":
        kwargs["num_cycles"] = s.num_cycles
    if s.scheduler == "polynomial":
        return get_polynomial_decay_schedule_with_warmup(optimizer, s.warmup_steps, steps,
                                                         lr_end=s.poly_end_lr, power=s.poly_power)
    return get_scheduler(s.scheduler, optimizer, num_warmup_steps=s.warmup_steps,
                         num_training_steps=steps, **kwargs)
