"""Settings that each parse but do not work together, found without a model: `problems(cfg)`
returns them as `Problem`s (studio/config/problems.py), which the command line prints in English
and the UI renders in its language."""

from __future__ import annotations

import dataclasses

from .docs import settings
from .problems import ConfigError, Problem
from .schema import TrainConfig

# What to use on a CPU instead of a choice that needs CUDA (gpu_only_settings words it in full).
_CPU_ALTERNATIVE = {"fp16": "no", "int8": "fp32", "nf4": "fp32", "fp8": "fp32", "adamw8bit": "adamw"}


def _sizes(cfg: TrainConfig) -> list[Problem]:
    d, sa, p = cfg.dataset, cfg.sample, []
    for res in [d.resolution, *d.extra_resolutions]:
        if res < 64 or res % 16:
            p.append(Problem("dataset.resolution", "multiple_of_16",
                             {"value": res, "suggest": max(64, round(res / 16) * 16)}))
        if res > 4096:
            p.append(Problem("dataset.resolution", "resolution_too_large", {"value": res}))
    for key, value in (("sample.width", sa.width), ("sample.height", sa.height)):
        if value < 64 or value % 16 or value > 4096:
            p.append(Problem(key, "sample_size", {"value": value}))
    return p


def _value(cfg: TrainConfig, dotted: str):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _counts(cfg: TrainConfig) -> list[Problem]:
    lo, s, sa, sv = cfg.lora, cfg.schedule, cfg.sample, cfg.save
    # The schema's lower bounds of 1 (rank, steps, batch size, ...).
    at_least_1 = [(item.key, _value(cfg, item.key)) for item in settings() if item.bounds[0] == 1]
    p = [Problem(key, "at_least_1", {"value": value}) for key, value in at_least_1 if value < 1]
    if lo.rank > 1024:
        p.append(Problem("lora.rank", "rank_too_large", {"value": lo.rank}))
    if s.max_steps > 1_000_000:
        p.append(Problem("schedule.max_steps", "too_many_steps", {"value": s.max_steps}))
    for key, value in (("sample.every", sa.every), ("save.every", sv.every), ("schedule.warmup_steps",
                       s.warmup_steps), ("log.block_norms_every", cfg.log.block_norms_every),
                       ("save.keep_last", sv.keep_last)):  # keep_last 0: every checkpoint is kept
        if value < 0:
            p.append(Problem(key, "zero_or_more", {"value": value}))
    if lo.alpha <= 0:
        p.append(Problem("lora.alpha", "alpha_positive", {"value": lo.alpha}))
    for key, value in (("lora.dropout", lo.dropout), ("dataset.caption_dropout", cfg.dataset.caption_dropout)):
        if not 0.0 <= value < 1.0:
            p.append(Problem(key, "unit_interval", {"value": value}))
    for key, blocks in (("lora.double_blocks", lo.double_blocks), ("lora.single_blocks", lo.single_blocks)):
        if blocks is not None and any(b < 0 for b in blocks):
            p.append(Problem(key, "block_numbers"))
    return p


def _optimisation(cfg: TrainConfig) -> list[Problem]:
    o, s, t, p = cfg.optimizer, cfg.schedule, cfg.training, []
    lrs = {"optimizer.lr": o.lr, "optimizer.double_blocks_lr": o.double_blocks_lr,
           "optimizer.single_blocks_lr": o.single_blocks_lr, "optimizer.text_encoder_lr": o.text_encoder_lr}
    p += [Problem(key, "bad_lr", {"value": value}) for key, value in lrs.items()
          if value is not None and not (0 < value <= 10)]
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        p.append(Problem("optimizer.betas", "betas", {"value": o.betas}))
    if o.max_grad_norm < 0:
        p.append(Problem("optimizer.max_grad_norm", "grad_norm"))
    if s.scheduler == "cyclic" and not 0 < s.cyclic_base_lr < s.cyclic_max_lr:
        p.append(Problem("schedule.cyclic_base_lr", "cyclic_lrs"))
    if s.scheduler == "cosine" and s.min_lr >= o.lr:
        p.append(Problem("schedule.min_lr", "min_lr", {"value": s.min_lr, "lr": o.lr}))
    if s.warmup_steps and s.warmup_steps >= s.max_steps and s.scheduler != "constant":
        p.append(Problem("schedule.warmup_steps", "warmup", {"warmup": s.warmup_steps, "steps": s.max_steps}))
    if t.timestep_sampling == "shift" and t.shift <= 0:
        p.append(Problem("training.shift", "shift_positive"))
    if t.logit_std <= 0:
        p.append(Problem("training.logit_std", "std_positive"))
    if not 0 < t.ema_decay < 1:
        p.append(Problem("training.ema_decay", "ema_decay"))
    if o.name == "prodigy" and o.lr < 0.1:
        p.append(Problem("optimizer.lr", "prodigy_lr", {"value": o.lr}))
    return p


def _hardware_and_names(cfg: TrainConfig) -> list[Problem]:
    m, sv, sa, p = cfg.memory, cfg.save, cfg.sample, []
    if cfg.dataset.augmentations:
        from studio.data.augment import validate_augmentations  # imports torchvision: only when used
        p += [Problem("dataset.augmentations", "augmentation", {"detail": msg}) for msg in
              validate_augmentations([dataclasses.asdict(a) for a in cfg.dataset.augmentations])]
    if not sv.run_name.strip() or any(c in sv.run_name for c in "/\\\0") or sv.run_name.startswith("."):
        p.append(Problem("save.run_name", "run_name", {"value": sv.run_name}))
    if m.tier == "cpu" or m.device == "cpu":
        p += [Problem(setting, "needs_gpu", {"value": value, "alternative": _CPU_ALTERNATIVE[value]})
              for setting, value, _ in gpu_only_settings(cfg)]
    if m.mixed_precision == "fp16" and m.base_precision == "bf16":
        p.append(Problem("memory.mixed_precision", "mixed_formats"))
    if not sa.prompts and sa.every:
        p.append(Problem("sample.prompts", "no_prompts"))
    return p


def _model(cfg: TrainConfig) -> list[Problem]:
    from studio.families.choice import accepted_names, lookup, nearest

    setting = cfg.model.family
    if setting.strip().lower() == "auto" or lookup(setting) is not None:
        return []
    suggestion = nearest(setting)
    return [Problem("model.family", "unknown_family_near" if suggestion else "unknown_family",
                    {"value": setting, "valid": ", ".join(accepted_names()), "suggestion": suggestion})]


def problems(cfg: TrainConfig) -> list[Problem]:
    """Everything in `cfg` that needs no model to be found wrong, each saying what to change."""
    return _model(cfg) + _sizes(cfg) + _counts(cfg) + _optimisation(cfg) + _hardware_and_names(cfg)


def validate(cfg: TrainConfig) -> list[str]:
    """problems(cfg) in English ('key: what to change')."""
    return [p.english() for p in problems(cfg)]


def gpu_only_settings(cfg: TrainConfig) -> list[tuple[str, str, str]]:
    """(setting, value, what to use on a CPU instead) for each choice in `cfg` that needs CUDA.

    validate refuses them when the CPU is asked for; the engine when `device: auto` finds no GPU.
    """
    m, found = cfg.memory, []
    if m.mixed_precision == "fp16":
        found.append(("memory.mixed_precision", "fp16", "use 'no' on CPU (or bf16)"))
    if m.base_precision in ("int8", "nf4"):
        found.append(("memory.base_precision", m.base_precision, "use fp32 on CPU (diffusers quantises with bitsandbytes on a GPU only)"))
    if m.base_precision == "fp8":
        found.append(("memory.base_precision", "fp8", "use fp32 on CPU"))
    if cfg.optimizer.name == "adamw8bit":
        found.append(("optimizer.name", "adamw8bit", "use adamw on CPU"))
    return found


def check(cfg: TrainConfig) -> TrainConfig:
    found = problems(cfg)
    if found:
        raise ConfigError(found)
    return cfg
