"""FLUX.3 [klein]: one transformer (Flux3Transformer2DModel), a Qwen3-VL text model, FLUX.2's VAE.

diffusers samples FLUX.3 only through its modular pipelines (Flux3ModularPipeline for the base
model, Flux3DistilledModularPipeline for the step-distilled flow map); there is no classic
DiffusionPipeline. The studio loads those pipelines without their prompt-upsampler step (captions
are encoded as written, as a trainer must), and samples through their own denoise and decode blocks
from cached prompt embeddings.

The transformer: per-mode blocks (`txt_mode_blocks.N` for the text, `mode_blocks.image.N` for the
image, `mode_blocks.image_cond.N` for reference images), then joint single blocks
(`single_transformer_blocks.N`); every block has unfused q/k/v, `attn.to_out.0` and a SwiGLU
feed-forward `ff.linear_in/out`. The studio calls the per-mode blocks its "double" blocks (their
index selects the text and image block N together) and trains text-to-image: the reference-image
blocks get no LoRA (they see no input). Modulations, embedders and the output layer are shared by
all blocks and are never trained.

Latents are FLUX.2's (AutoencoderKLFlux2: 2x2 patches, batch-norm statistics), so this family
shares FLUX.2's latent code (flux2.py). Text: the caption through Qwen3-VL's chat template, the
hidden states of layers 4, 8, …, 32 stacked per token (the text-encoder step's defaults); the
studio pads every caption to the token limit (the step's own `pad_multiple`) so a batch stacks.
Noise: σ in [0, 1] enters the transformer directly; the pipelines sample at a constant shift of
6.93 at every resolution, and training uses the same. The step-distilled model is a flow map that
also takes the timestep a step jumps to: the training step gives it t itself (a step of length
zero, whose prediction is the velocity flow matching trains).

Sizes: 5.54 B transformer parameters (5.55 B distilled), counted on the meta device from
Flux3Transformer2DModel's default config, which diffusers' single-file loader pairs with the
published checkpoints (black-forest-labs/flux-3-image-klein-base, …-klein). Licence: diffusers
does not state it; the variants say to read the model card.
"""

from __future__ import annotations

from pathlib import Path

from .base import ModelError, ModelInfo, Variant, register
from .flux2 import Flux2Family

TRANSFORMER_CLASS = "Flux3Transformer2DModel"
TOKEN_LIMIT = 512  # every caption is padded to this many tokens (the pipeline's own limit is 8192)
SHIFT = 6.93  # Flux3SetTimestepsStep's constant shift (the pipelines' scheduler)
ATTENTION = ["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]
FEED_FORWARD = ["ff.linear_in", "ff.linear_out"]
TARGET_SETS = {"attention": ATTENTION, "diffusers_default": ATTENTION, "all_linear": ATTENTION + FEED_FORWARD}
# Block containers → the studio's block kinds ("double": per-mode blocks, "single": joint blocks).
BLOCKS = {"txt_mode_blocks": "double", "mode_blocks.image": "double", "single_transformer_blocks": "single"}
PARAMETERS_B = {"base": 5.54, "distilled": 5.55}
# Weights per precision (bf16: 2 bytes, int8: 1, NF4: 0.5 + a float32 scale per 64 weights).
WEIGHT_GIB = {"bf16": 10.32, "int8": 5.16, "nf4": 2.90}
# Estimated from the weights (between the FLUX.2 [klein] 4B and 9B tables), not measured on a GPU.
TIER_MIN_GIB = (("24gb", 18.0), ("16gb", 12.0), ("12gb", 8.0))
LICENCE = ("Licence not stated in diffusers: read the model card of {hub} before sharing LoRAs trained on it "
           "or the images they make.")
TINY_README = ("# Flux LoRA Studio tiny FLUX.3 model ({size})\n\nRandom weights in the FLUX.3 architecture, built "
               "offline by `python -m studio tiny-model --family flux3`. It makes noise, not pictures: it lets every "
               "part of the studio be tried and tested without downloading FLUX.3.\n")


def _variant(name, title, hub, distilled, description) -> Variant:
    return Variant(name=name, title=title, hub_id=hub, licence_id="other", licence_text=LICENCE.format(hub=hub),
                   token_limit=TOKEN_LIMIT, guidance_embeds=False, steps=16 if distilled else 50,
                   guidance=1.0 if distilled else 3.5, kohya_version="flux3_klein", description=description,
                   parameters_b=PARAMETERS_B[name], train_on=not distilled)


VARIANTS = {
    "base": _variant("base", "FLUX.3 [klein] Base", "black-forest-labs/flux-3-image-klein-base", False,
                     "undistilled, the one to train on; 50 steps with guidance; licence: see the model card"),
    "distilled": _variant("distilled", "FLUX.3 [klein]", "black-forest-labs/flux-3-image-klein", True,
                          "step-distilled flow map, 16 steps, no guidance; licence: see the model card"),
}


def block_of(param_name: str) -> str:
    """'txt_mode_blocks.3…' and 'mode_blocks.image.3…' → 'double.3'; 'single_transformer_blocks.10…' → 'single.10'."""
    for container, kind in BLOCKS.items():
        head = container + "."
        if param_name.startswith(head) or f".{head}" in param_name:
            return f"{kind}.{param_name.split(head, 1)[1].split('.')[0]}"
    return "other"


def block_counts(transformer) -> dict[str, int]:
    return {"double": len(transformer.txt_mode_blocks), "single": len(transformer.single_transformer_blocks)}


def text_layers() -> tuple[int, ...]:
    """The text model's hidden layers the pipeline stacks (Flux3TextEncoderStep's default)."""
    from diffusers.modular_pipelines.flux3.encoders import Flux3TextEncoderStep

    return next(p.default for p in Flux3TextEncoderStep().inputs if p.name == "text_encoder_out_layers")


class ModularLoader:
    """`from_pretrained` in DiffusionPipeline's shape (what studio/models.py calls) for FLUX.3's modular
    pipeline: its auto blocks without the prompt upsampler, the four model components loaded."""

    PARTS = ("transformer", "vae", "text_encoder", "tokenizer")

    def __init__(self, distilled: bool):
        self.distilled = distilled

    def from_pretrained(self, path: str, dtype=None, transformer=None, revision: str = ""):
        import diffusers

        name = "Flux3DistilledAutoBlocks" if self.distilled else "Flux3AutoBlocks"
        blocks = getattr(diffusers, name)()
        blocks.sub_blocks.pop("prompt_upsampler")
        pipeline_class = getattr(diffusers, "Flux3DistilledModularPipeline" if self.distilled
                                 else "Flux3ModularPipeline")
        pipe = pipeline_class(blocks=blocks, pretrained_model_name_or_path=path,
                              **({"revision": revision} if revision else {}))
        names = [n for n in self.PARTS if not (n == "transformer" and transformer is not None)]
        pipe.load_components(names=names, dtype=dtype)
        if transformer is not None:
            pipe.update_components(transformer=transformer)
        missing = [n for n in self.PARTS if getattr(pipe, n, None) is None]
        if missing:  # load_components logs each failure as a warning and goes on
            raise ModelError(f"Cannot load the base model from {path}: {', '.join(missing)} did not load (the "
                             "warnings above say why). A FLUX.3 folder needs modular_model_index.json and the "
                             "transformer/, vae/, text_encoder/ and tokenizer/ folders.")
        return pipe


# Flux3Transformer2DModel's defaults: the published shape (diffusers' single-file loader pairs them).
FULL_CONFIG = dict(in_channels=128, cond_in_channels=128, num_layers=5, num_single_layers=28, attention_head_dim=128,
                   num_attention_heads=24, joint_attention_dim=20480, timestep_channels=256, mlp_ratio=3.0,
                   axes_dims_rope=(32, 32, 32, 32), rope_theta=10000, eps=1e-06)
# For the plan: in + out features of each target set's layers (meta-device count of the full-size
# transformer, both variants; tests/test_family_flux3.py recounts them) and the text encoder in
# bf16 — Qwen3-VL with 2,560-wide layers (8 stacked layers make the transformer's 20,480-wide text
# input), ~4.4 B parameters: an estimate from the architecture, the published encoder is not at hand.
LORA_WIDTH = {"attention": 933_888, "diffusers_default": 933_888, "all_linear": 2_217_984}
TEXT_ENCODER_GIB = 8.3


class Flux3(Flux2Family):
    name = "flux3"
    title = "FLUX.3"
    pipeline_class_name = "Flux3ModularPipeline"
    transformer_class_name = TRANSFORMER_CLASS
    kind = "text-to-image"
    comfyui_layout = False  # no ComfyUI key names for FLUX.3 are known to the studio
    reference_images = False  # its reference-image blocks get no LoRA: text-to-image only (not FLUX.2's edit runs)
    tokens_name = "Qwen3-VL"
    variants = VARIANTS
    target_sets = TARGET_SETS
    tier_min_gib = TIER_MIN_GIB
    weight_gib = WEIGHT_GIB
    lora_width = LORA_WIDTH
    text_encoder_gib = TEXT_ENCODER_GIB
    kohya_network_module = ""  # kohya has no FLUX.3 network: the files name none
    implementation = "https://github.com/black-forest-labs/flux-3-image-klein"  # cited by diffusers' FLUX.3 code
    block_of = staticmethod(block_of)
    block_counts = staticmethod(block_counts)
    # The pipelines' constant shift, the base model's guidance scale for samples, and the one LoRA
    # layout FLUX.3 has (diffusers; no ComfyUI layout is known for FLUX.3).
    config_overrides = {"training": {"timestep_sampling": "resolution_shift"}, "sample": {"guidance": 3.5},
                        "save": {"comfyui": False}}

    def resolution_shift(self, image_seq_len: int) -> float:
        return SHIFT

    def full_config(self, variant: str) -> dict:
        # The class's defaults, written out (the plan asks at UI start-up, where importing diffusers
        # would cost seconds); tests/test_family_flux3.py checks them against Flux3Transformer2DModel.
        return {**FULL_CONFIG, "flow_map": variant == "distilled"}

    def target_modules(self, lora, transformer) -> list[str]:
        return flux3_target_modules(self, lora, transformer)

    # ------------------------------------------------------------ recognising a model
    def detect(self, model_index: dict, transformer_cfg: dict) -> str | None:
        if transformer_cfg.get("_class_name") != TRANSFORMER_CLASS:
            return None
        return "distilled" if transformer_cfg.get("flow_map") else "base"

    def detect_keys(self, keys) -> bool:
        """A FLUX.3 transformer file: per-mode modulations (BFL: early_stream_modulations.image.lin)."""
        return any(k.removeprefix("model.diffusion_model.").startswith("early_stream_modulations.") for k in keys)

    def guess_variant(self, name: str) -> str:
        text = str(name or "").lower()
        return "base" if "base" in text or not text else "distilled"

    def info(self, source: str, path: str, variant: str, transformer_cfg: dict, vae_cfg: dict) -> ModelInfo:
        return ModelInfo(source=source, path=path, family=variant, guidance_embeds=False, t5_max_length=TOKEN_LIMIT,
                         transformer=transformer_cfg,
                         vae_scale_factor=2 ** (len(vae_cfg.get("block_out_channels", [1, 1, 1, 1])) - 1),
                         latent_channels=vae_cfg.get("latent_channels", 32), family_name=self.name)

    def load(self, info: ModelInfo, transformer_file: str = "", dtype=None, revision: str = "",
             base_precision: str = "auto"):
        from diffusers import Flux3Transformer2DModel

        from ..models import load_frozen_pipeline

        return load_frozen_pipeline(info, Flux3Transformer2DModel, ModularLoader(info.variant == "distilled"),
                                    ("transformer", "vae", "text_encoder"), transformer_file, dtype, revision,
                                    base_precision)

    # ------------------------------------------------------------ text
    def count_tokens(self, pipe, caption: str) -> int:
        text = pipe.tokenizer.apply_chat_template([{"role": "user", "content": caption}], tokenize=False,
                                                  add_generation_prompt=True)
        return len(pipe.tokenizer.tokenizer(text, truncation=False)["input_ids"])

    def encode_text(self, pipe, caption: str, device, token_limit: int) -> dict:
        """Caption → {prompt_embeds}: diffusers' own Qwen3-VL encoding, padded to `token_limit` tokens."""
        import torch
        from diffusers.modular_pipelines.flux3.encoders import Flux3TextEncoderStep

        with torch.no_grad():
            embeds = Flux3TextEncoderStep._get_qwen3_vl_prompt_embeds(
                pipe.text_encoder, pipe.tokenizer, caption, device=device, max_sequence_length=token_limit,
                pad_multiple=token_limit, hidden_states_layers=text_layers())
        return {"prompt_embeds": embeds[0].float().cpu()}

    def free_text_encoders(self, pipe, keep_trainable: bool) -> None:
        """The encoder goes after caching; the base model's samples guide against the empty prompt,
        whose embedding is kept on the pipeline first."""
        if pipe.text_encoder is not None and not pipe.transformer.config.flow_map:
            device = pipe.text_encoder.device
            pipe.studio_negative_embeds = self.encode_text(pipe, "", device, TOKEN_LIMIT)["prompt_embeds"]
        pipe.update_components(text_encoder=None)

    def text_inputs(self, pipe, cached: list[dict], captions: list[str], text_encoder, device) -> dict:
        """The stacked embeddings, and whether the transformer is a flow map (it then takes a target timestep)."""
        return {**super().text_inputs(pipe, cached, captions, text_encoder, device),
                "flow_map": bool(pipe.transformer.config.flow_map)}

    # ------------------------------------------------------------ the step's inputs
    def training_guidance(self, info, configured: float | None) -> float | None:
        return None  # FLUX.3 has no guidance input

    def model_inputs(self, noisy, target, t, text: dict, guidance, dtype, reference=None) -> tuple[dict, object]:
        """Patchified latents as tokens (row by row, as Flux3PrepareLatentsStep packs them), their 4-D
        positions and the text's, with diffusers' own helpers; the target as tokens."""
        from diffusers.modular_pipelines.flux3.before_denoise import (Flux3PrepareLatentsStep,
                                                                      Flux3TextRoPEInputsStep, _prepare_image_ids)

        if reference is not None:
            raise ValueError(f"{self.name} trains text-to-image LoRAs; reference images are not supported")
        device = noisy.device
        embeds = text["embeds"]
        h, w = noisy.shape[-2:]
        kwargs = dict(hidden_states=noisy.flatten(2).transpose(1, 2).to(dtype), timestep=t.to(dtype),
                      encoder_hidden_states=embeds.to(dtype),
                      img_ids=_prepare_image_ids(h, w, Flux3PrepareLatentsStep().image_rope_scale).to(device),
                      txt_ids=Flux3TextRoPEInputsStep._prepare_text_ids(embeds).to(device), return_dict=False)
        if text.get("flow_map"):
            kwargs["target_timestep"] = t.to(dtype)  # a step of length zero: the velocity itself
        return kwargs, target.flatten(2).transpose(1, 2)

    # ------------------------------------------------------------ sampling
    def sample(self, pipe, cached: dict, prompt: str, text_encoder, seed: int, steps: int, guidance: float,
               size: tuple[int, int], device, control=None, true_cfg: float = 1.0,
               negative: dict | None = None):
        """One image through the pipeline's own denoise and decode blocks, from cached embeddings: the
        base model guided against the empty prompt when guidance > 1, the distilled one unguided."""
        import torch
        from diffusers import ClassifierFreeGuidance

        if control is not None:
            raise ValueError(f"{self.name} samples text-to-image; an input image is not supported")
        dtype = pipe.vae.dtype
        blocks = pipe.blocks
        blocks.sub_blocks.pop("text_encoder")  # embeddings come from the cache
        sampler = blocks.init_pipeline()
        sampler.update_components(transformer=pipe.transformer, vae=pipe.vae)
        sampler.set_progress_bar_config(disable=True)
        width, height = size
        inputs = dict(prompt_embeds=cached["prompt_embeds"][None].to(device, dtype), num_inference_steps=steps,
                      height=height, width=width, generator=torch.Generator(device).manual_seed(seed))
        if not pipe.transformer.config.flow_map:
            guided = guidance > 1
            sampler.update_components(guider=ClassifierFreeGuidance(guidance_scale=guidance if guided else 1.0))
            if guided:
                negative = getattr(pipe, "studio_negative_embeds", None)
                if negative is None:  # the encoder is still loaded (e.g. a pipeline made for a try-it)
                    negative = self.encode_text(pipe, "", device, cached["prompt_embeds"].shape[0])["prompt_embeds"]
                inputs["negative_prompt_embeds"] = negative[None].to(device, dtype)
        return sampler(**inputs, output="images")[0]

    def usage_code(self, base: str, repo: str, weight_name: str, prompt: str, variant: Variant) -> list[str]:
        """The modular pipeline without its prompt upsampler (add the upsampler's weights to keep it)."""
        blocks = "Flux3DistilledAutoBlocks" if variant.name == "distilled" else "Flux3AutoBlocks"
        return [f"from diffusers import {blocks}", "", f"blocks = {blocks}()",
                'blocks.sub_blocks.pop("prompt_upsampler")  # the prompt as written, as the LoRA was trained',
                f'pipe = blocks.init_pipeline("{base}")', "pipe.load_components(dtype=torch.bfloat16)",
                'pipe.to("cuda")', f'pipe.load_lora_weights("{repo}", weight_name="{weight_name}")',
                f'image = pipe(prompt={prompt}, num_inference_steps={variant.steps}, output="images")[0]']

    # ------------------------------------------------------------ LoRA files
    def write_lora(self, out_dir, name, transformer_layers, rank, alpha, metadata, **kwargs) -> dict:
        """`<name>.safetensors` in the diffusers layout only, whatever save.comfyui says (this family sets
        it to false): no ComfyUI key names for FLUX.3 are known to the studio (README, FLUX.3)."""
        return super().write_lora(out_dir, name, transformer_layers, rank, alpha, metadata,
                                  **{**kwargs, "save_comfyui": False})

    def meta_transformer(self, config: dict):
        from accelerate import init_empty_weights
        from diffusers import Flux3Transformer2DModel

        with init_empty_weights():
            return Flux3Transformer2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})

    def comfy_shapes(self, config: dict) -> dict:
        return {}  # no ComfyUI layout: every key of a "ComfyUI" file is reported as unknown

    # ------------------------------------------------------------ the offline model
    def build_tiny(self, out_dir, size: str = "tiny", variant: str = "base", seed: int = 0) -> Path:
        from .flux3_tiny import build

        variant = variant or "base"
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        return build(out_dir, size=size, distilled=variant == "distilled", seed=seed,
                     readme=TINY_README.format(size=size))


FLUX3 = register(Flux3())


def flux3_target_modules(family, lora, transformer) -> list[str]:
    """Block layers that get a LoRA: `double_blocks` selects text and image per-mode block N together."""
    import torch

    suffixes = lora.target_modules or family.target_sets[lora.targets]
    chosen = {"double": lora.double_blocks, "single": lora.single_blocks}
    names = []
    for name, module in transformer.named_modules():
        block = family.block_of(name)
        if not isinstance(module, torch.nn.Linear) or block == "other" or name.startswith("mode_blocks.image_cond"):
            continue
        kind, index = block.split(".")
        if chosen[kind] is not None and int(index) not in chosen[kind]:
            continue
        if any(name.endswith("." + s) for s in suffixes):
            names.append(name)
    return names
