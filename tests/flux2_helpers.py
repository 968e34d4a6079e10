"""What the FLUX.2 tests ([klein], [dev], edit LoRAs) share beyond tests/engine_checks.py: the
memorising run with the resolution shift, the pipeline, the engine's noise draws, and the flow-matching error of a
pipeline's transformer computed with its own helpers."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from engine_checks import memorising_config, pixels, quiet_pipeline

def learning_config(model: Path, dataset: Path, out: Path, **sections) -> dict:
    """The families' memorising run (engine_checks.memorising_config) with the FLUX.2 pipelines'
    resolution-dependent timestep shift."""
    from studio.config import deep_merge

    return memorising_config(model, dataset, out, **deep_merge(
        {"training": {"timestep_sampling": "resolution_shift"}}, sections))


def noised(x0, gen, logit_std: float) -> tuple:
    """(noise, t, noisy latents) as the engine draws them with `timestep_sampling: resolution_shift`:
    the noise, then σ = sigmoid(logit_std · n) shifted by the FLUX.2 pipelines' exp(mu) for this size."""
    import math

    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu

    noise = torch.randn(x0.shape, generator=gen)
    sigma = torch.sigmoid(torch.randn((1,), generator=gen) * logit_std)
    shift = math.exp(compute_empirical_mu(x0.shape[2] * x0.shape[3], 50))
    t = shift * sigma / (1 + (shift - 1) * sigma)
    return noise, t, (1 - t) * x0 + t * noise


def pipeline(model):
    """The model's own pipeline class (Flux2KleinPipeline or Flux2Pipeline, as model_index.json says)."""
    from diffusers import DiffusionPipeline

    return quiet_pipeline(DiffusionPipeline, model)


def reference(pipe, image: Image.Image):
    """(tokens, ids) of one reference image, exactly as the pipeline prepares `image=`."""
    with torch.no_grad():
        return pipe.prepare_image_latents([pixels(image)], batch_size=1, generator=None, device="cpu",
                                          dtype=pipe.vae.dtype)


def cases(pipe, pictures: list[tuple[Path, str, object]], seed: int = 5) -> list[tuple]:
    """Fixed (embeds, text ids, x0, noise, t, reference) at t = 0.3, 0.6, 0.9 for each
    (picture, caption, reference or None)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for path, caption, ref in pictures:
            embeds, text_ids = pipe.encode_prompt(prompt=caption, max_sequence_length=512)
            x0 = pipe._encode_vae_image(pixels(path), generator=None)  # mode, patchify, batch norm
            for t in (0.3, 0.6, 0.9):
                out.append((embeds, text_ids, x0, torch.randn(x0.shape, generator=gen), torch.tensor([t]), ref))
    return out


def velocity_error(pipe, fixed: list[tuple], guidance: float | None = None) -> float:
    """Mean flow-matching error of the pipeline's transformer on `fixed` (from `cases`): reference
    tokens joined after the noisy ones as the pipelines join them, the error on the image tokens."""
    total = 0.0
    with torch.no_grad():
        for embeds, text_ids, x0, noise, t, ref in fixed:
            noisy = (1 - t) * x0 + t * noise
            tokens, ids = pipe._pack_latents(noisy), pipe._prepare_latent_ids(noisy)
            if ref is not None:
                tokens, ids = torch.cat([tokens, ref[0]], dim=1), torch.cat([ids, ref[1]], dim=1)
            pred = pipe.transformer(hidden_states=tokens, timestep=t,
                                    guidance=None if guidance is None else torch.tensor([guidance]),
                                    encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=ids,
                                    return_dict=False)[0]
            target = pipe._pack_latents(noise - x0)
            total += float(((pred[:, : target.shape[1]] - target) ** 2).mean())
    return total / len(fixed)
