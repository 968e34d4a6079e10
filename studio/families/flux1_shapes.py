"""FLUX.1's layers by name and shape, without weights: what studio/verify.py checks files against.

The BFL map is written from FLUX.1's published architecture (the names ComfyUI loads), not from
the LoRA writer's tables (flux1_layouts.py), so a wrong entry there is caught by the check.
"""

from __future__ import annotations

# FLUX.1 [dev] / [schnell] at full size (transformer/config.json of the BFL repositories).
FLUX1_FULL = {"num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
              "joint_attention_dim": 4096, "pooled_projection_dim": 768, "in_channels": 64, "patch_size": 1}


def meta_transformer(config: dict):
    """The FLUX.1 transformer of `config` with no weights (meta device): names and shapes only."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel

    known = {k: v for k, v in config.items() if not k.startswith("_")}
    with init_empty_weights():
        return FluxTransformer2DModel.from_config(known)


def bfl_linear_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """kohya module name -> (out, in) of every linear layer ComfyUI knows in a FLUX.1 model."""
    h = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    mlp = 4 * h  # FLUX.1's mlp_ratio
    patch = int(config.get("patch_size", 1))
    out_channels = int(config.get("out_channels") or config["in_channels"])
    shapes = {"img_in": (h, int(config["in_channels"])), "txt_in": (h, int(config["joint_attention_dim"])),
              "time_in_in_layer": (h, 256), "time_in_out_layer": (h, h),
              "vector_in_in_layer": (h, int(config["pooled_projection_dim"])), "vector_in_out_layer": (h, h),
              "final_layer_linear": (patch * patch * out_channels, h), "final_layer_adaLN_modulation_1": (2 * h, h)}
    if config.get("guidance_embeds"):
        shapes |= {"guidance_in_in_layer": (h, 256), "guidance_in_out_layer": (h, h)}
    for i in range(int(config["num_layers"])):
        for side in ("img", "txt"):
            shapes |= {f"double_blocks_{i}_{side}_mod_lin": (6 * h, h), f"double_blocks_{i}_{side}_attn_qkv": (3 * h, h),
                       f"double_blocks_{i}_{side}_attn_proj": (h, h), f"double_blocks_{i}_{side}_mlp_0": (mlp, h),
                       f"double_blocks_{i}_{side}_mlp_2": (h, mlp)}
    for i in range(int(config["num_single_layers"])):
        shapes |= {f"single_blocks_{i}_linear1": (3 * h + mlp, h), f"single_blocks_{i}_linear2": (h, h + mlp),
                   f"single_blocks_{i}_modulation_lin": (3 * h, h)}
    return {"lora_unet_" + name: shape for name, shape in shapes.items()}
