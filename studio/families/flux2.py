"""What every FLUX.2 model ([klein], [dev]) shares: the transformer's layers and blocks, its latents and inputs.

FLUX.2's transformer (Flux2Transformer2DModel) has double blocks (`transformer_blocks.N`: separate
image and text q/k/v, SwiGLU feed-forwards `ff.linear_in/out`) and single blocks
(`single_transformer_blocks.N`: one fused `attn.to_qkv_mlp_proj` and one fused `attn.to_out`).
Its modulations, embedders and output layer are shared by all blocks: a LoRA there would shift
every block at once, so LoRAs go on the blocks only.

Latents (AutoencoderKLFlux2, 32 channels): the VAE's distribution mode, cut into 2x2 patches
(4·32 = 128 channels at half the resolution) and normalised by the VAE's batch-norm running
statistics, exactly as the diffusers training scripts and the pipelines do. Each patch is one
token; positions are 4-D (t, row, column, layer). Noise level t enters the transformer as σ in
[0, 1], and the pipelines shift their timesteps by exp(mu) from `compute_empirical_mu`.

Reference images (edit LoRAs, trained when the dataset has before/after pairs: base.run_mode): as
Flux2Pipeline / Flux2KleinPipeline take `image=`, the "before" image's latents (the same mode,
patches and batch norm, never noised) are packed and joined after the noisy target tokens, their
positions told apart by the time coordinate (10 for the first reference image, the pipelines'
`_prepare_image_ids`); the transformer's output for them is dropped and the loss is on the target
tokens only, as diffusers' FLUX.2 img2img training scripts do.

Only the standard library at import; diffusers and torch are imported where they are used.
"""

from __future__ import annotations

import math

from .base import Family, ModelInfo, Variant
from .blocks import block_counts, block_of, block_target_modules

TRANSFORMER_CLASS = "Flux2Transformer2DModel"
DOUBLE_ATTENTION = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                    "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"]
DOUBLE_FEED_FORWARD = ["ff.linear_in", "ff.linear_out", "ff_context.linear_in", "ff_context.linear_out"]
SINGLE = ["attn.to_qkv_mlp_proj", "attn.to_out"]  # a single block has no attention-only layer
TARGET_SETS = {
    # double-block attention of both streams, and the single blocks' fused layers
    "attention": DOUBLE_ATTENTION + SINGLE,
    # the diffusers FLUX.2 scripts' default: image-stream q/k/v/out of the double blocks + single blocks
    "diffusers_default": ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"] + SINGLE,
    "all_linear": DOUBLE_ATTENTION + DOUBLE_FEED_FORWARD + SINGLE,
}
# The pipelines' default number of steps; the training shift uses the mu they would use there.
SHIFT_STEPS = 50
TOKEN_LIMIT = 512  # every FLUX.2 pipeline's max_sequence_length


def flux2_variant(name: str, title: str, hub_id: str, licence_id: str, licence_text: str, description: str, *,
                  steps: int, guidance: float, kohya_version: str, parameters_b: float,
                  guidance_embeds: bool = False, train_on: bool = True) -> Variant:
    """One published FLUX.2 model: what differs between them; the token limit is FLUX.2's."""
    return Variant(name=name, title=title, hub_id=hub_id, licence_id=licence_id, licence_text=licence_text,
                   token_limit=TOKEN_LIMIT, guidance_embeds=guidance_embeds, steps=steps, guidance=guidance,
                   kohya_version=kohya_version, description=description, parameters_b=parameters_b,
                   train_on=train_on)


def resolution_shift(image_seq_len: int) -> float:
    """The timestep shift exp(mu) the FLUX.2 pipelines use at this many tokens (their default 50 steps)."""
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    return math.exp(compute_empirical_mu(image_seq_len, SHIFT_STEPS))


def batch_norm_stats(vae, device, dtype):
    """(mean, std) of the VAE's latent batch norm, shaped to broadcast over patchified latents."""
    import torch

    mean = vae.bn.running_mean.view(1, -1, 1, 1).to(device, dtype)
    std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(device, dtype)
    return mean, std


def pipeline_helpers():
    """Flux2Pipeline: its static patchify/pack/id helpers are the ones every FLUX.2 pipeline uses."""
    from diffusers import Flux2Pipeline
    return Flux2Pipeline


class Flux2Family(Family):
    """The FLUX.2 parts of the Family interface; a subclass adds its text encoder, variants and loading."""

    transformer_class_name = TRANSFORMER_CLASS
    target_sets = TARGET_SETS
    latent_channels = 32
    text_encoder_targets: list[str] = []  # no text-encoder LoRA for FLUX.2's large language models
    reference_images = True  # the pipelines take `image=`: a dataset of pairs trains an edit LoRA
    resolution_shift = staticmethod(resolution_shift)
    block_of = staticmethod(block_of)
    block_counts = staticmethod(block_counts)

    def pipeline_class(self):
        import diffusers
        return getattr(diffusers, self.pipeline_class_name)

    def is_own_model(self, model_index: dict, transformer_cfg: dict) -> bool:
        """A FLUX.2 transformer behind this family's pipeline (or with no model_index.json: a hub id)."""
        pipeline = model_index.get("_class_name")
        if pipeline and pipeline != self.pipeline_class_name:
            return False
        return transformer_cfg.get("_class_name") == TRANSFORMER_CLASS

    def target_modules(self, lora, transformer) -> list[str]:
        return block_target_modules(lora, transformer, self.target_sets)

    def inner_dim(self, transformer_cfg: dict) -> int:
        return transformer_cfg["num_attention_heads"] * transformer_cfg["attention_head_dim"]

    def tier_memory(self, variant: str = "") -> dict:
        """No published peaks yet: the variant's weights plus FLUX.1's published overhead, scaled."""
        from .flux1 import FLUX1
        from .plan_facts import scaled_tier_memory

        config = self.full_config(variant)
        return scaled_tier_memory(FLUX1.plan_facts("dev"), self.variant_weight_gib(variant), self.inner_dim(config),
                                  config["num_layers"] + config["num_single_layers"])

    def detect_keys(self, keys) -> bool:
        """A FLUX.2 transformer file: its shared modulation layers (diffusers or BFL names) are FLUX.2's own."""
        return any(k.removeprefix("model.diffusion_model.").startswith(("single_stream_modulation.",
                                                                         "double_stream_modulation_img."))
                   for k in keys)

    def trainable_text_encoder(self, pipe):
        return None

    def text_encoder_modules(self, pipe) -> dict:
        return {self.tokens_name: pipe.text_encoder} if pipe.text_encoder is not None else {}

    def encode_text(self, pipe, caption: str, device, token_limit: int) -> dict:
        """Caption → {prompt_embeds: the text model's stacked hidden states}, float32 on the CPU, for the cache."""
        import torch

        with torch.no_grad():
            embeds, _ = pipe.encode_prompt(prompt=caption, device=device, max_sequence_length=token_limit)
        return {"prompt_embeds": embeds[0].float().cpu()}

    def text_inputs(self, pipe, cached: list[dict], captions: list[str], text_encoder, device) -> dict:
        import torch

        return {"embeds": torch.stack([c["prompt_embeds"] for c in cached]).to(device)}

    # ------------------------------------------------------------ latents and the step's inputs
    def encode_image(self, pipe, pixels):
        """Pixels (1, 3, H, W) in [-1, 1] → the VAE's latent distribution parameters (cached)."""
        import torch

        with torch.no_grad():
            return pipe.vae.encode(pixels.to(pipe.vae.dtype)).latent_dist.parameters[0].float().cpu()

    def latents(self, pipe, params, generator, device):
        """The distribution's mode (as the FLUX.2 scripts take it), patchified and batch-normalised:
        (B, 4C, H/2, W/2). Nothing is drawn, so `generator` is untouched."""
        mode = params[:, : params.shape[1] // 2].to(device)
        patches = pipeline_helpers()._patchify_latents(mode)
        mean, std = batch_norm_stats(pipe.vae, device, patches.dtype)
        return (patches - mean) / std

    def reference_latents(self, pipe, params, device):
        """A reference image's latents, encoded as the pipelines encode `image=` (the mode, in patches,
        batch-normalised); nothing is drawn."""
        return self.latents(pipe, params, None, device)

    def image_seq_len(self, latents) -> int:
        h, w = latents.shape[-2:]
        return h * w  # latents are already in 2x2 patches: one token each

    def training_guidance(self, info, configured: float | None) -> float | None:
        """FLUX.2 [dev] is trained at a guidance value (its scripts: 1.0 unless set); [klein] takes none."""
        return (configured or 1.0) if info.guidance_embeds else None

    def model_inputs(self, noisy, target, t, text: dict, guidance, dtype, reference=None) -> tuple[dict, object]:
        """The transformer's keyword arguments for patchified noisy latents, and the target as tokens.
        `reference` (an edit run): reference latents (`reference_latents`), packed after the image
        tokens with the pipelines' reference ids (time coordinate 10, every sample's one image)."""
        import torch

        helpers = pipeline_helpers()
        b, device = noisy.shape[0], noisy.device
        embeds = text["embeds"]
        tokens, ids = helpers._pack_latents(noisy), helpers._prepare_latent_ids(noisy).to(device)
        if reference is not None:
            ref_ids = helpers._prepare_image_ids([reference[:1]]).to(device).expand(b, -1, -1)
            tokens, ids = torch.cat([tokens, helpers._pack_latents(reference)], dim=1), torch.cat([ids, ref_ids], dim=1)
        kwargs = dict(hidden_states=tokens.to(dtype), timestep=t.to(dtype),
                      guidance=None if guidance is None else torch.full((b,), guidance, device=device,
                                                                        dtype=torch.float32),
                      encoder_hidden_states=embeds.to(dtype),
                      txt_ids=helpers._prepare_text_ids(embeds).to(device), img_ids=ids, return_dict=False)
        return kwargs, helpers._pack_latents(target)

    def prediction(self, output, target):
        """The transformer's output in the target's layout: the image tokens (reference tokens dropped)."""
        return output[0][:, : target.shape[1]]

    def sample_image_args(self, control, size) -> dict:
        """The pipeline's `image=` for an edit run's input picture, at the sample size (training pairs a
        "before" image with its target at one size); nothing for text-to-image."""
        if control is None:
            return {}
        from PIL import ImageOps

        return {"image": control if control.size == tuple(size) else ImageOps.fit(control, tuple(size))}

    # ------------------------------------------------------------ loading
    def load(self, info: ModelInfo, transformer_file: str = "", dtype=None, revision: str = "",
             base_precision: str = "auto"):
        """The family's pipeline, its transformer optionally from a single file and optionally
        quantised (the frozen base in 8/4 bits, the LoRA in fp32), everything frozen."""
        from diffusers import Flux2Transformer2DModel

        from ..models import load_frozen_pipeline

        return load_frozen_pipeline(info, Flux2Transformer2DModel, self.pipeline_class(),
                                    ("transformer", "vae", "text_encoder"), transformer_file, dtype, revision,
                                    base_precision)

    # ------------------------------------------------------------ LoRA files
    def write_lora(self, out_dir, name, transformer_layers, rank, alpha, metadata, **kwargs) -> dict:
        from .flux2_layouts import write_lora

        variant = str(metadata.get("model_variant") or "")
        variant = variant if variant in self.variants else self.guess_variant(metadata.get("base_model", ""))
        return write_lora(self, variant, out_dir, name, transformer_layers, rank, alpha, metadata, **kwargs)

    def validate(self, path):
        from .flux2_layouts import validate
        return validate(path)

    def delta_weights(self, path, **kwargs) -> dict:
        from .flux2_layouts import delta_weights
        return delta_weights(path)

    def lora_factors(self, path) -> dict:
        from .flux2_layouts import lora_factors
        return lora_factors(path)

    def meta_transformer(self, config: dict):
        from .flux2_layouts import meta_transformer
        return meta_transformer(config)

    def comfy_shapes(self, config: dict) -> dict:
        from .flux2_layouts import comfy_linear_shapes
        return comfy_linear_shapes(config)
