"""FLUX.1 Kontext [dev]: edit LoRAs trained on before/after pairs.

Kontext is FLUX.1 [dev]'s architecture (the same FluxTransformer2DModel with guidance
embeddings, CLIP-L + T5, the 16-channel VAE); only the weights and the pipeline differ, so
everything but the pipeline is FLUX.1's (studio/families/flux1.py). A model is recognised by
its model_index.json (`FluxKontextPipeline`); FLUX.1's detector refuses any other pipeline.

Training (diffusers' train_dreambooth_lora_flux_kontext.py, I2I mode, and FluxKontextPipeline):
the control image is VAE-encoded (its mode, shifted and scaled), packed into 2×2 tokens like the
target and joined after the noisy target tokens, its position ids marked with a first id of 1;
the loss is on the target tokens only (Flux1.model_inputs / prediction with `reference`).

The LoRA files are FLUX.1's layouts: diffusers' FluxKontextPipeline.load_lora_weights reads the
diffusers file, and ComfyUI loads a Kontext checkpoint as a FLUX.1 model with FLUX.1's key rules,
so the FLUX.1 writer serves both; the metadata names the family `flux1-kontext`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from .base import register
from .flux1 import TRANSFORMER_CLASS, Flux1
from .flux1 import VARIANTS as FLUX1_VARIANTS

# FLUX.1 [dev]'s architecture, token limit, steps and licence; its own weights, wording and guidance.
VARIANTS = {"dev": replace(
    FLUX1_VARIANTS["dev"], title="FLUX.1 Kontext [dev]", hub_id="black-forest-labs/FLUX.1-Kontext-dev",
    licence_text="FLUX.1 [dev] Non-Commercial License: Kontext [dev], its outputs and LoRAs trained on it "
                 "are for non-commercial use unless you hold a commercial licence from Black Forest Labs.",
    guidance=2.5, description="image editing from an instruction, 28 steps, non-commercial licence")}


class Flux1Kontext(Flux1):
    name = "flux1-kontext"
    pipeline_class_name = "FluxKontextPipeline"
    variants = VARIANTS
    kind = "edit"
    config_overrides: dict = {}

    def detect(self, model_index: dict, transformer_cfg: dict) -> str | None:
        if model_index.get("_class_name") != self.pipeline_class_name:
            return None  # the transformer alone cannot tell Kontext from FLUX.1 [dev]
        if transformer_cfg.get("_class_name", TRANSFORMER_CLASS) != TRANSFORMER_CLASS:
            return None
        return "dev"

    def guess_variant(self, name: str) -> str:
        return "dev"

    def diffusers_pipeline(self):
        from diffusers import FluxKontextPipeline
        return FluxKontextPipeline

    def sample_image_args(self, control, size) -> dict:
        """The input image at the sample size: max_area and _auto_resize keep FluxKontextPipeline at the
        asked size (by default it rescales to about 1024² and snaps the input to its preferred sizes)."""
        if control is None:
            raise ValueError("an edit model samples from an input image; none was given")
        width, height = size
        return {"image": control, "max_area": width * height, "_auto_resize": False}

    def write_lora(self, out_dir, name, transformer_layers, rank, alpha, metadata, **kwargs):
        from .flux1_files import save_lora

        variant = str(metadata.get("model_variant") or "dev")
        said = {"model_family": self.name}
        if variant in self.variants:
            said.update({"modelspec.architecture": f"flux-1-kontext-{variant}/lora",
                         "modelspec.license": self.variants[variant].licence_id})
        return save_lora(out_dir, name, transformer_layers, rank, alpha, {**metadata, **said}, **kwargs)

    def build_tiny(self, out_dir, size: str = "tiny", variant: str = "dev", seed: int = 0) -> Path:
        """An offline FluxKontextPipeline with random weights (FLUX.1 [dev]'s tiny components)."""
        import shutil

        from diffusers import FluxKontextPipeline

        from .flux1_tiny import tiny_components

        out = Path(out_dir)
        tmp = out.with_name(out.name + ".partial")
        FluxKontextPipeline(**tiny_components(size, dev=True, seed=seed)).save_pretrained(tmp)
        (tmp / "README.md").write_text(
            f"# Tiny FLUX.1 Kontext model ({size})\n\nRandom weights in the FLUX.1 Kontext architecture, built "
            "offline by Flux LoRA Studio for tests. It makes noise, not pictures.\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        return out


FLUX1_KONTEXT = register(Flux1Kontext())
