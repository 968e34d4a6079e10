"""The blocks of a FLUX transformer (both generations): their names for the heat map, the per-block
learning rates and `lora.double_blocks` / `lora.single_blocks`, and which block layers get a LoRA."""

from __future__ import annotations

# The block containers of a FLUX transformer (both generations) and the names the heat map, the
# per-block learning rates and `lora.double_blocks` / `lora.single_blocks` use for them.
BLOCKS = {"transformer_blocks": "double", "single_transformer_blocks": "single"}


def block_of(param_name: str) -> str:
    """'transformer_blocks.3.attn…' → 'double.3'; 'single_transformer_blocks.10…' → 'single.10'."""
    parts = param_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in BLOCKS:
            return f"{BLOCKS[part]}.{parts[i + 1]}"
    return "text_encoder" if "text_model" in param_name else "other"


def block_counts(transformer) -> dict[str, int]:
    return {kind: len(getattr(transformer, container)) for container, kind in BLOCKS.items()}


def block_target_modules(lora, transformer, target_sets: dict) -> list[str]:
    """Full names of the block layers that get a LoRA (explicit names, so block selection is exact):
    linear layers whose name ends in one of the chosen suffixes, in the chosen blocks only (embedders,
    shared modulations and the output layer stay frozen). `lora`: the config's LoraConfig section."""
    import torch

    suffixes = lora.target_modules or target_sets[lora.targets]
    chosen = {container: getattr(lora, f"{kind}_blocks") for container, kind in BLOCKS.items()}
    names = []
    for name, module in transformer.named_modules():
        parts = name.split(".")
        if not isinstance(module, torch.nn.Linear) or parts[0] not in chosen:
            continue
        allowed = chosen[parts[0]]
        if allowed is not None and int(parts[1]) not in allowed:
            continue
        rest = ".".join(parts[2:])
        if any(rest == s or rest.endswith("." + s) for s in suffixes):
            names.append(name)
    return names
