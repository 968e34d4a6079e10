"""`TrainConfig`: the one contract between the CLI, the UI and the worker.

Every field has a default and a one-line help text (the UI shows it). A field may say which
input the UI gives it (`kind`: int, float, bool, choice, text; `bounds`); otherwise the kind
follows from its type (studio/config/docs.py). A config loads from and saves to YAML and
round-trips exactly; unknown keys and wrong types are rejected with a message naming the key
and the nearest valid one (studio/config/load.py). No torch import here: the UI loads this
module at start-up.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .load import build, hints, parse_yaml, read_text


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
    family: str = opt("auto", "Model family: 'auto' detects it from the model's files; or name it "
                      "(see `python -m studio families`), and a model of another family is refused "
                      "before anything loads.")


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
    repeats: int = opt(1, "How many times each image appears per epoch.", bounds=(1, None))
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
    rank: int = opt(16, "LoRA rank: capacity of the adapter (4–64 typical).", bounds=(1, None))
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
    max_steps: int = opt(1000, "Optimiser steps to train.", bounds=(1, None))
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
    batch_size: int = opt(1, "Images per step on each device.", bounds=(1, None))
    gradient_accumulation: int = opt(1, "Steps whose gradients add up before one update.", bounds=(1, None))
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
    num_gpus: int = opt(1, "GPUs to train on (data parallel through accelerate).", bounds=(1, None))
    auto_retry_lower_tier: bool = opt(False, "After out-of-memory, retry at the next lower "
                                      "tier from the last checkpoint.")


@dataclass
class SampleConfig:
    prompts: list[str] = opt(["a photo of [trigger]"], "Prompts for samples during training; "
                             "[trigger] becomes the trigger word.")
    seed: int = opt(1234, "Seed of the first sample prompt (the next prompts use seed+1, …).")
    every: int = opt(250, "Make samples every N steps (0 = only at the end).")
    at_start: bool = opt(True, "Make samples before training (the base model's look).")
    steps: int = opt(20, "Denoising steps per sample.", bounds=(1, None))
    guidance: float = opt(3.5, "Guidance for samples (dev models).")
    true_cfg: float = opt(1.0, "FLUX.1: guidance against the empty prompt for samples and try-it "
                          "(diffusers' true_cfg_scale); above 1 the picture follows the prompt more "
                          "closely and takes twice as long. 1 = off.", bounds=(1.0, None))
    width: int = opt(512, "Sample width (multiple of 16).")
    height: int = opt(512, "Sample height (multiple of 16).")


@dataclass
class SaveConfig:
    output_dir: str = opt("output", "Folder that holds run folders.")
    run_name: str = opt("my-lora", "Name of the run and of the LoRA files.")
    every: int = opt(250, "Save a resumable checkpoint every N steps (0 = only at the end).")
    keep_last: int = opt(2, "How many checkpoints to keep; 0 keeps every one (for the report card: the run "
                            "prints how much disk they take).", bounds=(0, None))
    comfyui: bool = opt(True, "Also write <name>-comfyui.safetensors (kohya layout for "
                        "ComfyUI and Forge).")


@dataclass
class LogConfig:
    every: int = opt(1, "Record the loss every N steps (fewer GPU syncs when larger).", bounds=(1, None))
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
                setattr(self, f.name, hints(type(self))[f.name]())
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
        return build(cls, data, "")

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> "TrainConfig":
        return cls.from_dict(parse_yaml(text, source))

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        return cls.from_yaml(read_text(path), str(path))

    def run_dir(self) -> Path:
        return Path(self.save.output_dir) / self.save.run_name

