"""Stateless helpers of the training step: noise levels, LoRA targets, optimiser, schedule,
and atomic checkpoints. The engine calls them in pipeline order; each can be tested alone.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from .config import TrainConfig
from .diagnostics import StudioError
from .models import require_package

# --------------------------------------------------------------------------- noise levels


def sample_timesteps(cfg: TrainConfig, batch_size: int, image_seq_len: int,
                     generator: torch.Generator, device) -> torch.Tensor:
    """t ∈ (0, 1) per sample, by the configured scheme (see FLUX_NOTES: the field's choices)."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
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
    shift = t_cfg.shift if scheme == "shift" else math.exp(calculate_shift(image_seq_len))
    return shift * t / (1 + (shift - 1) * t)


# --------------------------------------------------------------------------- LoRA targets

TARGET_SETS = {
    "attention": ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                  "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"],
    # diffusers' train_dreambooth_lora_flux default; peft matches by suffix, so single blocks get q/k/v.
    "diffusers_default": ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
                          "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
                          "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"],
}
TARGET_SETS["all_linear"] = TARGET_SETS["diffusers_default"] + [
    "proj_mlp", "proj_out", "norm.linear", "norm1.linear", "norm1_context.linear"]


def target_modules(cfg: TrainConfig, transformer: torch.nn.Module) -> list[str]:
    """Full module names that get a LoRA (explicit names, so block selection is exact)."""
    suffixes = cfg.lora.target_modules or TARGET_SETS[cfg.lora.targets]
    chosen = {"transformer_blocks": cfg.lora.double_blocks, "single_transformer_blocks": cfg.lora.single_blocks}
    names = []
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        parts = name.split(".")
        if parts[0] not in chosen:
            continue  # LoRA on blocks only: embedders and the final layer stay frozen
        allowed = chosen[parts[0]]
        if allowed is not None and int(parts[1]) not in allowed:
            continue
        rest = ".".join(parts[2:])
        if any(rest == s or rest.endswith("." + s) for s in suffixes):
            names.append(name)
    return names


def check_model_fit(cfg: TrainConfig, transformer: torch.nn.Module, names: list[str]) -> None:
    """Problems that only the model can reveal, raised before training starts."""
    counts = {"transformer_blocks": len(transformer.transformer_blocks),
              "single_transformer_blocks": len(transformer.single_transformer_blocks)}
    for key, blocks in (("double_blocks", cfg.lora.double_blocks), ("single_blocks", cfg.lora.single_blocks)):
        limit = counts["transformer_blocks" if key == "double_blocks" else "single_transformer_blocks"]
        bad = [b for b in (blocks or []) if b >= limit]
        if bad:
            raise StudioError("BLOCK_OUT_OF_RANGE", f"lora.{key}: {bad} do not exist; this model has "
                              f"{limit} {key.replace('_', ' ')} (0–{limit - 1}).")
    if not names:
        raise StudioError("CONFIG_INVALID", "No layer matches the LoRA targets "
                          f"{cfg.lora.target_modules or cfg.lora.targets}; check lora.target_modules.")
    modules = dict(transformer.named_modules())
    smallest = min(names, key=lambda n: min(modules[n].in_features, modules[n].out_features))
    limit = min(modules[smallest].in_features, modules[smallest].out_features)
    if cfg.lora.rank > limit:
        raise StudioError("RANK_TOO_LARGE", f"lora.rank {cfg.lora.rank} is larger than {smallest} allows "
                          f"({modules[smallest].in_features}→{modules[smallest].out_features}); use "
                          f"a rank of at most {limit}.")


def block_of(param_name: str) -> str:
    """'transformer_blocks.3.attn…' → 'double.3'; 'single_transformer_blocks.10…' → 'single.10'."""
    parts = param_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "transformer_blocks":
            return f"double.{parts[i + 1]}"
        if part == "single_transformer_blocks":
            return f"single.{parts[i + 1]}"
    return "text_encoder" if "text_model" in param_name else "other"


# --------------------------------------------------------------------------- optimiser and schedule


def param_groups(cfg: TrainConfig, transformer: torch.nn.Module, text_encoder=None) -> list[dict]:
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


# --------------------------------------------------------------------------- checkpoints

CHECKPOINT_PREFIX = "step"


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def write_checkpoint(checkpoints: Path, step: int, lora_state: dict, train_state: dict,
                     keep_last: int, before_commit: Callable[[Path], None] | None = None,
                     config_yaml: str = "") -> Path:
    """Write into a temp folder on the same filesystem, then rename: a crash or a full disk
    leaves the previous checkpoint untouched. Old checkpoints are pruned only afterwards.
    `before_commit(temp_folder)` runs when every file is written; if it raises, nothing is kept.
    `config_yaml`, the settings the state was trained with, is kept beside it (studio.resume)."""
    from safetensors.torch import save_file

    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"{CHECKPOINT_PREFIX}{step:06d}"
    tmp = checkpoints / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in lora_state.items()}, str(tmp / "lora.safetensors"))
        torch.save(train_state, tmp / "state.pt")
        if config_yaml:
            (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps({"step": step, "complete": True}))
        _fsync_tree(tmp)
        if before_commit is not None:
            before_commit(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(checkpoints)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(checkpoints: Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written temp folders are ignored)."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir()
             if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    """Only our own checkpoints are read, and only with weights_only loading: no pickled code."""
    from safetensors.torch import load_file

    lora = load_file(str(path / "lora.safetensors"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    return lora, state


def latest_checkpoint(checkpoints: Path) -> tuple[Path, dict, dict] | None:
    for path in reversed(list_checkpoints(checkpoints)):
        try:
            lora, state = read_checkpoint(path)
            return path, lora, state
        except Exception:  # a damaged checkpoint: fall back to the one before
            continue
    return None
