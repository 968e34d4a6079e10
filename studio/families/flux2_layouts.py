"""FLUX.2 LoRA files: the diffusers layout and the kohya/BFL layout ComfyUI and Forge load.

* diffusers (`<name>.safetensors`): `transformer.<module>.lora_A/B.weight`, written by the
  pipeline's own `save_lora_weights` (Flux2LoraLoaderMixin), alpha/rank folded into lora_B and
  the metadata saying alpha = rank, as the FLUX.1 files do (readers that ignore the metadata get
  the trained ΔW too).
* kohya/BFL (`<name>-comfyui.safetensors`): `lora_unet_<BFL module>.lora_down/up.weight` and an
  `.alpha` per module. ComfyUI maps `lora_unet_<name with . as _>` onto every weight of the model it
  loaded (comfy/lora.py, model_lora_keys_unet), so BFL names reach FLUX.2's own layers; diffusers
  reads the same file through `_convert_kohya_flux2_lora_to_diffusers`. Only the double blocks'
  q/k/v are fused in BFL (img_attn.qkv, txt_attn.qkv): they are written block-diagonally (one rank
  slot per part, a zero slot for a part not trained), so each part's ΔW is exact. The single
  blocks' layers are fused in diffusers too (to_qkv_mlp_proj = linear1, to_out = linear2).
  The scale is folded into lora_up and alpha equals the module's rank rows (scale 1.0 everywhere).

Block layers only: the shared modulations, embedders and output layer are never trained.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch

from .base import LoraFileError
from .flux1_layouts import BFL_DOUBLE_ATTENTION, bfl_double_mlp

KOHYA_PREFIX = "lora_unet_"
# BFL module inside double_blocks.N → its diffusers parts inside transformer_blocks.N, in row order.
DOUBLE = {**BFL_DOUBLE_ATTENTION, **bfl_double_mlp("linear_in", "linear_out")}
SINGLE = {"linear1": ["attn.to_qkv_mlp_proj"], "linear2": ["attn.to_out"]}
_KOHYA = re.compile(r"lora_unet_(double|single)_blocks_(\d+)_(.+)")


def bfl_module(diffusers_name: str) -> tuple[str, int, int]:
    """`transformer_blocks.3.attn.to_k` → ('double_blocks.3.img_attn.qkv', part 1, of 3)."""
    match = re.fullmatch(r"(single_)?transformer_blocks\.(\d+)\.(.+)", diffusers_name)
    if match:
        single, index, rest = match.groups()
        table, bfl = (SINGLE, "single_blocks") if single else (DOUBLE, "double_blocks")
        for name, parts in table.items():
            if rest in parts:
                return f"{bfl}.{index}.{name}", parts.index(rest), len(parts)
    raise LoraFileError(f"no BFL name for FLUX.2 transformer module {diffusers_name} (only block layers "
                        "are written)")


def kohya_parts(kohya_module: str) -> list[str]:
    """`lora_unet_double_blocks_3_img_attn_qkv` → its diffusers parts (transformer_blocks.3.attn.to_q, …)."""
    match = _KOHYA.fullmatch(kohya_module)
    if match:
        kind, index, suffix = match.groups()
        table, block = (DOUBLE, "transformer_blocks") if kind == "double" else (SINGLE, "single_transformer_blocks")
        for name, parts in table.items():
            if name.replace(".", "_") == suffix:
                return [f"{block}.{index}.{p}" for p in parts]
    raise LoraFileError(f"unknown module in a FLUX.2 kohya file: {kohya_module}")


def kohya_tensors(pairs: dict, rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """{module: (A, B)} (peft names) → kohya/BFL tensors, scale folded into up, alpha = rows."""
    scale = float(alpha) / float(rank)
    groups: dict[str, dict[int, tuple]] = {}
    counts: dict[str, int] = {}
    for module, (a, b) in pairs.items():
        bfl, index, count = bfl_module(module)
        groups.setdefault(bfl, {})[index] = (a.float(), b.float() * scale)
        counts[bfl] = count
    tensors = {}
    for bfl, parts in sorted(groups.items()):
        count = counts[bfl]
        a0 = next(iter(parts.values()))[0]
        if count == 1:
            down, up = parts[0]
        else:
            # q, k and v of a double block each map inner_dim → inner_dim: rows = in_features
            rows = a0.shape[1]
            down = a0.new_zeros(count * rank, a0.shape[1])
            up = a0.new_zeros(count * rows, count * rank)
            for i, (a, b) in parts.items():
                down[i * rank:(i + 1) * rank] = a
                up[i * rows:(i + 1) * rows, i * rank:(i + 1) * rank] = b
        key = KOHYA_PREFIX + bfl.replace(".", "_")
        tensors[f"{key}.lora_down.weight"] = down.contiguous()
        tensors[f"{key}.lora_up.weight"] = up.contiguous()
        tensors[f"{key}.alpha"] = torch.tensor(float(down.shape[0]), dtype=torch.float32)
    return tensors


# ---------------------------------------------------------------------------------- writing


def file_metadata(name: str, metadata: dict, rank: int, alpha: float, family, variant: str) -> dict[str, str]:
    """The studio's metadata plus the kohya/modelspec keys, naming the family and the variant."""
    from ..lora_files import RESERVED_METADATA_KEYS

    clash = RESERVED_METADATA_KEYS & set(metadata)
    if clash:
        raise LoraFileError(f"metadata key(s) {sorted(clash)} are written by diffusers and cannot be set")
    v = family.variants[variant]
    out = {k: v_ if isinstance(v_, str) else json.dumps(v_, sort_keys=True, default=str) for k, v_ in metadata.items()}
    derived = {
        "model_family": family.name, "model_variant": variant, "licence": v.licence_text,
        "ss_network_module": getattr(family, "kohya_network_module", "networks.lora_flux2"),
        "ss_network_dim": str(int(rank)),
        "ss_network_alpha": str(float(alpha)), "ss_base_model_version": v.kohya_version,
        "ss_output_name": name, "ss_training_comment": "trained with Flux LoRA Studio",
        "ss_network_train_unet_only": "True", "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{v.kohya_version.replace('_', '-')}/lora",
        "modelspec.implementation": getattr(family, "implementation", "https://github.com/black-forest-labs/flux2"),
        "modelspec.license": v.licence_id, "modelspec.title": name,
        "modelspec.date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    from ..lora_files import kohya_names

    derived = {k: v for k, v in derived.items() if v}  # a family without a kohya network module names none
    derived.update(kohya_names(metadata, out))
    # family and variant are facts of the file, not the caller's to change
    return dict(sorted({**derived, **out, "model_family": family.name, "model_variant": variant}.items()))


def write_lora(family, variant: str, out_dir, name: str, transformer_layers: dict, rank: int, alpha: float,
               metadata: dict, text_encoder_layers=None, save_comfyui: bool = True, **_) -> dict[str, Path]:
    """Write `<name>.safetensors` (diffusers) and `<name>-comfyui.safetensors` (kohya/BFL)."""
    from ..lora_files import adapter_config, atomic_save, fold_scale, load_tensors, split_peft_state_dict

    if not name or Path(name).name != name or name.startswith("."):
        raise LoraFileError(f"LoRA name must be a plain file name, got {name!r}")
    if text_encoder_layers:
        raise LoraFileError(f"{family.variants[variant].title} has no trainable text encoder LoRA")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = split_peft_state_dict(transformer_layers, "transformer_layers")
    if not pairs:
        raise LoraFileError("nothing to save: transformer_layers is empty")
    wrong = [m for m, (a, b) in pairs.items() if a.shape[0] != rank or b.shape[1] != rank]
    if wrong:
        raise LoraFileError(f"transformer rank is {rank} but module {wrong[0]} has A {tuple(pairs[wrong[0]][0].shape)}")
    meta = file_metadata(name, metadata, rank, alpha, family, variant)
    comfy = kohya_tensors(pairs, rank, alpha) if save_comfyui else {}  # fails before anything is written
    paths = {"diffusers": out_dir / f"{name}.safetensors"}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{name}.") as scratch:
        family.pipeline_class().save_lora_weights(
            save_directory=scratch, transformer_lora_layers=fold_scale(transformer_layers, rank, alpha),
            weight_name="lora.safetensors", transformer_lora_adapter_metadata=adapter_config(pairs, rank, rank))
        tensors, diffusers_metadata = load_tensors(Path(scratch, "lora.safetensors"))
        atomic_save(tensors, {**meta, **diffusers_metadata}, paths["diffusers"])
    if save_comfyui:
        paths["comfyui"] = out_dir / f"{name}-comfyui.safetensors"
        atomic_save(comfy, {**meta, "format": "pt"}, paths["comfyui"])
    return paths


# ---------------------------------------------------------------------------------- reading


def lora_factors(path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{diffusers module (no component prefix): (up, down, scale)} with ΔW = scale·up@down, from either
    layout; a fused kohya module is cut into its parts' rows (zero padding parts left out)."""
    from ..lora_files import read_modules

    layout, modules, _ = read_modules(path)
    out = {}
    for name, m in modules.items():
        if layout == "diffusers":
            if not name.startswith("transformer."):
                raise LoraFileError(f"{path}: {name} is not a FLUX.2 transformer module")
            out[name.removeprefix("transformer.")] = (m.up, m.down, m.scale)
            continue
        parts = kohya_parts(name)
        if len(parts) == 1:
            out[parts[0]] = (m.up, m.down, m.scale)
            continue
        rows, slot = m.up.shape[0] // len(parts), m.down.shape[0] // len(parts)
        if rows * len(parts) != m.up.shape[0]:
            raise LoraFileError(f"{path}: {name} has {m.up.shape[0]} output rows, not {len(parts)} equal parts")
        for i, part in enumerate(parts):
            up = m.up[i * rows:(i + 1) * rows]
            if m.down.shape[0] % len(parts) == 0 and not up.any() and not m.down[i * slot:(i + 1) * slot].any():
                continue  # a zero slot: this part was not trained
            out[part] = (up, m.down, m.scale)
    return out


def delta_weights(path) -> dict[str, torch.Tensor]:
    """ΔW = scale·B·A (float32) per diffusers module, from either layout."""
    return {name: scale * (up @ down) for name, (up, down, scale) in lora_factors(path).items()}


def validate(path):
    """A usable FLUX.2 LoRA file (either layout), summarised; raises LoraFileError."""
    from ..lora_files import LoraFileInfo, read_modules

    layout, modules, metadata = read_modules(path)
    ranks = Counter()
    for name, m in modules.items():
        parts = len(kohya_parts(name)) if layout == "kohya" else 1
        if layout == "diffusers" and not name.startswith("transformer."):
            raise LoraFileError(f"{path}: {name} is not a FLUX.2 transformer module")
        ranks[m.down.shape[0] // parts] += 1
    rank = ranks.most_common(1)[0][0]
    alpha = float(metadata.get("ss_network_alpha", rank))
    if "ss_network_dim" in metadata:
        rank = int(metadata["ss_network_dim"])
    return LoraFileInfo(layout, len(modules), rank, alpha, metadata, False)


# ---------------------------------------------------------------------------------- shapes


def meta_transformer(config: dict):
    """The FLUX.2 transformer of `config` with no weights (meta device): names and shapes only."""
    from accelerate import init_empty_weights
    from diffusers import Flux2Transformer2DModel

    with init_empty_weights():
        return Flux2Transformer2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})


def comfy_linear_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """kohya module name → (out, in) of every block layer ComfyUI knows in a FLUX.2 model, written from
    the published architecture (BFL checkpoint names), not from the writer's tables."""
    h = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    mlp = int(h * float(config.get("mlp_ratio", 3.0)))
    shapes = {}
    for i in range(int(config["num_layers"])):
        for side in ("img", "txt"):
            shapes |= {f"double_blocks_{i}_{side}_attn_qkv": (3 * h, h), f"double_blocks_{i}_{side}_attn_proj": (h, h),
                       f"double_blocks_{i}_{side}_mlp_0": (2 * mlp, h), f"double_blocks_{i}_{side}_mlp_2": (h, mlp)}
    for i in range(int(config["num_single_layers"])):
        shapes |= {f"single_blocks_{i}_linear1": (3 * h + 2 * mlp, h), f"single_blocks_{i}_linear2": (h, h + mlp)}
    return {KOHYA_PREFIX + name: shape for name, shape in shapes.items()}
