"""FLUX.2 [dev]: the large FLUX.2 (a 32 B transformer, Mistral Small 3.x as its text encoder).

Guidance-distilled like FLUX.1 [dev]: the guidance value is an input of the transformer (one pass
per step, no negative prompt). Text: Mistral Small reads the caption after the pipeline's system
message; the hidden states of layers 10, 20 and 30 are stacked (Flux2Pipeline's defaults), padded
to 512 tokens. Latents, inputs, targets, blocks and LoRA files are FLUX.2's (flux2.py,
flux2_layouts.py). Licence: the FLUX [dev] Non-Commercial License.

Memory (weights only, from the architecture on the meta device): the transformer has 32.2 B
parameters: 60.0 GiB in bf16, 30.0 GiB in int8, 16.9 GiB in NF4; the Mistral encoder (24.0 B)
takes 44.7 GiB in bf16 while captions are cached. Published recipes use an int4 text encoder and
an int8 transformer (~22 GB) or cards of 48 GB and more.
"""

from __future__ import annotations

from pathlib import Path

from .base import ModelInfo, register
from .flux2 import TOKEN_LIMIT, Flux2Family, flux2_variant

VARIANTS = {"dev": flux2_variant(
    "dev", "FLUX.2 [dev]", "black-forest-labs/FLUX.2-dev", "flux-dev-non-commercial-license",
    "FLUX [dev] Non-Commercial License: LoRAs trained on FLUX.2 [dev], and the images they make, "
    "are for non-commercial use unless you hold a commercial licence from Black Forest Labs.",
    "guidance-distilled 32 B, 50 steps; non-commercial licence; needs a 48 GB card or more",
    steps=50, guidance=4.0, kohya_version="flux2_dev", parameters_b=32.22, guidance_embeds=True)}
FULL_CONFIG = dict(patch_size=1, in_channels=128, num_layers=8, num_single_layers=48, attention_head_dim=128,
                   num_attention_heads=48, joint_attention_dim=15360, timestep_guidance_channels=256, mlp_ratio=3.0,
                   axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6, guidance_embeds=True)
TINY_README = ("# Flux LoRA Studio tiny FLUX.2 [dev] model ({size})\n\nRandom weights in the FLUX.2 [dev] "
               "architecture, built offline by `python -m studio tiny-model --family flux2-dev`. It makes noise, not "
               "pictures: it lets every part of the studio be tried and tested without downloading FLUX.2.\n")


class Flux2Dev(Flux2Family):
    name = "flux2-dev"
    title = "FLUX.2 [dev]"
    pipeline_class_name = "Flux2Pipeline"
    kind = "text-to-image"
    tokens_name = "Mistral"
    variants = VARIANTS
    # The transformer's weights take 60.0 / 30.0 / 16.9 GiB (bf16 / int8 / NF4): a 48 GB card is the
    # smallest that trains it (int8 base), an 80 GB one trains the bf16 base. The Mistral text encoder
    # (44.7 GiB in bf16, not quantised by the studio yet) runs on the GPU only where it fits beside
    # the loaded weights (the 80 GB card's bf16 tier); elsewhere captions are encoded on the CPU.
    weight_gib = {"bf16": 60.02, "int8": 30.01, "nf4": 16.88}
    tier_min_gib = (("24gb", 80.0), ("16gb", 46.0))
    min_gpu_gib = 46.0  # a "48 GB" card reports about 47 GiB
    # In + out features of each target set's layers, full size (tests/test_plan.py recounts them).
    lora_width = {"attention": 5_210_112, "diffusers_default": 4_816_896, "all_linear": 6_291_456}
    text_encoder_gib = 44.7  # Mistral Small 3.x (24.0 B) in bf16
    config_overrides = {"training": {"timestep_sampling": "resolution_shift"}, "sample": {"guidance": 4.0}}

    def full_config(self, variant: str) -> dict:
        return dict(FULL_CONFIG)

    def detect(self, model_index: dict, transformer_cfg: dict) -> str | None:
        if not self.is_own_model(model_index, transformer_cfg):
            return None
        return "dev" if transformer_cfg.get("guidance_embeds", True) else None

    def guess_variant(self, name: str) -> str:
        return "dev"

    def info(self, source: str, path: str, variant: str, transformer_cfg: dict, vae_cfg: dict) -> ModelInfo:
        return ModelInfo(source=source, path=path, family=variant, guidance_embeds=True, t5_max_length=TOKEN_LIMIT,
                         transformer=transformer_cfg,
                         vae_scale_factor=2 ** (len(vae_cfg.get("block_out_channels", [1, 1, 1, 1])) - 1),
                         latent_channels=vae_cfg.get("latent_channels", 32), family_name=self.name)

    def count_tokens(self, pipe, caption: str) -> int:
        from diffusers.pipelines.flux2.pipeline_flux2 import format_input

        ids = pipe.tokenizer.apply_chat_template(format_input([caption], pipe.system_message),
                                                 add_generation_prompt=False, tokenize=True, return_dict=True)
        return len(ids["input_ids"][0])

    def free_text_encoders(self, pipe, keep_trainable: bool) -> None:
        pipe.text_encoder = None

    def sample(self, pipe, cached: dict, prompt: str, text_encoder, seed: int, steps: int, guidance: float,
               size: tuple[int, int], device, control=None, true_cfg: float = 1.0,
               negative: dict | None = None):
        """One image from cached prompt embeddings, guidance as the transformer's input; an edit run's
        input image as `image=`."""
        import torch

        width, height = size
        return pipe(prompt_embeds=cached["prompt_embeds"][None].to(device, pipe.vae.dtype),
                    num_inference_steps=steps, guidance_scale=guidance, height=height, width=width,
                    generator=torch.Generator(device).manual_seed(seed), **self.sample_image_args(control, size)
                    ).images[0]

    def build_tiny(self, out_dir, size: str = "tiny", variant: str = "dev", seed: int = 0) -> Path:
        from .flux2_tiny import build_dev
        return build_dev(out_dir, size=size, seed=seed, readme=TINY_README.format(size=size))


FLUX2_DEV = register(Flux2Dev())
