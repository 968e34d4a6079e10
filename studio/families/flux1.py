"""FLUX.1 [dev] and [schnell]: every fact of the FLUX.1 family in one place.

What loads (a hub id, a diffusers folder, or a single-file transformer plus a folder), how a
caption becomes cached embeddings (CLIP pooled + T5 sequence, T5 limit per variant), how image
latents are normalised and packed into 2×2 tokens with their position ids, how guidance enters
(only [dev] has guidance embeddings), which layers get a LoRA and which block each belongs to,
how a sample is drawn, the licences and inference defaults, and the memory each weight precision
needs. The LoRA file layouts are in flux1_layouts.py, the offline tiny builder in flux1_tiny.py.

Only the standard library at import; diffusers and torch are imported where they are used.
"""

from __future__ import annotations

from pathlib import Path

from .base import Family, ModelInfo, Variant, register
from .blocks import block_counts, block_of, block_target_modules

VARIANTS = {
    "dev": Variant(
        name="dev", title="FLUX.1 [dev]", hub_id="black-forest-labs/FLUX.1-dev",
        licence_id="flux-1-dev-non-commercial-license",
        licence_text="FLUX.1 [dev] Non-Commercial License: outputs and LoRAs of this base are for "
                     "non-commercial use unless you hold a commercial licence from Black Forest Labs.",
        token_limit=512, guidance_embeds=True, steps=28, guidance=3.5, kohya_version="flux1",
        description="guidance-distilled, 28 steps, non-commercial licence", parameters_b=11.90),
    "schnell": Variant(
        name="schnell", title="FLUX.1 [schnell]", hub_id="black-forest-labs/FLUX.1-schnell",
        licence_id="apache-2.0",
        licence_text="Apache-2.0: LoRAs trained on FLUX.1 [schnell] may be used commercially.",
        token_limit=256, guidance_embeds=False, steps=4, guidance=0.0, kohya_version="flux1-schnell",
        description="timestep-distilled, 4 steps, Apache-2.0", parameters_b=11.90),
}
TOKEN_LIMITS = {name: v.token_limit for name, v in VARIANTS.items()}
CLIP_TOKENS = 77  # the CLIP text encoder's fixed length

# The smallest GPU (total GiB) each memory tier is chosen for. The FLUX.1 transformer has 11.90 B
# parameters, nearly all in linear layers: its weights alone take 22.2 GiB in bf16, 11.1 GiB in
# int8 and 5.7 GiB in NF4 (block scales included), so bf16 cannot train on a 24 GB card.
WEIGHT_GIB = {"bf16": 22.2, "int8": 11.1, "nf4": 5.7}
# A 24 GB card (23.99 GiB, before the CUDA context, LoRA, optimiser and activations) therefore
# gets the 16 GB tier. Below 11 GiB only the 8 GB tier's block offload fits.
TIER_MIN_GIB = (("24gb", 26.0), ("16gb", 15.0), ("12gb", 11.0))
# The text encoders in bf16 (T5-XXL's encoder 4.76 B parameters, CLIP-L's text model 0.12 B),
# on the GPU while captions are cached.
TEXT_ENCODER_GIB = 9.1


def tier_memory() -> dict:
    """The peak the field publishes for a FLUX.1 LoRA in each tier at 512 px, its growth per 1,536
    more image tokens, and the step's slowdown (studio/families/plan_facts.py)."""
    from .plan_facts import TierMemory

    return {
        "24gb": TierMemory(27.0, 2.0, 1.0, "published: bf16 base ~26-30 GB (HF QLoRA blog, SimpleTuner)"),
        "16gb": TierMemory(18.0, 1.5, 1.1, "published: int8/fp8 base ~18 GB (SimpleTuner, sd-scripts)"),
        "12gb": TierMemory(9.2, 1.2, 1.0, "published: NF4 base, 9.1-9.5 GB floor (HF QLoRA blog, SimpleTuner)"),
        "8gb": TierMemory(7.5, 0.8, 2.5, "published: NF4 + offloaded blocks, 8 GB with block swapping (sd-scripts); "
                                         "the 2.5x slower steps are an estimate"),
    }

# LoRA target sets: module-name suffixes inside the transformer blocks.
TARGET_SETS = {
    "attention": ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                  "attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out"],
    # diffusers' train_dreambooth_lora_flux default; peft matches by suffix, so single blocks get q/k/v.
    "diffusers_default": ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
                          "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
                          "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"],
}
TARGET_SETS["all_linear"] = TARGET_SETS["diffusers_default"] + [
    "proj_mlp", "proj_out", "norm.linear", "norm1.linear", "norm1_context.linear"]
# Sum of in + out features of the layers each target set trains (full size); a LoRA of rank r has
# r times this many parameters. tests/test_plan.py recounts them on the meta device.
LORA_WIDTH = {"attention": 1_634_304, "diffusers_default": 2_801_664, "all_linear": 5_369_856}
CLIP_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
TRANSFORMER_CLASS = "FluxTransformer2DModel"


def pipeline_class():
    """diffusers' FluxPipeline (imported on use: it pulls in torch)."""
    from diffusers import FluxPipeline
    return FluxPipeline


def resolution_shift(image_seq_len: int) -> float:
    """The timestep shift FLUX.1's scheduler applies at this many latent tokens (256 → 0.5, 4096 → 1.15)."""
    import math

    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    return math.exp(calculate_shift(image_seq_len))


def guess_variant(name: str) -> str:
    """A file that does not say its variant: schnell when its base model's name says so, else dev."""
    return "schnell" if "schnell" in str(name or "").lower() else "dev"


def target_modules(lora, transformer) -> list[str]:
    """Full module names that get a LoRA (explicit names, so block selection is exact).
    `lora`: the config's LoraConfig section (targets, target_modules, double/single_blocks)."""
    return block_target_modules(lora, transformer, TARGET_SETS)


def pack(latents):
    """(B, C, H, W) latents → (B, H/2·W/2, 4C) tokens of 2×2 patches (FluxPipeline's own packing)."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    return FluxPipeline._pack_latents(latents, b, c, h, w)


def image_ids(batch: int, height: int, width: int, device, dtype):
    """Position ids of the packed latent tokens (row, column per 2×2 patch)."""
    from diffusers import FluxPipeline

    return FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, device, dtype)


class Flux1Files:
    """FLUX.1's LoRA files and the architecture facts that check them: the writer and reader in
    flux1_files.py, the key maps in flux1_layouts.py, the shapes in flux1_shapes.py, the offline
    model in flux1_tiny.py (all imported on use: they pull in torch)."""

    # ------------------------------------------------------------ LoRA files
    def write_lora(self, *args, **kwargs):
        from .flux1_files import save_lora
        return save_lora(*args, **kwargs)

    def validate(self, path):
        from .flux1_files import validate_lora_file
        return validate_lora_file(path)

    def delta_weights(self, path, **kwargs):
        from .flux1_files import delta_weights
        return delta_weights(path, **kwargs)

    def full_config(self, variant: str) -> dict:
        from .flux1_shapes import FLUX1_FULL
        return {**FLUX1_FULL, "guidance_embeds": variant != "schnell"}

    def meta_transformer(self, config: dict):
        from .flux1_shapes import meta_transformer
        return meta_transformer(config)

    def comfy_shapes(self, config: dict) -> dict:
        from .flux1_shapes import bfl_linear_shapes
        return bfl_linear_shapes(config)

    def lora_factors(self, path) -> dict:
        from .flux1_layouts import lora_factors
        return lora_factors(path)

    # ------------------------------------------------------------ the offline model
    def build_tiny(self, out_dir, size: str = "tiny", variant: str = "schnell", seed: int = 0) -> Path:
        from .flux1_tiny import build_demo_model
        return build_demo_model(out_dir, size=size, dev=variant == "dev", seed=seed)


class Flux1(Flux1Files, Family):
    name = "flux1"
    title = "FLUX.1"
    pipeline_class_name = "FluxPipeline"
    tokens_name = "T5"  # the token limit is T5's (CLIP's 77 tokens only feed the pooled vector)
    variants = VARIANTS
    target_sets = TARGET_SETS
    text_encoder_targets = CLIP_LORA_TARGETS
    tier_min_gib = TIER_MIN_GIB
    weight_gib = WEIGHT_GIB
    lora_width = LORA_WIDTH
    text_encoder_gib = TEXT_ENCODER_GIB
    guess_variant = staticmethod(guess_variant)
    resolution_shift = staticmethod(resolution_shift)
    target_modules = staticmethod(target_modules)
    block_of = staticmethod(block_of)
    block_counts = staticmethod(block_counts)

    # ------------------------------------------------------------ recognising a model
    def detect(self, model_index: dict, transformer_cfg: dict) -> str | None:
        pipeline = model_index.get("_class_name")
        if pipeline and pipeline != self.pipeline_class_name:
            return None  # another pipeline around the same transformer (e.g. an edit model)
        cls = transformer_cfg.get("_class_name")
        if cls is None:  # a config written by hand: FLUX.1 has single blocks and a joint text width
            if not {"num_single_layers", "joint_attention_dim"} <= set(transformer_cfg):
                return None
        elif cls != TRANSFORMER_CLASS:
            return None
        return "dev" if transformer_cfg.get("guidance_embeds", False) else "schnell"

    def detect_keys(self, keys) -> bool:
        """Whether a single-file state dict's key names are a FLUX.1 transformer (diffusers or BFL names)."""
        keys = list(keys)
        if any("stream_modulation" in k for k in keys):
            return False  # FLUX.2: the same block names, with modulations shared by all blocks
        return any(k.startswith(("single_transformer_blocks.", "single_blocks.", "model.diffusion_model.single_blocks."))
                   for k in keys)

    def info(self, source: str, path: str, variant: str, transformer_cfg: dict, vae_cfg: dict) -> ModelInfo:
        v = self.variants[variant]
        return ModelInfo(source=source, path=path, family=variant, guidance_embeds=v.guidance_embeds,
                         t5_max_length=v.token_limit, transformer=transformer_cfg,
                         vae_scale_factor=2 ** (len(vae_cfg.get("block_out_channels", [1, 1, 1, 1])) - 1),
                         latent_channels=vae_cfg.get("latent_channels", 16), family_name=self.name)

    def inner_dim(self, transformer_cfg: dict) -> int:
        return transformer_cfg["num_attention_heads"] * transformer_cfg["attention_head_dim"]

    def tier_memory(self, variant: str = "") -> dict:
        return tier_memory()

    # ------------------------------------------------------------ loading
    def diffusers_pipeline(self):
        """The diffusers pipeline class this family's models load with."""
        return pipeline_class()

    def load(self, info: ModelInfo, transformer_file: str = "", dtype=None, revision: str = "",
             base_precision: str = "auto"):
        """The family's pipeline for a model, its transformer optionally replaced by a single file and
        optionally quantised (QLoRA style: the frozen base is stored in 8/4 bits, LoRA trains in fp32)."""
        from diffusers import FluxTransformer2DModel

        from ..models import load_frozen_pipeline

        return load_frozen_pipeline(info, FluxTransformer2DModel, self.diffusers_pipeline(),
                                    ("transformer", "vae", "text_encoder", "text_encoder_2"), transformer_file, dtype,
                                    revision, base_precision)

    # ------------------------------------------------------------ text
    def count_tokens(self, pipe, caption: str) -> int:
        return len(pipe.tokenizer_2(caption, truncation=False)["input_ids"])

    def text_encoder_modules(self, pipe) -> dict:
        named = {"T5": pipe.text_encoder_2, "CLIP": pipe.text_encoder}
        return {name: module for name, module in named.items() if module is not None}

    def encode_text(self, pipe, caption: str, device, token_limit: int) -> dict:
        """Caption → {prompt_embeds (T5 sequence), pooled (CLIP)}, float32 on the CPU, for the cache."""
        import torch

        with torch.no_grad():
            embeds, pooled, _ = pipe.encode_prompt(caption, None, device=device, max_sequence_length=token_limit)
        return {"prompt_embeds": embeds[0].float().cpu(), "pooled": pooled[0].float().cpu()}

    def free_text_encoders(self, pipe, keep_trainable: bool) -> None:
        """The encoders are not needed after caching, except CLIP when its LoRA trains."""
        pipe.text_encoder_2 = None
        if not keep_trainable:
            pipe.text_encoder = None

    def trainable_text_encoder(self, pipe):
        return pipe.text_encoder

    def _pooled(self, pipe, text_encoder, captions: list[str], device):
        tokens = pipe.tokenizer(captions, padding="max_length", max_length=CLIP_TOKENS, truncation=True,
                                return_tensors="pt").input_ids.to(device)
        return text_encoder(tokens).pooler_output

    def text_inputs(self, pipe, cached: list[dict], captions: list[str], text_encoder, device) -> dict:
        """A batch's text conditioning: cached T5 embeddings; CLIP pooled from the cache, or from
        the trainable CLIP encoder when its LoRA trains (its pooled vector moves)."""
        import torch

        embeds = torch.stack([c["prompt_embeds"] for c in cached]).to(device)
        if text_encoder is not None:
            pooled = self._pooled(pipe, text_encoder, captions, device).float()
        else:
            pooled = torch.stack([c["pooled"] for c in cached]).to(device)
        return {"embeds": embeds, "pooled": pooled}

    # ------------------------------------------------------------ latents and the step's inputs
    def encode_image(self, pipe, pixels):
        """Pixels (1, 3, H, W) in [-1, 1] → the VAE's latent distribution parameters (cached)."""
        import torch

        with torch.no_grad():
            return pipe.vae.encode(pixels.to(pipe.vae.dtype)).latent_dist.parameters[0].float().cpu()

    def latents(self, pipe, params, generator, device):
        """A draw from the cached distribution, shifted and scaled as the transformer expects."""
        import torch
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        dist = DiagonalGaussianDistribution(params)
        noise = torch.randn(dist.mean.shape, generator=generator, device=device)
        vae = pipe.vae.config
        return (dist.mean + dist.std * noise - vae.shift_factor) * vae.scaling_factor

    def image_seq_len(self, latents) -> int:
        h, w = latents.shape[-2:]
        return (h // 2) * (w // 2)


    def reference_latents(self, pipe, params, device):
        """A reference (control) image's latents from its cached distribution: the mode, shifted and
        scaled, as FluxKontextPipeline encodes its input image (no draw: the condition is fixed)."""
        vae = pipe.vae.config
        mean = params.to(device)[:, : params.shape[1] // 2]
        return (mean - vae.shift_factor) * vae.scaling_factor

    def model_inputs(self, noisy, target, t, text: dict, guidance: float | None, dtype,
                     reference=None) -> tuple[dict, object]:
        """The transformer's keyword arguments for noisy latents, and the target in the same packing.
        `reference` (edit training): reference-image latents, packed and joined after the image tokens
        with their own position ids (first id 1), as FluxKontextPipeline does; `prediction` then keeps
        only the image tokens."""
        import torch

        b, _, h, w = noisy.shape
        device = noisy.device
        embeds = text["embeds"]
        tokens, ids = pack(noisy), image_ids(b, h, w, device, dtype)
        if reference is not None:
            ref_ids = image_ids(b, reference.shape[2], reference.shape[3], device, dtype)
            ref_ids[..., 0] = 1
            tokens, ids = torch.cat([tokens, pack(reference)], dim=1), torch.cat([ids, ref_ids], dim=0)
        kwargs = dict(hidden_states=tokens.to(dtype), timestep=t.to(dtype),
                      guidance=None if guidance is None else torch.full((b,), guidance, device=device,
                                                                        dtype=torch.float32),
                      pooled_projections=text["pooled"].to(dtype), encoder_hidden_states=embeds.to(dtype),
                      txt_ids=torch.zeros(embeds.shape[1], 3, device=device, dtype=dtype),
                      img_ids=ids, return_dict=False)
        return kwargs, pack(target)

    def prediction(self, output, target):
        """The transformer's output in the target's layout: the image tokens (reference tokens dropped)."""
        return output[0][:, : target.shape[1]]

    def training_guidance(self, info: ModelInfo, configured: float | None) -> float | None:
        """The guidance value a [dev] model is trained at (1.0 unless set); None for [schnell]."""
        return (configured or 1.0) if info.guidance_embeds else None

    # ------------------------------------------------------------ sampling
    def sample(self, pipe, cached: dict, prompt: str, text_encoder, seed: int, steps: int, guidance: float,
               size: tuple[int, int], device, control=None, true_cfg: float = 1.0, negative: dict | None = None):
        """One image from cached prompt embeddings (the text encoders are freed after caching).
        `control`: the input image of an edit family (None for text-to-image). With `true_cfg` above 1
        and the empty prompt's cached embeddings as `negative`, guidance against the empty prompt."""
        import torch

        dtype = pipe.vae.dtype
        # The CLIP LoRA trains: its pooled vectors move, so they come from the encoder, not the cache.
        pooled_of = None if text_encoder is None else (lambda texts: self._pooled(pipe, text_encoder, texts, device))
        pooled = cached["pooled"][None] if pooled_of is None else pooled_of([prompt])
        guide = empty_prompt_guidance(true_cfg, negative, pooled_of, device, dtype)
        width, height = size
        return pipe(prompt_embeds=cached["prompt_embeds"][None].to(device, dtype),
                    pooled_prompt_embeds=pooled.to(device, dtype), num_inference_steps=steps,
                    guidance_scale=guidance, height=height, width=width,
                    generator=torch.Generator(device).manual_seed(seed), **guide,
                    **self.sample_image_args(control, size)).images[0]

    def true_cfg_args(self, true_cfg: float) -> dict:
        """FluxPipeline's (and FluxKontextPipeline's) guidance against the empty prompt."""
        return dict(true_cfg_scale=true_cfg, negative_prompt="") if true_cfg > 1 else {}

    def sample_image_args(self, control, size) -> dict:
        """The pipeline's extra arguments for an input image; FLUX.1 text-to-image takes none."""
        return {}


def empty_prompt_guidance(true_cfg: float, negative: dict | None, pooled_of, device, dtype) -> dict:
    """FluxPipeline's arguments for guidance against the empty prompt from its cached embeddings
    (none when `true_cfg` is 1 or less). `pooled_of(texts)`: CLIP vectors from a training CLIP LoRA,
    else None (the cached one)."""
    if true_cfg <= 1 or negative is None:
        return {}
    pooled = negative["pooled"][None] if pooled_of is None else pooled_of([""])
    return dict(true_cfg_scale=true_cfg, negative_prompt_embeds=negative["prompt_embeds"][None].to(device, dtype),
                negative_pooled_prompt_embeds=pooled.to(device, dtype))


FLUX1 = register(Flux1())
