"""FLUX.1's LoRA key maps: diffusers/peft module names ↔ kohya/BFL names (ComfyUI, Forge).

The BFL checkpoint fuses q/k/v (and, in single blocks, q/k/v/mlp) into one linear layer; a
kohya file follows it, so a fused module holds one rank slot per diffusers part
(block-diagonal), and absent parts are zero slots. flux1_files.py writes and reads the
files; these tables and conversions are what is FLUX.1-specific about them.
"""

from __future__ import annotations

import re

import torch

from .base import LoraFileError

KOHYA_UNET_PREFIX = "lora_unet_"
KOHYA_CLIP_PREFIX = "lora_te1_"
# A double block's BFL layers (FLUX.1 and FLUX.2 name them alike) → their diffusers parts inside
# block N. Fused BFL modules list their diffusers parts in the order their output rows are stacked.
BFL_DOUBLE_ATTENTION = {
    "img_attn.qkv": ["attn.to_q", "attn.to_k", "attn.to_v"],
    "txt_attn.qkv": ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    "img_attn.proj": ["attn.to_out.0"],
    "txt_attn.proj": ["attn.to_add_out"],
}


def bfl_double_mlp(first: str, second: str) -> dict[str, list[str]]:
    """The feed-forwards of both streams: BFL `img_mlp.0/2`, `txt_mlp.0/2` → diffusers `ff.<first>`,
    `ff.<second>`, `ff_context.<first>`, `ff_context.<second>` (the layer names differ by generation)."""
    return {f"{side}_mlp.{i}": [f"{stream}.{layer}"]
            for side, stream in (("img", "ff"), ("txt", "ff_context")) for i, layer in ((0, first), (2, second))}


# FLUX.1's module correspondence, BFL name (kohya spells "." as "_") -> diffusers parts in block N.
DOUBLE_BLOCK_MODULES = {
    **{name.replace(".", "_"): parts for name, parts in
       {**BFL_DOUBLE_ATTENTION, **bfl_double_mlp("net.0.proj", "net.2")}.items()},
    "img_mod_lin": ["norm1.linear"],
    "txt_mod_lin": ["norm1_context.linear"],
}
SINGLE_BLOCK_MODULES = {
    "linear1": ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"],
    "linear2": ["proj_out"],
    "modulation_lin": ["norm.linear"],
}
# Names as in diffusers' `_convert_kohya_flux_lora_to_diffusers` (lora_conversion_utils.py).
GLOBAL_MODULES = {
    "img_in": "x_embedder",
    "txt_in": "context_embedder",
    "time_in_in_layer": "time_text_embed.timestep_embedder.linear_1",
    "time_in_out_layer": "time_text_embed.timestep_embedder.linear_2",
    "vector_in_in_layer": "time_text_embed.text_embedder.linear_1",
    "vector_in_out_layer": "time_text_embed.text_embedder.linear_2",
    "guidance_in_in_layer": "time_text_embed.guidance_embedder.linear_1",
    "guidance_in_out_layer": "time_text_embed.guidance_embedder.linear_2",
    "final_layer_linear": "proj_out",
    "final_layer_adaLN_modulation_1": "norm_out.linear",
}
# BFL's final modulation emits (shift, scale); diffusers' AdaLayerNormContinuous emits (scale, shift).
ROW_SWAPPED_MODULES = {"final_layer_adaLN_modulation_1"}
CLIP_MODULE = re.compile(r"text_model\.encoder\.layers\.(\d+)\.(self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])")



def kohya_groups(diffusers_modules: list[str]) -> dict[str, list[str | None]]:
    """Group diffusers transformer modules by the kohya module that holds them.

    Each value lists the diffusers name of every part of that kohya module, None for parts the
    LoRA does not target (e.g. proj_mlp when only attention is trained).
    """
    groups: dict[str, list[str | None]] = {}
    placed, diffusers_modules = set(), set(diffusers_modules)
    for kohya, parts, prefix in block_tables(diffusers_modules):
        names = [f"{prefix}.{p}" for p in parts]
        present = [n if n in diffusers_modules else None for n in names]
        if any(present):
            groups[kohya] = present
            placed.update(n for n in present if n)
    for bfl, diffusers_name in GLOBAL_MODULES.items():
        if diffusers_name in diffusers_modules and diffusers_name not in placed:
            groups[KOHYA_UNET_PREFIX + bfl] = [diffusers_name]
            placed.add(diffusers_name)
    unknown = sorted(set(diffusers_modules) - placed)
    if unknown:
        raise LoraFileError(f"no kohya/BFL name for transformer module(s): {', '.join(unknown)}")
    return groups


def block_tables(diffusers_modules):
    """(kohya name, part suffixes, diffusers block prefix) for every block the modules touch."""
    matches = (re.match(r"(?:single_)?transformer_blocks\.\d+(?=\.)", m) for m in diffusers_modules)
    for block in sorted({match.group(0) for match in matches if match}):
        kind, _, index = block.partition(".")
        if kind == "transformer_blocks":
            table, bfl = DOUBLE_BLOCK_MODULES, f"double_blocks_{index}_"
        else:
            table, bfl = SINGLE_BLOCK_MODULES, f"single_blocks_{index}_"
        for suffix, parts in table.items():
            yield KOHYA_UNET_PREFIX + bfl + suffix, parts, block


def diffusers_parts(kohya_module: str) -> list[str]:
    """Inverse of `_kohya_groups` for one module name: its diffusers parts, prefixed by component."""
    if kohya_module.startswith(KOHYA_CLIP_PREFIX):
        name = kohya_module[len(KOHYA_CLIP_PREFIX):]
        match = re.fullmatch(r"text_model_encoder_layers_(\d+)_(self_attn_(?:q|k|v|out)_proj|mlp_fc[12])", name)
        if not match:
            raise LoraFileError(f"unknown CLIP module in kohya file: {kohya_module}")
        sub = match.group(2).replace("self_attn_", "self_attn.").replace("mlp_", "mlp.")
        return [f"text_encoder.text_model.encoder.layers.{match.group(1)}.{sub}"]
    name = kohya_module.removeprefix(KOHYA_UNET_PREFIX)
    match = re.fullmatch(r"(double|single)_blocks_(\d+)_(.+)", name)
    if match:
        kind, index, suffix = match.groups()
        table = DOUBLE_BLOCK_MODULES if kind == "double" else SINGLE_BLOCK_MODULES
        block = ("transformer_blocks." if kind == "double" else "single_transformer_blocks.") + index
        if suffix in table:
            return [f"transformer.{block}.{part}" for part in table[suffix]]
    elif name in GLOBAL_MODULES:
        return [f"transformer.{GLOBAL_MODULES[name]}"]
    raise LoraFileError(f"unknown module in kohya file: {kohya_module}")


def clip_name(module: str) -> str:
    """CLIP module name as in CLIP checkpoints (`text_model.encoder...`).

    transformers 5 dropped the `text_model` wrapper from CLIPTextModel, so peft reports
    `encoder.layers...`; kohya names and our ΔW keys use the checkpoint spelling either way.
    """
    return module if module.startswith("text_model.") else "text_model." + module


def clip_kohya_name(module: str) -> str:
    module = clip_name(module)
    if not CLIP_MODULE.fullmatch(module):
        raise LoraFileError(f"no kohya name for text-encoder module: {module}")
    return KOHYA_CLIP_PREFIX + module.replace(".", "_")


def kohya_unet_tensors(unet, rank, alpha) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for kohya, parts in kohya_groups(list(unet)).items():
        if len(parts) == 1:
            a, b = unet[parts[0]]
            if kohya.removeprefix(KOHYA_UNET_PREFIX) in ROW_SWAPPED_MODULES:
                b = swap_halves(b)
            if kohya.startswith(KOHYA_UNET_PREFIX + "final_layer"):
                # diffusers' kohya reader ignores alpha on final_layer keys, so bake the scale
                # into up and write alpha = rank: every reader then gets the same ΔW.
                b, module_alpha = b * (alpha / rank), float(rank)
            else:
                module_alpha = float(alpha)
            put_kohya(tensors, kohya, a, b, module_alpha)
            continue
        # Fused module: every part gets its own `rank`-row slot in down and its own row block in
        # up (block-diagonal), absent parts a zero slot. ΔW of each part is then unchanged, and
        # diffusers' reader recognises the block-sparse layout and splits it back to rank r.
        in_features = next(unet[p][0].shape[1] for p in parts if p)
        out_sizes = part_sizes(kohya, parts, unet, in_features)
        template = next(unet[p][0] for p in parts if p)
        down = template.new_zeros(rank * len(parts), in_features)
        up = template.new_zeros(sum(out_sizes), rank * len(parts))
        row = 0
        for i, (part, rows) in enumerate(zip(parts, out_sizes)):
            if part:
                a, b = unet[part]
                down[i * rank:(i + 1) * rank] = a
                up[row:row + rows, i * rank:(i + 1) * rank] = b
            row += rows
        # scale = alpha_fused / rank_fused must equal alpha / rank
        put_kohya(tensors, kohya, down, up, float(alpha) * len(parts))
    return tensors


def part_sizes(kohya, parts, unet, in_features) -> list[int]:
    """Output rows of each fused part; absent parts are inferred from the block's geometry."""
    sizes = [unet[p][1].shape[0] if p else None for p in parts]
    if kohya.endswith("_linear1") and sizes[3] is None:
        # proj_mlp not trained: its rows are still in linear1. The single block's proj_out
        # takes [attention, mlp] concatenated, so mlp = proj_out.in - dim; without proj_out
        # use FLUX's fixed mlp_ratio of 4.
        proj_out = parts[0].rsplit(".", 2)[0] + ".proj_out" if parts[0] else None
        if proj_out in unet:
            sizes[3] = unet[proj_out][0].shape[1] - in_features
        else:
            sizes[3] = 4 * in_features
    # q, k and v of FLUX all map dim -> dim
    return [in_features if s is None else s for s in sizes]


def put_kohya(tensors, module, down, up, module_alpha):
    tensors[f"{module}.lora_down.weight"] = down.contiguous()
    tensors[f"{module}.lora_up.weight"] = up.contiguous()
    # Without .alpha ComfyUI applies scale 1.0, so it is always written (float32: exact for
    # the fused alpha values).
    tensors[f"{module}.alpha"] = torch.tensor(module_alpha, dtype=torch.float32)


def swap_halves(t: torch.Tensor) -> torch.Tensor:
    first, second = t.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def lora_factors(path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{module: (up, down, scale)} with ΔW = scale·up@down, keyed as `flux1_files.delta_weights` keys
    its ΔWs, from either layout; fused kohya modules are cut into their parts' rows."""
    from ..lora_files import read_modules

    layout, modules, _ = read_modules(path)
    out = {}
    for name, m in modules.items():
        if layout == "diffusers":
            text = name.startswith("text_encoder.")
            out[clip_name(name.removeprefix("text_encoder.")) if text else name.removeprefix("transformer.")] = (
                m.up, m.down, m.scale)
            continue
        parts = [p.removeprefix("transformer.").removeprefix("text_encoder.") for p in diffusers_parts(name)]
        up = swap_halves(m.up) if name.removeprefix(KOHYA_UNET_PREFIX) in ROW_SWAPPED_MODULES else m.up
        if len(parts) == 1:
            out[parts[0]] = (up, m.down, m.scale)
            continue
        in_features = m.down.shape[1]
        sizes = [in_features] * 3 + [up.shape[0] - 3 * in_features] if len(parts) == 4 else [up.shape[0] // 3] * 3
        if sum(sizes) != up.shape[0] or min(sizes) <= 0:
            raise LoraFileError(f"{name}: {up.shape[0]} output rows cannot hold its parts {parts}")
        absent = padding_slots(m, sizes)
        for i, (part, rows) in enumerate(zip(parts, up.split(sizes, dim=0))):
            if i not in absent:
                out[part] = (rows, m.down, m.scale)
    return out


def padding_slots(m, sizes: list[int]) -> set[int]:
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
