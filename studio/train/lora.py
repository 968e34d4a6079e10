"""Putting the LoRA on the model: targets checked against the model, adapters, memory placement."""

from __future__ import annotations

import torch

from ..config import TrainConfig
from ..diagnostics import StudioError


def check_model_fit(cfg: TrainConfig, transformer: torch.nn.Module, names: list[str], block_counts: dict) -> None:
    """Problems that only the model can reveal, raised before training starts.
    `block_counts`: the family's {"double": n, "single": m} for this transformer."""
    for key, blocks in (("double_blocks", cfg.lora.double_blocks), ("single_blocks", cfg.lora.single_blocks)):
        limit = block_counts[key.split("_")[0]]
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


def add_lora(cfg: TrainConfig, family, pipe, device) -> tuple[list[str], torch.nn.Module | None]:
    """Adapters on the transformer (and the trainable text encoder when asked); returns
    (target module names, the text encoder with its LoRA or None)."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    lo, transformer = cfg.lora, pipe.transformer
    targets = add_transformer_lora(cfg, family, transformer)
    text_encoder = None
    if lo.train_text_encoder:
        from peft import inject_adapter_in_model

        # transformers' own add_adapter wants a newer peft; peft's injection is the same layer.
        text_encoder = family.trainable_text_encoder(pipe).to(device)
        inject_adapter_in_model(LoraConfig(
            r=lo.text_encoder_rank, lora_alpha=lo.text_encoder_alpha, lora_dropout=lo.dropout,
            init_lora_weights="gaussian", target_modules=family.text_encoder_targets), text_encoder)
        cast_training_params(text_encoder, torch.float32)
    place(cfg, transformer, device)
    return targets, text_encoder


def add_transformer_lora(cfg: TrainConfig, family, transformer: torch.nn.Module) -> list[str]:
    """The configured adapter on the family's target layers of `transformer`, its weights in fp32
    even over a bf16 or quantised base; returns the adapted layers' names."""
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    lo = cfg.lora
    targets = family.target_modules(lo, transformer)
    check_model_fit(cfg, transformer, targets, family.block_counts(transformer))
    transformer.add_adapter(LoraConfig(r=lo.rank, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                                       init_lora_weights="gaussian", target_modules=targets))
    cast_training_params(transformer, torch.float32)
    return targets


def place(cfg: TrainConfig, transformer: torch.nn.Module, device) -> None:
    """Gradient checkpointing, block offload or the device, and compiled blocks, as the memory tier says."""
    m = cfg.memory
    if m.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    if m.block_offload and device.type == "cuda":
        # 8 GB tier: blocks live in CPU memory and stream to the GPU one at a time.
        # No CUDA streams: the stream path restores weights from a CPU copy made when offloading
        # starts, which would undo the optimiser's updates to the LoRA weights inside the blocks.
        transformer.enable_group_offload(device, torch.device("cpu"), offload_type="block_level",
                                         num_blocks_per_group=1, use_stream=False)
    elif m.base_precision not in ("int8", "nf4"):
        transformer.to(device)  # bitsandbytes weights are placed on the GPU at load
    if m.compile:
        transformer.compile_repeated_blocks(fullgraph=False)
