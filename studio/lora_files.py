"""Family-neutral helpers of LoRA files: peft state dicts, safetensors reading and writing, metadata.

Every family writes two layouts of the same adapter: the diffusers/peft file (written by diffusers,
lora_B scaled by alpha/r so that loaders which ignore the adapter metadata apply the trained ΔW)
and a kohya file (`.lora_down/up.weight` plus a scalar `.alpha` per module) for ComfyUI and Forge.
Which modules a file holds and how the kohya names map to the model's layers are facts of the
family: each family's writer and reader live in studio/families/ (FLUX.1's in flux1_files.py), and
shared code asks the family (`Family.write_lora`, `validate`, `delta_weights`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .families.base import LoraFileError

# diffusers writes these two itself; a caller's metadata must not shadow them.
RESERVED_METADATA_KEYS = {"format", "lora_adapter_metadata"}


@dataclass
class LoraFileInfo:
    layout: str  # "diffusers" | "kohya"
    num_modules: int
    rank: int
    alpha: float
    metadata: dict[str, str] = field(default_factory=dict)
    has_text_encoder: bool = False


def split_peft_state_dict(layers: dict[str, torch.Tensor], what: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`{module: (A, B)}` from peft's `get_peft_model_state_dict` output."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in layers.items():
        match = re.fullmatch(r"(.+)\.lora_([AB])\.weight", key)
        if not match:
            raise LoraFileError(f"{what}: unexpected key {key!r} (expected '<module>.lora_A.weight' / '.lora_B.weight')")
        modules.setdefault(match.group(1), {})[match.group(2)] = tensor.detach().to("cpu").contiguous()
    pairs = {}
    for module, ab in modules.items():
        if set(ab) != {"A", "B"}:
            raise LoraFileError(f"{what}: module {module} has lora_{'A' if 'A' in ab else 'B'} but not its partner")
        pairs[module] = (ab["A"], ab["B"])
    return pairs


# ---------------------------------------------------------------------------------- writing


def fold_scale(layers: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """peft state dict with lora_B multiplied by alpha/rank (in float32, then back to its dtype)."""
    scale = float(alpha) / float(rank)
    return {key: (t.detach().float() * scale).to(t.dtype) if key.endswith(".lora_B.weight") else t
            for key, t in layers.items()}


def adapter_config(pairs, rank, alpha) -> dict:
    # Full module names, not suffixes: a suffix like "attn.to_q" would also match single blocks
    # that were not trained when diffusers rebuilds the LoraConfig from this metadata.
    return {"r": int(rank), "lora_alpha": float(alpha), "target_modules": sorted(pairs)}


# Our metadata keys → the kohya / modelspec keys other tools read (Forge, ComfyUI's info nodes).
KOHYA_NAMES = (("base_model", "ss_sd_model_name"), ("steps", "ss_max_train_steps"), ("resolution", "ss_resolution"),
               ("dataset_size", "ss_num_train_images"), ("learning_rate", "ss_learning_rate"), ("seed", "ss_seed"),
               ("trigger_word", "modelspec.trigger_phrase"), ("resolution", "modelspec.resolution"))


def kohya_names(metadata: dict, out: dict) -> dict:
    """The kohya / modelspec copies of the studio's metadata values given in `metadata`."""
    return {kohya: out[ours] for ours, kohya in KOHYA_NAMES if ours in metadata}


def atomic_save(tensors, metadata, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(dict(sorted(tensors.items())), tmp, metadata=dict(sorted(metadata.items())))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------- reading


def load_tensors(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise LoraFileError(f"{path} is not a readable safetensors file ({e})") from e


def read_metadata(path) -> dict[str, str]:
    """The file's safetensors metadata as stored (all values are strings)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise LoraFileError(f"{path} is not a readable safetensors file ({e})") from e


@dataclass
class LoraModule:
    down: torch.Tensor  # A, (rank, in)
    up: torch.Tensor  # B, (out, rank)
    scale: float


def read_modules(path) -> tuple[str, dict[str, LoraModule], dict[str, str]]:
    """Checked (layout, {module name as in the file: A, B, scale}, metadata)."""
    tensors, metadata = load_tensors(path)
    if any(k.endswith(".lora_down.weight") for k in tensors):
        layout, a_suffix, b_suffix = "kohya", ".lora_down.weight", ".lora_up.weight"
    elif any(k.endswith(".lora_A.weight") for k in tensors):
        layout, a_suffix, b_suffix = "diffusers", ".lora_A.weight", ".lora_B.weight"
    else:
        raise LoraFileError(f"{path} holds no LoRA tensors (no '.lora_A.weight' or '.lora_down.weight' keys)")
    for key, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise LoraFileError(f"{path}: tensor {key} contains NaN or inf values")
    adapter = json.loads(metadata.get("lora_adapter_metadata") or "{}")

    names = {k[: -len(s)] for k in tensors for s in (a_suffix, b_suffix) if k.endswith(s)}
    modules = {}
    for name in sorted(names):
        if name + a_suffix not in tensors or name + b_suffix not in tensors:
            have, missing = (a_suffix, b_suffix) if name + a_suffix in tensors else (b_suffix, a_suffix)
            raise LoraFileError(f"{path}: {name}{have} has no partner {name}{missing}")
        down, up = tensors[name + a_suffix], tensors[name + b_suffix]
        if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
            raise LoraFileError(
                f"{path}: {name} shapes do not fit: {a_suffix[1:]} {tuple(down.shape)}, {b_suffix[1:]} {tuple(up.shape)}"
                f" (expected (rank, in) and (out, rank))"
            )
        rank = down.shape[0]
        if name + ".alpha" in tensors:
            scale = float(tensors[name + ".alpha"]) / rank
        elif layout == "kohya":
            raise LoraFileError(f"{path}: {name} has no .alpha tensor (ComfyUI would apply it at scale 1.0)")
        else:
            scale = _peft_scale(name, adapter, rank)
        modules[name] = LoraModule(down.float(), up.float(), scale)
    return layout, modules, metadata


def _peft_scale(name: str, adapter: dict, rank: int) -> float:
    """lora_alpha / r as peft computes it from the adapter metadata (with rank/alpha patterns)."""
    component, _, module = name.partition(".")
    r = adapter.get(f"{component}.r")
    if r is None:  # diffusers without metadata or alphas builds the adapter with alpha = r
        return 1.0
    alpha = adapter.get(f"{component}.lora_alpha", r)
    for pattern_key, default, setter in (("rank_pattern", r, "r"), ("alpha_pattern", alpha, "alpha")):
        for pattern, value in (adapter.get(f"{component}.{pattern_key}") or {}).items():
            if re.match(rf"(.*\.)?({pattern})$", module):
                if setter == "r":
                    r = value
                else:
                    alpha = value
                break
    if r != rank:
        raise LoraFileError(f"{name}: metadata says rank {r} but lora_A has {rank} rows")
    return float(alpha) / float(r)


# FLUX.1's writer and reader were first written here; their old import path still works, resolved
# on use so that importing this module never loads a model family.
_MOVED_TO_FLUX1 = ("save_lora", "validate_lora_file", "delta_weights")


def __getattr__(name: str):
    if name in _MOVED_TO_FLUX1:
        from .families import flux1_files
        return getattr(flux1_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
