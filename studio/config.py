"""`TrainConfig`: the one contract between the CLI, the UI and the worker.

Every field has a default and a one-line help text (the UI shows it). A config loads from
and saves to YAML and round-trips exactly; unknown keys and wrong types are rejected with a
message naming the key and the nearest valid one. No torch import here: the UI loads this
module at start-up.
"""

from __future__ import annotations

import copy
import math
import re
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .config_yaml import ConfigError, parse_yaml, read_text  # noqa: F401  (re-exported)

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = REPO_ROOT / "presets"
from studio.core.vocab import MEMORY_TIERS  # noqa: E402  (the one tier order)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A config field: its default and the one-line help text the UI and docs show."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: copy.deepcopy(d), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


# --------------------------------------------------------------------------- the schema


@dataclass
class ModelConfig:
    base: str = opt("demo", "Base FLUX.1 model: 'demo' (built-in, offline), a hub id such as "
                    "black-forest-labs/FLUX.1-dev, or a local folder in diffusers layout.")
    transformer_file: str = opt("", "Optional single-file FLUX transformer (.safetensors) that "
                                "replaces the transformer of `base` (the rest loads from `base`).")
    revision: str = opt("", "Hub revision (branch, tag or commit) when `base` is a hub id.")


@dataclass
class Augmentation:
    name: str = opt("horizontal_flip", "Operation: color_jitter, horizontal_flip, random_crop, "
                    "rotation, elastic, gaussian_blur, grayscale.")
    params: dict[str, Any] = opt({}, "Keyword arguments of the operation.")
    prob: float = opt(0.5, "Probability of applying the operation to an image.")


@dataclass
class DatasetConfig:
    path: str = opt("", "Folder of training images with same-name .txt captions.")
    trigger_word: str = opt("", "Word that calls up the LoRA; put in captions and sample prompts.")
    default_caption: str = opt("", "Caption for images without a .txt file ('' = trigger word).")
    resolution: int = opt(512, "Training resolution in pixels (buckets keep area ≈ resolution²); "
                          "a multiple of 16.")
    extra_resolutions: list[int] = opt([], "More resolutions to train at as well "
                                       "(multi-resolution training, each a multiple of 16).")
    buckets: bool = opt(True, "Aspect-ratio buckets: keep each image's shape instead of "
                        "cropping to a square.")
    repeats: int = opt(1, "How many times each image appears per epoch.")
    caption_dropout: float = opt(0.0, "Probability of training a step with an empty caption "
                                 "(helps the LoRA work without its trigger word).")
    cache_latents: bool = opt(True, "Encode each image once and cache its latents on disk.")
    cache_text_embeddings: bool = opt(True, "Encode each caption once and cache its text "
                                      "embeddings, so the text encoders can leave memory.")
    augmentations: list[Augmentation] = opt([], "Image augmentations, each with its own "
                                            "probability (bypasses the latent cache).")


TargetSet = Literal["attention", "diffusers_default", "all_linear"]


@dataclass
class LoraConfig:
    rank: int = opt(16, "LoRA rank: capacity of the adapter (4–64 typical).")
    alpha: float = opt(16.0, "LoRA alpha: the adapter's output is scaled by alpha/rank.")
    dropout: float = opt(0.0, "Dropout on the LoRA path during training.")
    targets: TargetSet = opt("diffusers_default", "Which layers get LoRA: attention, "
                             "diffusers_default (attention + double-block MLPs), or all_linear "
                             "(also single blocks' MLP and modulation).")
    target_modules: list[str] = opt([], "Explicit module-name suffixes; overrides `targets`.")
    double_blocks: Optional[list[int]] = opt(None, "Only these double-stream blocks "
                                             "(null = all).")
    single_blocks: Optional[list[int]] = opt(None, "Only these single-stream blocks "
                                             "(null = all).")
    train_text_encoder: bool = opt(False, "Also train a LoRA on the CLIP text encoder.")
    text_encoder_rank: int = opt(8, "Rank of the CLIP text-encoder LoRA.")
    text_encoder_alpha: float = opt(8.0, "Alpha of the CLIP text-encoder LoRA.")


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "adamw8bit", "prodigy"] = opt(
        "adamw", "Optimiser: adamw, adamw8bit (bitsandbytes, CUDA only) or prodigy "
        "(learning-rate free; use lr 1.0).")
    lr: float = opt(1e-4, "Learning rate of the transformer LoRA.")
    double_blocks_lr: Optional[float] = opt(None, "Learning rate for double-stream blocks "
                                            "(null = lr).")
    single_blocks_lr: Optional[float] = opt(None, "Learning rate for single-stream blocks "
                                            "(null = lr).")
    text_encoder_lr: Optional[float] = opt(None, "Learning rate of the CLIP LoRA (null = lr).")
    weight_decay: float = opt(1e-4, "AdamW weight decay.")
    betas: list[float] = opt([0.9, 0.999], "Adam betas (two numbers).")
    eps: float = opt(1e-8, "Adam epsilon.")
    max_grad_norm: float = opt(1.0, "Clip the gradient norm to this value (0 = off).")
    fused: bool = opt(False, "Fused AdamW kernel (CUDA).")


Scheduler = Literal["constant", "constant_with_warmup", "cosine", "cosine_with_restarts",
                    "cyclic", "polynomial"]


@dataclass
class ScheduleConfig:
    max_steps: int = opt(1000, "Optimiser steps to train.")
    scheduler: Scheduler = opt("constant_with_warmup", "Learning-rate schedule.")
    warmup_steps: int = opt(20, "Linear warm-up steps at the start.")
    min_lr: float = opt(0.0, "Cosine: the learning rate at the end.")
    num_cycles: int = opt(1, "Cosine with restarts: number of restarts.")
    cyclic_base_lr: float = opt(1e-5, "Cyclic (triangular): the low learning rate.")
    cyclic_max_lr: float = opt(1e-4, "Cyclic (triangular): the high learning rate.")
    cyclic_step_size: int = opt(100, "Cyclic: steps from low to high.")
    poly_power: float = opt(1.0, "Polynomial: the decay power.")
    poly_end_lr: float = opt(1e-7, "Polynomial: the learning rate at the end.")


Timesteps = Literal["uniform", "sigmoid", "logit_normal", "shift", "resolution_shift"]


@dataclass
class TrainingConfig:
    batch_size: int = opt(1, "Images per step on each device.")
    gradient_accumulation: int = opt(1, "Steps whose gradients add up before one update.")
    seed: int = opt(42, "Seed for data order, noise and timesteps (runs are reproducible).")
    timestep_sampling: Timesteps = opt("shift", "How training picks noise levels.")
    shift: float = opt(3.1582, "Shift value for `shift` sampling.")
    logit_mean: float = opt(0.0, "Mean for logit_normal sampling.")
    logit_std: float = opt(1.0, "Standard deviation for logit_normal / sigmoid sampling.")
    guidance: Optional[float] = opt(None, "Guidance value fed to guidance-distilled models "
                                    "(dev) while training; null = 1.0, as the field trains.")
    ema: bool = opt(False, "Keep an exponential moving average of the LoRA weights and save it.")
    ema_decay: float = opt(0.99, "EMA decay per step.")


@dataclass
class MemoryConfig:
    tier: Literal["auto", "24gb", "16gb", "12gb", "8gb", "cpu"] = opt(
        "auto", "Memory tier: auto picks from the detected GPU; cpu runs fp32 without a GPU.")
    device: Literal["auto", "cuda", "cpu"] = opt("auto", "Where to train.")
    mixed_precision: Literal["no", "bf16", "fp16"] = opt("no", "Mixed precision "
                                                        "(fp16 uses loss scaling; GPU only).")
    base_precision: Literal["auto", "fp32", "bf16", "int8", "fp8", "nf4"] = opt(
        "auto", "Storage of the frozen base transformer: auto follows mixed_precision.")
    gradient_checkpointing: bool = opt(False, "Recompute activations to save memory.")
    block_offload: bool = opt(False, "Keep transformer blocks on the CPU and stream them "
                              "to the GPU (8 GB tier).")
    compile: bool = opt(False, "torch.compile the transformer blocks (GPU).")
    num_gpus: int = opt(1, "GPUs to train on (data parallel through accelerate).")
    auto_retry_lower_tier: bool = opt(False, "After out-of-memory, retry at the next lower "
                                      "tier from the last checkpoint.")


@dataclass
class SampleConfig:
    prompts: list[str] = opt(["a photo of [trigger]"], "Prompts for samples during training; "
                             "[trigger] becomes the trigger word.")
    seed: int = opt(1234, "Seed of the first sample prompt (the next prompts use seed+1, …).")
    every: int = opt(250, "Make samples every N steps (0 = only at the end).")
    at_start: bool = opt(True, "Make samples before training (the base model's look).")
    steps: int = opt(20, "Denoising steps per sample.")
    guidance: float = opt(3.5, "Guidance for samples (dev models).")
    width: int = opt(512, "Sample width (multiple of 16).")
    height: int = opt(512, "Sample height (multiple of 16).")


@dataclass
class SaveConfig:
    output_dir: str = opt("output", "Folder that holds run folders.")
    run_name: str = opt("my-lora", "Name of the run and of the LoRA files.")
    every: int = opt(250, "Save a resumable checkpoint every N steps (0 = only at the end).")
    keep_last: int = opt(2, "How many checkpoints to keep.")
    comfyui: bool = opt(True, "Also write <name>-comfyui.safetensors (kohya layout for "
                        "ComfyUI and Forge).")


@dataclass
class LogConfig:
    every: int = opt(1, "Record the loss every N steps (fewer GPU syncs when larger).")
    block_norms_every: int = opt(10, "Record per-block gradient norms every N steps (0 = off).")


@dataclass
class TrainConfig:
    preset: str = opt("", "Preset this config started from (informational).")
    model: ModelConfig = opt(None, "Base model.", nested=True)
    dataset: DatasetConfig = opt(None, "Training images and captions.", nested=True)
    lora: LoraConfig = opt(None, "The LoRA adapter.", nested=True)
    optimizer: OptimizerConfig = opt(None, "Optimiser.", nested=True)
    schedule: ScheduleConfig = opt(None, "Steps and learning-rate schedule.", nested=True)
    training: TrainingConfig = opt(None, "Batching, noise levels, guidance, EMA.", nested=True)
    memory: MemoryConfig = opt(None, "Precision and memory savers.", nested=True)
    sample: SampleConfig = opt(None, "Samples during training.", nested=True)
    save: SaveConfig = opt(None, "Checkpoints and output files.", nested=True)
    log: LogConfig = opt(None, "Logging.", nested=True)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.metadata.get("nested") and getattr(self, f.name) is None:
                setattr(self, f.name, _hints(type(self))[f.name]())
        # Not a setting: why `resolve` chose a value the user did not set ({dotted key: reason}),
        # written as a comment beside that key in the YAML.
        self.notes: dict[str, str] = {}

    # ---- conversions

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if not self.notes:
            return text
        lines, section = [], ""
        for line in text.splitlines():
            key = line.strip().split(":", 1)[0]
            section = key if not line.startswith(" ") else section
            note = self.notes.get(f"{section}.{key}" if line.startswith("  ") and not line.startswith("   ") else key)
            lines.append(f"{line}  # {note}" if note else line)
        return "\n".join(lines) + "\n"

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_yaml(), encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return _build(cls, data, "")

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> "TrainConfig":
        return cls.from_dict(parse_yaml(text, source))

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_yaml(read_text(path), str(path))

    def run_dir(self) -> Path:
        return Path(self.save.output_dir) / self.save.run_name


# --------------------------------------------------------------------------- loading


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nearest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else f" Valid keys: {', '.join(valid)}."


def _build(cls: type, data: Any, prefix: str):
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} ({data!r:.60})")
    hints, names = _hints(cls), [f.name for f in dataclasses.fields(cls)]
    problems, values = [], {}
    for key, value in data.items():
        if key not in names:
            problems.append(f"{prefix}{key}: unknown setting.{_nearest(str(key), names)}")
            continue
        try:
            values[key] = _convert(value, hints[key], f"{prefix}{key}")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return cls(**values)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _convert(value: Any, tp: Any, key: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    wrong = ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r:.60}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key) if len(inner) == 1 else value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r:.60} is not allowed; choose one of "
                              f"{', '.join(map(str, args))}.{_nearest(str(value), list(map(str, args)))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise wrong
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise wrong
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        # PyYAML reads "1e-4" (no dot) as text; accept plain numbers written that way.
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise wrong
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise wrong


# --------------------------------------------------------------------------- presets


@dataclass
class Preset:
    name: str
    title: str
    description: str
    guidance: dict
    config: dict
    kind: str  # "subject" or "memory"


def _preset_path(name: str, kind: str) -> Path:
    folder = PRESETS_DIR / ("memory" if kind == "memory" else "")
    return folder / f"{name}.yaml"


def list_presets(kind: str = "subject") -> list[str]:
    folder = PRESETS_DIR / "memory" if kind == "memory" else PRESETS_DIR
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_preset(name: str, kind: str = "subject") -> Preset:
    path = _preset_path(name, kind)
    if not path.is_file():
        what = "memory tier" if kind == "memory" else "preset"
        known = [t for t in MEMORY_TIERS if t in list_presets(kind)] if kind == "memory" else list_presets(kind)
        match = difflib.get_close_matches(name, known, n=1, cutoff=0.5) if kind != "memory" else []
        hint = f" Did you mean '{match[0]}'?" if match else ""
        raise ConfigError(f"{what} '{name}' not found.{hint} Valid {what}s: {', '.join(known)}"
                          + (" (or auto: chosen from the detected GPU)." if kind == "memory" else "."))
    data = parse_yaml(read_text(path), str(path))
    unknown = set(data) - {"title", "description", "guidance", "config"}
    if unknown:
        raise ConfigError(f"{path}: unknown preset keys {sorted(unknown)}")
    preset = Preset(name=name, title=data.get("title", name), description=data.get("description", ""),
                    guidance=data.get("guidance") or {}, config=data.get("config") or {}, kind=kind)
    TrainConfig.from_dict(preset.config)  # a preset must itself be a valid partial config
    return preset


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """'lora.rank=32' → {'lora': {'rank': 32}}; the value is read as YAML (so 1e-4, true, [1,2])."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. lora.rank=32")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {text!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict = value
    for part in reversed(parts):
        out = {part: out}
    return out


# The smallest GPU (total GiB) each tier is chosen for. The FLUX.1 transformer has 11.90 B
# parameters, nearly all in linear layers: its weights alone take 22.2 GiB in bf16, 11.1 GiB in
# int8 and 5.7 GiB in NF4 (block scales included). bf16 therefore cannot train on a 24 GB card
# (23.99 GiB, before the CUDA context, LoRA, optimiser and activations): such a card gets the
# 16 GB tier. Below 11 GiB only the 8 GB tier's block offload fits.
TIER_MIN_GIB = (("24gb", 26.0), ("16gb", 15.0), ("12gb", 11.0))


def tier_for_memory(gib: float | None) -> str:
    """The memory tier for a GPU with `gib` GiB in total (None: no GPU, the cpu tier)."""
    if gib is None:
        return "cpu"
    return next((tier for tier, need in TIER_MIN_GIB if gib >= need), "8gb")


def detect_tier() -> str:
    """The memory tier for the first visible GPU, or 'cpu'."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if not torch.cuda.is_available():
        return "cpu"
    return tier_for_memory(torch.cuda.get_device_properties(0).total_memory / 2**30)


def resolve(user: dict | None = None, preset: str | None = None, tier: str | None = None,
            overrides: list[str] = ()) -> TrainConfig:
    """defaults < subject preset < memory-tier preset < user config < --set overrides."""
    user = copy.deepcopy(user or {})
    for item in overrides:
        user = deep_merge(user, parse_override(item))
    preset = preset or user.get("preset") or ""
    merged: dict = {}
    if preset:
        merged = deep_merge(merged, load_preset(preset).config)
        merged["preset"] = preset
    warmup_from = f"the {preset} preset's" if "warmup_steps" in merged.get("schedule", {}) else "the default"
    tier = tier or user.get("memory", {}).get("tier") or merged.get("memory", {}).get("tier") or "auto"
    if tier == "auto":
        tier = detect_tier()
    merged = deep_merge(merged, load_preset(tier, "memory").config)
    merged = deep_merge(merged, user)
    merged.setdefault("memory", {})["tier"] = tier
    if preset:
        merged["preset"] = preset
    cfg = TrainConfig.from_dict(merged)
    if "warmup_steps" not in (user.get("schedule") or {}):
        _fit_warmup(cfg, warmup_from)
    return cfg


def _fit_warmup(cfg: TrainConfig, chosen_by: str) -> None:
    """A preset's or the default warm-up that would not fit a short run becomes a tenth of the run.
    Only a warm-up the user set is an error (validate), since only then is it the user's choice."""
    s = cfg.schedule
    if s.scheduler == "constant" or s.max_steps < 1 or s.warmup_steps < s.max_steps:
        return
    chosen = s.warmup_steps
    s.warmup_steps = s.max_steps // 10
    cfg.notes["schedule.warmup_steps"] = (f"fitted to {s.max_steps} steps (a tenth of the run): "
                                          f"{chosen_by} {chosen} would not fit")


# --------------------------------------------------------------------------- validation


def validate(cfg: TrainConfig) -> list[str]:
    """Problems that need no model: each says what to change."""
    p: list[str] = []
    d, lo, o, s, t, m, sa, sv = (cfg.dataset, cfg.lora, cfg.optimizer, cfg.schedule, cfg.training,
                                 cfg.memory, cfg.sample, cfg.save)
    for res in [d.resolution, *d.extra_resolutions]:
        if res < 64 or res % 16:
            p.append(f"dataset.resolution: {res} must be a multiple of 16 and at least 64 "
                     f"(try {max(64, round(res / 16) * 16)}).")
        if res > 4096:
            p.append(f"dataset.resolution: {res} is larger than 4096; use 512, 768 or 1024.")
    for name, value in (("sample.width", sa.width), ("sample.height", sa.height)):
        if value < 64 or value % 16 or value > 4096:
            p.append(f"{name}: {value} must be a multiple of 16 between 64 and 4096.")
    positive = {"lora.rank": lo.rank, "schedule.max_steps": s.max_steps, "training.batch_size": t.batch_size,
                "training.gradient_accumulation": t.gradient_accumulation, "dataset.repeats": d.repeats,
                "sample.steps": sa.steps, "memory.num_gpus": m.num_gpus, "save.keep_last": sv.keep_last,
                "log.every": cfg.log.every}
    for key, value in positive.items():
        if value < 1:
            p.append(f"{key}: must be at least 1 (got {value}).")
    if lo.rank > 1024:
        p.append(f"lora.rank: {lo.rank} is far too large; 4–128 is the useful range.")
    if s.max_steps > 1_000_000:
        p.append(f"schedule.max_steps: {s.max_steps} is too many; FLUX LoRAs need 500–5000.")
    for key, value in (("sample.every", sa.every), ("save.every", sv.every), ("schedule.warmup_steps",
                       s.warmup_steps), ("log.block_norms_every", cfg.log.block_norms_every)):
        if value < 0:
            p.append(f"{key}: must be 0 or more (got {value}).")
    if lo.alpha <= 0:
        p.append(f"lora.alpha: must be positive (got {lo.alpha}); alpha = rank is a safe choice.")
    for key, value in (("lora.dropout", lo.dropout), ("dataset.caption_dropout", d.caption_dropout)):
        if not 0.0 <= value < 1.0:
            p.append(f"{key}: must be in [0, 1) (got {value}).")
    if d.augmentations:
        from .data.augment import validate_augmentations  # imports torchvision: only when used
        p += [f"dataset.augmentations: {msg}" for msg in
              validate_augmentations([dataclasses.asdict(a) for a in d.augmentations])]
    lrs = {"optimizer.lr": o.lr, "optimizer.double_blocks_lr": o.double_blocks_lr,
           "optimizer.single_blocks_lr": o.single_blocks_lr, "optimizer.text_encoder_lr": o.text_encoder_lr}
    for key, value in lrs.items():
        if value is not None and not (0 < value <= 10):
            p.append(f"{key}: {value} is not a usable learning rate (use 1e-4 for AdamW, 1.0 for Prodigy).")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        p.append(f"optimizer.betas: expected two numbers in [0, 1), got {o.betas}.")
    if o.max_grad_norm < 0:
        p.append("optimizer.max_grad_norm: must be 0 (off) or positive.")
    if s.scheduler == "cyclic" and not 0 < s.cyclic_base_lr < s.cyclic_max_lr:
        p.append("schedule.cyclic_base_lr must be positive and below schedule.cyclic_max_lr.")
    if s.scheduler == "cosine" and s.min_lr >= o.lr:
        p.append(f"schedule.min_lr ({s.min_lr}) must be below optimizer.lr ({o.lr}).")
    if s.warmup_steps and s.warmup_steps >= s.max_steps and s.scheduler != "constant":
        p.append(f"schedule.warmup_steps ({s.warmup_steps}) must be below schedule.max_steps ({s.max_steps}).")
    if t.timestep_sampling == "shift" and t.shift <= 0:
        p.append("training.shift: must be positive (FluxGym uses 3.1582).")
    if t.logit_std <= 0:
        p.append("training.logit_std: must be positive.")
    if not 0 < t.ema_decay < 1:
        p.append("training.ema_decay: must be between 0 and 1 (0.99 is common).")
    if lo.double_blocks is not None and any(b < 0 for b in lo.double_blocks):
        p.append("lora.double_blocks: block numbers start at 0.")
    if lo.single_blocks is not None and any(b < 0 for b in lo.single_blocks):
        p.append("lora.single_blocks: block numbers start at 0.")
    if not sv.run_name.strip() or any(c in sv.run_name for c in "/\\\0") or sv.run_name.startswith("."):
        p.append(f"save.run_name: {sv.run_name!r} must be a plain name (letters, digits, - and _).")
    if m.tier == "cpu" or m.device == "cpu":
        p.extend(f"{setting}: {value} needs a CUDA GPU; {instead}." for setting, value, instead in gpu_only_settings(cfg))
    if m.mixed_precision == "fp16" and m.base_precision == "bf16":
        p.append("memory.mixed_precision fp16 with a bf16 base mixes formats; use bf16 for both.")
    if o.name == "prodigy" and o.lr < 0.1:
        p.append(f"optimizer.lr: Prodigy finds its own step size; set lr to 1.0 (got {o.lr}).")
    if not sa.prompts and sa.every:
        p.append("sample.prompts: give at least one prompt, or set sample.every to 0.")
    return p


def gpu_only_settings(cfg: TrainConfig) -> list[tuple[str, str, str]]:
    """(setting, value, what to use on a CPU instead) for each choice in `cfg` that needs CUDA.

    config.validate refuses them when the CPU is asked for; the engine when `device: auto` finds no GPU.
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
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


# --------------------------------------------------------------------------- docs


def help_rows(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every leaf setting, in schema order."""
    rows = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.append((prefix + f.name, "section", "", f.metadata.get("help", "")))
            rows.extend(help_rows(tp, prefix + f.name + "."))
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append((prefix + f.name, _type_name(tp), default, f.metadata.get("help", "")))
    return rows


def field_help(key: str) -> str:
    for row_key, _, _, text in help_rows():
        if row_key == key:
            return text
    raise KeyError(key)


def config_reference() -> str:
    lines = ["# Config reference", "",
             "Generated from `studio/config.py` by `python -m studio config-reference`; "
             "do not edit by hand.", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, text in help_rows():
        if tp == "section":
            lines += ["", f"## `{key}` — {text}", "", "| key | type | default | meaning |",
                      "|---|---|---|---|"]
        else:
            shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"| `{key}` | {tp} | `{shown}` | {text.replace('|', '/')} |")
    return "\n".join(lines).strip() + "\n"
