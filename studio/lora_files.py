"""Writing, checking and reading back FLUX.1 LoRA files.

Two layouts describe the same trained adapter:

* diffusers/peft (`<name>.safetensors`): `transformer.<module>.lora_A/B.weight`, r and alpha in
  the `lora_adapter_metadata` JSON. Written by diffusers itself so that
  `FluxPipeline.load_lora_weights` reads it back exactly. The scale alpha/r is folded into
  lora_B and the metadata says alpha = r, because ComfyUI and Forge ignore that metadata and
  apply a diffusers-layout file at scale 1.0: folded, every loader gets the trained ΔW.
* kohya/BFL (`<name>-comfyui.safetensors`): `lora_unet_<BFL module>.lora_down/up.weight` plus
  a scalar `.alpha` per module, with the q/k/v (and single-block q/k/v/mlp) projections fused
  the way the original BFL checkpoint fuses them. This is what ComfyUI and Forge load.

`delta_weights` rebuilds ΔW = scale·B·A per diffusers module from either file, which is how we
prove that both files describe the same adapter.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .families.base import LoraFileError
from .families.flux1 import VARIANTS, guess_variant
from .families.flux1_layouts import (  # noqa: F401  (re-exported: the key maps used to live here)
    CLIP_MODULE, DOUBLE_BLOCK_MODULES, GLOBAL_MODULES, KOHYA_CLIP_PREFIX, KOHYA_UNET_PREFIX, ROW_SWAPPED_MODULES,
    SINGLE_BLOCK_MODULES, clip_kohya_name, clip_name, diffusers_parts, kohya_groups, kohya_unet_tensors, put_kohya,
    swap_halves)
from .sharing import DEMO_NAME, BaseIdentity

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


def _split_peft_state_dict(layers: dict[str, torch.Tensor], what: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
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


# ---------------------------------------------------------------------------------- saving


def save_lora(
    out_dir: Path,
    name: str,
    transformer_layers: dict[str, torch.Tensor],
    rank: int,
    alpha: float,
    metadata: dict,
    text_encoder_layers: dict[str, torch.Tensor] | None = None,
    te_rank: int | None = None,
    te_alpha: float | None = None,
    save_comfyui: bool = True,
) -> dict[str, Path]:
    """Write `<name>.safetensors` (diffusers) and `<name>-comfyui.safetensors` (kohya/BFL).

    `transformer_layers` / `text_encoder_layers` are `peft.get_peft_model_state_dict(...)`.
    `metadata` keys the studio knows: base_model, model_variant ("dev"/"schnell"/"demo"), trigger_word,
    steps, resolution, dataset_size, dataset_hash, learning_rate, seed, config; any other key
    (and any `ss_*` / `modelspec.*` key) is passed through. Returns {"diffusers": p, "comfyui": p}.
    """
    from .families.flux1 import pipeline_class  # heavy import, only needed when saving

    if not name or Path(name).name != name or name.startswith("."):
        raise LoraFileError(f"LoRA name must be a plain file name, got {name!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    te_rank = rank if te_rank is None else te_rank
    te_alpha = alpha if te_alpha is None else te_alpha
    unet = _split_peft_state_dict(transformer_layers, "transformer_layers")
    clip = _split_peft_state_dict(text_encoder_layers or {}, "text_encoder_layers")
    if not unet and not clip:
        raise LoraFileError("nothing to save: both transformer_layers and text_encoder_layers are empty")
    for pairs, r, what in ((unet, rank, "transformer"), (clip, te_rank, "text encoder")):
        wrong = [m for m, (a, b) in pairs.items() if a.shape[0] != r or b.shape[1] != r]
        if wrong:
            raise LoraFileError(f"{what} rank is {r} but module {wrong[0]} has A {tuple(pairs[wrong[0]][0].shape)}")
    file_metadata = _file_metadata(name, metadata, rank, alpha, has_text_encoder=bool(clip))
    # Built first so that a module without a BFL name fails before anything is written.
    kohya_tensors = {}
    if save_comfyui:
        kohya_tensors = kohya_unet_tensors(unet, rank, alpha)
        for module, (a, b) in clip.items():
            put_kohya(kohya_tensors, clip_kohya_name(module), a, b, float(te_alpha))

    # Let diffusers write the diffusers file (key prefixes and adapter metadata exactly as it
    # reads them back), then add our metadata while copying it into place atomically.
    # ComfyUI and Forge read a diffusers-layout file without its adapter metadata, at scale 1.0;
    # so alpha/rank is folded into lora_B and the file says alpha = rank. Every loader, diffusers
    # included (with or without the metadata), then applies ΔW = B·A = (alpha/rank)·B_trained·A.
    paths = {"diffusers": out_dir / f"{name}.safetensors"}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}.") as scratch:
        pipeline_class().save_lora_weights(
            save_directory=scratch,
            transformer_lora_layers=_fold_scale(transformer_layers, rank, alpha) or None,
            text_encoder_lora_layers=_fold_scale(text_encoder_layers or {}, te_rank, te_alpha) or None,
            weight_name="lora.safetensors",
            transformer_lora_adapter_metadata=_adapter_config(unet, rank, rank) if unet else None,
            text_encoder_lora_adapter_metadata=_adapter_config(clip, te_rank, te_rank) if clip else None,
        )
        written = Path(scratch, "lora.safetensors")
        tensors, diffusers_metadata = _load(written)
        _atomic_save(tensors, {**file_metadata, **diffusers_metadata}, paths["diffusers"])

    if save_comfyui:
        paths["comfyui"] = out_dir / f"{name}-comfyui.safetensors"
        _atomic_save(kohya_tensors, {**file_metadata, "format": "pt"}, paths["comfyui"])
    return paths


def _fold_scale(layers: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """peft state dict with lora_B multiplied by alpha/rank (in float32, then back to its dtype)."""
    scale = float(alpha) / float(rank)
    return {key: (t.detach().float() * scale).to(t.dtype) if key.endswith(".lora_B.weight") else t
            for key, t in layers.items()}


def _adapter_config(pairs, rank, alpha) -> dict:
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


def _file_metadata(name, metadata, rank, alpha, has_text_encoder) -> dict[str, str]:
    clash = RESERVED_METADATA_KEYS & set(metadata)
    if clash:
        raise LoraFileError(f"metadata key(s) {sorted(clash)} are written by diffusers and cannot be set")
    variant = str(metadata.get("model_variant") or "")
    if variant not in (*VARIANTS, "demo"):
        variant = guess_variant(metadata.get("base_model", ""))
    out = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in metadata.items()}
    if variant == "demo":  # the studio's own demo model, not FLUX.1: say so to every reader
        version, architecture, implementation = DEMO_NAME, f"{DEMO_NAME}/lora", "https://github.com/huggingface/diffusers"
    else:
        version, architecture = VARIANTS[variant].kohya_version, f"flux-1-{variant}/lora"
        implementation = "https://github.com/black-forest-labs/flux"
    derived = {
        "ss_network_module": "networks.lora_flux",
        "ss_network_dim": str(int(rank)),
        "ss_network_alpha": str(float(alpha)),
        "ss_base_model_version": version,
        "ss_output_name": name,
        "ss_training_comment": "trained with Flux LoRA Studio",
        "ss_network_train_unet_only": str(not has_text_encoder),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": architecture,
        "modelspec.implementation": implementation,
        "modelspec.license": BaseIdentity(DEMO_NAME, variant).licence_id,
        "modelspec.title": name,
        "modelspec.date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    derived.update(kohya_names(metadata, out))
    # The caller's own ss_* / modelspec.* values win over the ones derived here.
    return dict(sorted({**derived, **out}.items()))


def _atomic_save(tensors, metadata, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(dict(sorted(tensors.items())), tmp, metadata=dict(sorted(metadata.items())))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------- reading


def _load(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
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
class _Module:
    down: torch.Tensor  # A, (rank, in)
    up: torch.Tensor  # B, (out, rank)
    scale: float


def _read_modules(path) -> tuple[str, dict[str, _Module], dict[str, str]]:
    """Checked (layout, {module name as in the file: A, B, scale}, metadata)."""
    tensors, metadata = _load(path)
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
        modules[name] = _Module(down.float(), up.float(), scale)
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


def validate_lora_file(path) -> LoraFileInfo:
    """Check that `path` is a usable LoRA file and summarise it; raises LoraFileError."""
    layout, modules, metadata = _read_modules(path)
    unit_ranks, alphas = Counter(), {}
    for name, m in modules.items():
        rows = m.down.shape[0]
        try:  # fused kohya modules hold one rank slot per part
            parts = len(diffusers_parts(name)) if layout == "kohya" else 1
        except LoraFileError:  # a module we cannot map (e.g. T5) is still a valid LoRA module
            parts = 1
        unit = rows // parts if rows % parts == 0 else rows
        unit_ranks[unit] += 1
        alphas.setdefault(unit, m.scale * unit)
    rank = unit_ranks.most_common(1)[0][0]
    if "ss_network_dim" in metadata and "ss_network_alpha" in metadata:
        rank, alpha = int(metadata["ss_network_dim"]), float(metadata["ss_network_alpha"])
    else:
        alpha = alphas[rank]
    has_te = any(n.startswith(("text_encoder.", KOHYA_CLIP_PREFIX)) for n in modules)
    return LoraFileInfo(layout, len(modules), rank, alpha, metadata, has_te)


def delta_weights(path, split_fused: bool = True, single_split: tuple[int, int, int, int] | None = None) -> dict[str, torch.Tensor]:
    """ΔW = scale·B·A (float32) for every module in the file.

    Keys are diffusers module names without the component prefix for the transformer
    (`transformer_blocks.0.attn.to_q`) and CLIP checkpoint names for the text encoder
    (`text_model.encoder.layers.0.self_attn.q_proj`, whichever spelling the file uses). Kohya files are mapped back to those
    names; fused qkv / linear1 are split by output rows (sizes from the file's own shapes, or
    `single_split=(q, k, v, mlp)`), and parts that the file only carries as zero padding are
    left out. With `split_fused=False` a kohya file's ΔWs are returned as stored, keyed by the
    kohya module name.
    """
    layout, modules, _ = _read_modules(path)
    deltas = {}
    for name, m in modules.items():
        delta = m.scale * (m.up @ m.down)
        if layout == "diffusers":
            if name.startswith("text_encoder."):
                deltas[clip_name(name.removeprefix("text_encoder."))] = delta
            else:
                deltas[name.removeprefix("transformer.")] = delta
            continue
        if not split_fused:
            deltas[name] = delta
            continue
        parts = [p.removeprefix("transformer.").removeprefix("text_encoder.") for p in diffusers_parts(name)]
        if name.removeprefix(KOHYA_UNET_PREFIX) in ROW_SWAPPED_MODULES:
            delta = swap_halves(delta)
        if len(parts) == 1:
            deltas[parts[0]] = delta
            continue
        in_features = m.down.shape[1]
        if len(parts) == 4:
            sizes = list(single_split) if single_split else [in_features] * 3 + [delta.shape[0] - 3 * in_features]
        else:
            sizes = [delta.shape[0] // 3] * 3
        if sum(sizes) != delta.shape[0]:
            raise LoraFileError(f"{name}: cannot split {delta.shape[0]} output rows into {sizes}")
        absent = _padding_slots(m, sizes)
        for i, (part, block) in enumerate(zip(parts, delta.split(sizes, dim=0))):
            if i not in absent:
                deltas[part] = block
    return deltas


def _padding_slots(m: _Module, sizes: list[int]) -> set[int]:
    """Parts of a block-diagonal fused module whose down slot and up block are all zero."""
    rank = m.down.shape[0]
    if rank % len(sizes):
        return set()  # not our block layout (e.g. a dense fused LoRA): every part is real
    slot = rank // len(sizes)
    absent, row = set(), 0
    for i, rows in enumerate(sizes):
        down_slot = m.down[i * slot:(i + 1) * slot]
        up_block = m.up[row:row + rows, i * slot:(i + 1) * slot]
        if not down_slot.any() and not up_block.any():
            absent.add(i)
        row += rows
    return absent
