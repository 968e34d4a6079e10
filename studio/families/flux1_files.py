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
prove that both files describe the same adapter. The family-neutral parts (peft state dicts,
safetensors reading and writing, the kohya metadata names) are in studio/lora_files.py; the key
maps are in flux1_layouts.py.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..lora_files import (
    RESERVED_METADATA_KEYS, LoraFileInfo, adapter_config, atomic_save, fold_scale, kohya_names, load_tensors,
    read_modules, split_peft_state_dict)
from ..sharing import DEMO_LICENCE_ID, DEMO_NAME
from .base import LoraFileError
from .flux1 import VARIANTS, guess_variant, pipeline_class
from .flux1_layouts import (
    KOHYA_CLIP_PREFIX, KOHYA_UNET_PREFIX, ROW_SWAPPED_MODULES, clip_kohya_name, clip_name, diffusers_parts,
    kohya_unet_tensors, padding_slots, put_kohya, swap_halves)

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
    if not name or Path(name).name != name or name.startswith("."):
        raise LoraFileError(f"LoRA name must be a plain file name, got {name!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    te_rank = rank if te_rank is None else te_rank
    te_alpha = alpha if te_alpha is None else te_alpha
    unet = split_peft_state_dict(transformer_layers, "transformer_layers")
    clip = split_peft_state_dict(text_encoder_layers or {}, "text_encoder_layers")
    if not unet and not clip:
        raise LoraFileError("nothing to save: both transformer_layers and text_encoder_layers are empty")
    for pairs, r, what in ((unet, rank, "transformer"), (clip, te_rank, "text encoder")):
        wrong = [m for m, (a, b) in pairs.items() if a.shape[0] != r or b.shape[1] != r]
        if wrong:
            raise LoraFileError(f"{what} rank is {r} but module {wrong[0]} has A {tuple(pairs[wrong[0]][0].shape)}")
    meta = file_metadata(name, metadata, rank, alpha, has_text_encoder=bool(clip))
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
            transformer_lora_layers=fold_scale(transformer_layers, rank, alpha) or None,
            text_encoder_lora_layers=fold_scale(text_encoder_layers or {}, te_rank, te_alpha) or None,
            weight_name="lora.safetensors",
            transformer_lora_adapter_metadata=adapter_config(unet, rank, rank) if unet else None,
            text_encoder_lora_adapter_metadata=adapter_config(clip, te_rank, te_rank) if clip else None,
        )
        written = Path(scratch, "lora.safetensors")
        tensors, diffusers_metadata = load_tensors(written)
        atomic_save(tensors, {**meta, **diffusers_metadata}, paths["diffusers"])

    if save_comfyui:
        paths["comfyui"] = out_dir / f"{name}-comfyui.safetensors"
        atomic_save(kohya_tensors, {**meta, "format": "pt"}, paths["comfyui"])
    return paths


def file_metadata(name, metadata, rank, alpha, has_text_encoder) -> dict[str, str]:
    clash = RESERVED_METADATA_KEYS & set(metadata)
    if clash:
        raise LoraFileError(f"metadata key(s) {sorted(clash)} are written by diffusers and cannot be set")
    variant = str(metadata.get("model_variant") or "")
    if variant not in (*VARIANTS, "demo"):
        variant = guess_variant(metadata.get("base_model", ""))
    out = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str) for k, v in metadata.items()}
    if variant == "demo":  # the studio's own demo model, not FLUX.1: say so to every reader
        version, architecture, implementation = DEMO_NAME, f"{DEMO_NAME}/lora", "https://github.com/huggingface/diffusers"
        licence = DEMO_LICENCE_ID
    else:
        version, architecture = VARIANTS[variant].kohya_version, f"flux-1-{variant}/lora"
        implementation, licence = "https://github.com/black-forest-labs/flux", VARIANTS[variant].licence_id
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
        "modelspec.license": licence,
        "modelspec.title": name,
        "modelspec.date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    derived.update(kohya_names(metadata, out))
    # The caller's own ss_* / modelspec.* values win over the ones derived here.
    return dict(sorted({**derived, **out}.items()))




# ---------------------------------------------------------------------------------- reading


def validate_lora_file(path) -> LoraFileInfo:
    """Check that `path` is a usable LoRA file and summarise it; raises LoraFileError."""
    layout, modules, metadata = read_modules(path)
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
    layout, modules, _ = read_modules(path)
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
        absent = padding_slots(m, sizes)
        for i, (part, block) in enumerate(zip(parts, delta.split(sizes, dim=0))):
            if i not in absent:
                deltas[part] = block
    return deltas
