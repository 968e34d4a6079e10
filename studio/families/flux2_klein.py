"""FLUX.2 [klein]: the consumer-card FLUX.2 (4 B and 9 B transformers, Qwen3 text encoders).

Four published models: the undistilled "base" models (the ones to train on: real classifier-free
guidance with an empty negative prompt, ~50 steps) and the step-distilled ones (4 steps, no
guidance; `is_distilled` in their model_index.json). The 4 B models are Apache-2.0, the 9 B models
are under the FLUX Non-Commercial License. Text: Qwen3 (4 B / 8 B) reads the caption through its
chat template; the hidden states of layers 9, 18 and 27 are stacked into one 3·width embedding per
token (Flux2KleinPipeline's defaults), padded to 512 tokens. What FLUX.2 models share (latents,
inputs, targets, blocks, LoRA files) is in flux2.py and flux2_layouts.py.

Memory (weights only, from the architectures on the meta device): the 4 B transformer has 3.88 B
parameters: 7.2 GiB in bf16, 3.6 GiB in int8, 2.0 GiB in NF4; the 9 B one 9.08 B: 16.9 / 8.5 /
4.8 GiB. The Qwen3 encoders (7.5 GiB / 15.3 GiB in bf16) run only while captions are cached.
"""

from __future__ import annotations

from pathlib import Path

from .base import ModelInfo, Variant, register
from .flux2 import TOKEN_LIMIT, Flux2Family, flux2_variant

APACHE = ("Apache-2.0: LoRAs trained on FLUX.2 [klein] 4B, and the images they make, may be used "
          "commercially.")
NON_COMMERCIAL = ("FLUX Non-Commercial License: LoRAs trained on FLUX.2 [klein] 9B, and the images they make, "
                  "are for non-commercial use unless you hold a commercial licence from Black Forest Labs.")
PARAMETERS_B = {"4b": 3.88, "9b": 9.08}  # transformer parameters (meta-device count of the published configs)


def _variant(name, title, hub, licence_id, licence, distilled, size, description) -> Variant:
    return flux2_variant(name, title, hub, licence_id, licence, description, steps=4 if distilled else 50,
                         guidance=1.0 if distilled else 4.0, kohya_version=f"flux2_klein_{size}",
                         parameters_b=PARAMETERS_B[size], train_on=not distilled)


VARIANTS = {
    "base-4b": _variant("base-4b", "FLUX.2 [klein] Base 4B", "black-forest-labs/FLUX.2-klein-base-4B", "apache-2.0",
                        APACHE, False, "4b", "undistilled 4 B, the one to train on; 50 steps with guidance; Apache-2.0"),
    "4b": _variant("4b", "FLUX.2 [klein] 4B", "black-forest-labs/FLUX.2-klein-4B", "apache-2.0", APACHE, True, "4b",
                   "step-distilled 4 B, 4 steps; Apache-2.0"),
    "base-9b": _variant("base-9b", "FLUX.2 [klein] Base 9B", "black-forest-labs/FLUX.2-klein-base-9B",
                        "flux-non-commercial-license", NON_COMMERCIAL, False, "9b",
                        "undistilled 9 B; 50 steps with guidance; non-commercial licence"),
    "9b": _variant("9b", "FLUX.2 [klein] 9B", "black-forest-labs/FLUX.2-klein-9B", "flux-non-commercial-license",
                   NON_COMMERCIAL, True, "9b", "step-distilled 9 B, 4 steps; non-commercial licence"),
}
# Full-size transformer configs (transformer/config.json of the published models).
FULL_CONFIGS = {
    "4b": dict(patch_size=1, in_channels=128, num_layers=5, num_single_layers=20, attention_head_dim=128,
               num_attention_heads=24, joint_attention_dim=7680, timestep_guidance_channels=256, mlp_ratio=3.0,
               axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6, guidance_embeds=False),
    "9b": dict(patch_size=1, in_channels=128, num_layers=8, num_single_layers=24, attention_head_dim=128,
               num_attention_heads=32, joint_attention_dim=12288, timestep_guidance_channels=256, mlp_ratio=3.0,
               axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6, guidance_embeds=False),
}
INNER_DIMS = {24 * 128: "4b", 32 * 128: "9b"}
# Sum of in + out features of each target set's layers (× rank = LoRA parameters), meta-device
# count of the full-size configs (tests/test_plan.py recounts them); the Qwen3 encoders in bf16.
LORA_WIDTH = {"4b": {"attention": 1_167_360, "diffusers_default": 1_044_480, "all_linear": 1_505_280},
              "9b": {"attention": 1_998_848, "diffusers_default": 1_736_704, "all_linear": 2_719_744}}
TEXT_ENCODER_GIB = {"4b": 7.5, "9b": 15.3}
# Weights of the transformer per precision, and the smallest GPU (total GiB) each memory tier is
# chosen for: bf16 training of the 4 B needs ~12 GB (published), int8 ~8 GB; the 9 B ~22 / ~14 GB.
WEIGHT_GIB = {"4b": {"bf16": 7.22, "int8": 3.61, "nf4": 2.03}, "9b": {"bf16": 16.91, "int8": 8.46, "nf4": 4.76}}
TIER_MIN_GIB = {"4b": (("24gb", 14.0), ("16gb", 10.0), ("12gb", 7.0)),
                "9b": (("24gb", 23.0), ("16gb", 15.0), ("12gb", 10.0))}
TINY_README = ("# Flux LoRA Studio tiny FLUX.2 [klein] model ({size})\n\nRandom weights in the FLUX.2 [klein] "
               "architecture, built offline by `python -m studio tiny-model --family flux2-klein`. It makes noise, "
               "not pictures: it lets every part of the studio be tried and tested without downloading FLUX.2.\n")


def size_of(variant: str) -> str:
    """'base-9b' → '9b'; '' (no variant chosen yet) → the 4 B, the size most cards train."""
    return variant.removeprefix("base-") or "4b"


class Flux2Klein(Flux2Family):
    name = "flux2-klein"
    title = "FLUX.2 [klein]"
    pipeline_class_name = "Flux2KleinPipeline"
    kind = "text-to-image"
    tokens_name = "Qwen3"
    variants = VARIANTS
    tier_min_gib = TIER_MIN_GIB["4b"]
    weight_gib = WEIGHT_GIB["4b"]
    # FLUX.2's own shift for the training resolution (the presets' fixed shift is FLUX.1's), and the
    # base models' guidance scale for samples (the distilled ones ignore it).
    config_overrides = {"training": {"timestep_sampling": "resolution_shift"}, "sample": {"guidance": 4.0}}

    def variant_tiers(self, variant: str = "") -> tuple:
        return TIER_MIN_GIB[size_of(variant)]

    def variant_weight_gib(self, variant: str = "") -> dict[str, float]:
        return WEIGHT_GIB[size_of(variant)]

    def variant_lora_width(self, variant: str = "") -> dict[str, int]:
        return dict(LORA_WIDTH[size_of(variant)])

    def variant_text_encoder_gib(self, variant: str = "") -> float:
        return TEXT_ENCODER_GIB[size_of(variant)]

    def full_config(self, variant: str) -> dict:
        return dict(FULL_CONFIGS[size_of(variant)])

    # ------------------------------------------------------------ recognising a model
    def detect(self, model_index: dict, transformer_cfg: dict) -> str | None:
        if not self.is_own_model(model_index, transformer_cfg):
            return None
        if not model_index.get("_class_name") and transformer_cfg.get("guidance_embeds", True):
            return None  # FLUX.2 [dev]: the same transformer class, with guidance embeddings
        size = INNER_DIMS.get(self.inner_dim(transformer_cfg), "4b")  # tiny test models count as 4 B
        return size if model_index.get("is_distilled") else f"base-{size}"

    def guess_variant(self, name: str) -> str:
        text = str(name or "").lower()
        size = "9b" if "9b" in text else "4b"
        return f"base-{size}" if "base" in text or not text else size

    def info(self, source: str, path: str, variant: str, transformer_cfg: dict, vae_cfg: dict) -> ModelInfo:
        by_hub_id = {v.hub_id.lower(): name for name, v in VARIANTS.items()}
        variant = by_hub_id.get(str(source).lower(), variant)  # a hub id names its variant exactly
        return ModelInfo(source=source, path=path, family=variant, guidance_embeds=False, t5_max_length=TOKEN_LIMIT,
                         transformer=transformer_cfg,
                         vae_scale_factor=2 ** (len(vae_cfg.get("block_out_channels", [1, 1, 1, 1])) - 1),
                         latent_channels=vae_cfg.get("latent_channels", 32), family_name=self.name)

    # ------------------------------------------------------------ text
    def _chat(self, pipe, caption: str) -> str:
        return pipe.tokenizer.apply_chat_template([{"role": "user", "content": caption}], tokenize=False,
                                                  add_generation_prompt=True, enable_thinking=False)

    def count_tokens(self, pipe, caption: str) -> int:
        return len(pipe.tokenizer(self._chat(pipe, caption), truncation=False)["input_ids"])

    def free_text_encoders(self, pipe, keep_trainable: bool) -> None:
        """The encoder is not needed after caching. A base model's samples use guidance against the
        empty prompt, so its embedding is kept on the pipeline before the encoder goes."""
        if not pipe.config.is_distilled and pipe.text_encoder is not None:
            device = pipe.text_encoder.device
            pipe.studio_negative_embeds = self.encode_text(pipe, "", device, TOKEN_LIMIT)["prompt_embeds"]
        pipe.text_encoder = None

    # ------------------------------------------------------------ sampling
    def sample(self, pipe, cached: dict, prompt: str, text_encoder, seed: int, steps: int, guidance: float,
               size: tuple[int, int], device, control=None, true_cfg: float = 1.0,
               negative: dict | None = None):
        """One image from cached prompt embeddings: a base model with guidance against the empty
        prompt (when guidance > 1), a distilled model without; an edit run's input image as `image=`."""
        import torch

        dtype = pipe.vae.dtype
        width, height = size
        guided = guidance > 1 and not pipe.config.is_distilled
        negative = None
        if guided:
            negative = getattr(pipe, "studio_negative_embeds", None)
            if negative is None:  # the encoder is still loaded (e.g. a pipeline made for a try-it)
                negative = self.encode_text(pipe, "", device, cached["prompt_embeds"].shape[0])["prompt_embeds"]
            negative = negative[None].to(device, dtype)
        return pipe(prompt_embeds=cached["prompt_embeds"][None].to(device, dtype), negative_prompt_embeds=negative,
                    num_inference_steps=steps, guidance_scale=guidance if guided else 1.0, height=height,
                    width=width, generator=torch.Generator(device).manual_seed(seed),
                    **self.sample_image_args(control, size)).images[0]

    # ------------------------------------------------------------ the offline model
    def build_tiny(self, out_dir, size: str = "tiny", variant: str = "base-4b", seed: int = 0) -> Path:
        """A random-weight Flux2KleinPipeline (`variant` says distilled or base; its size is the tiny one)."""
        from .flux2_tiny import build_klein

        variant = variant or "base-4b"
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        return build_klein(out_dir, size=size, distilled=not variant.startswith("base-"), seed=seed,
                           readme=TINY_README.format(size=size))


FLUX2_KLEIN = register(Flux2Klein())
