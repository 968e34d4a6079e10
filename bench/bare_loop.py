"""The bare reference loop of bench/train_speed.py, written from the formulas (FLUX_NOTES "The
training step"), not from the engine: FluxPipeline, the same peft LoRA via
transformer.add_adapter(LoraConfig(...)), AdamW, and per step: load + resize the image,
vae.encode → latent_dist.sample → shift/scale, encode the caption, noise, sigmoid-shift
timesteps, _pack_latents, ids, forward, MSE against noise − latents, backward, clip, step.
No caching, no extras. torch and diffusers are imported when a loop is built."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
TRIGGER = "sks"
WARMUP = 5
# diffusers' train_dreambooth_lora_flux default target list (peft matches by suffix).
LORA_TARGETS = ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj",
                "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2",
                "ff_context.net.0.proj", "ff_context.net.2"]
SHIFT = 3.1582          # the studio's default "shift" timestep sampling (FluxGym's value)
LR, WEIGHT_DECAY, MAX_GRAD_NORM, SEED = 1e-4, 1e-4, 1.0, 42


def steady(intervals: list[float], warmup: int = WARMUP) -> float:
    rest = intervals[warmup:] if len(intervals) > warmup else intervals
    return statistics.median(rest)


class BareLoop:
    """The reference loop, written from the formulas: no caches, no extras."""

    def __init__(self, args):
        import diffusers
        import numpy as np
        import torch
        import transformers
        from diffusers import FluxPipeline
        from peft import LoraConfig
        from PIL import Image

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        self.np, self.torch, self.Image, self.FluxPipeline = np, torch, Image, FluxPipeline
        folder = Path(args.images)
        self.files = sorted(p for p in folder.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        self.res = args.resolution
        self.gen = torch.Generator().manual_seed(SEED)
        torch.manual_seed(SEED)
        pipe = FluxPipeline.from_pretrained(args.model_dir, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
            module.requires_grad_(False)
        pipe.transformer.add_adapter(LoraConfig(r=16, lora_alpha=16, lora_dropout=0.0, init_lora_weights="gaussian",
                                                target_modules=LORA_TARGETS))
        self.pipe, self.transformer, self.vae = pipe, pipe.transformer, pipe.vae
        self.params = [p for p in self.transformer.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=LR, betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=WEIGHT_DECAY)
        self.transformer.train()

    def load(self, path: Path):
        Image, res = self.Image, self.res
        with Image.open(path) as im:
            image = im.convert("RGB")
        scale = max(res / image.width, res / image.height)
        w, h = max(res, round(image.width * scale)), max(res, round(image.height * scale))
        left, top = (w - res) // 2, (h - res) // 2
        image = image.resize((w, h), Image.Resampling.LANCZOS).crop((left, top, left + res, top + res))
        x = self.torch.from_numpy(self.np.asarray(image, dtype=self.np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        txt = path.with_suffix(".txt")
        caption = txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
        return x, (caption or TRIGGER)

    def step(self, step: int) -> dict:
        torch, FluxPipeline, vae, gen = self.torch, self.FluxPipeline, self.vae, self.gen
        a = time.perf_counter()
        pixels, caption = self.load(self.files[step % len(self.files)])
        b = time.perf_counter()
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample(generator=gen)
        latents = (latents - vae.config.shift_factor) * vae.config.scaling_factor
        c_ = time.perf_counter()
        with torch.no_grad():
            embeds, pooled, _ = self.pipe.encode_prompt(caption, None, device="cpu", max_sequence_length=256)
        d = time.perf_counter()

        bsz, ch, h, w = latents.shape
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.sigmoid(torch.randn((bsz,), generator=gen))
        t = SHIFT * t / (1 + (SHIFT - 1) * t)
        t_ = t.view(-1, 1, 1, 1)
        noisy = (1 - t_) * latents + t_ * noise
        packed = FluxPipeline._pack_latents(noisy, bsz, ch, h, w)
        target = FluxPipeline._pack_latents(noise - latents, bsz, ch, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(bsz, h // 2, w // 2, "cpu", torch.float32)
        txt_ids = torch.zeros(embeds.shape[1], 3)
        pred = self.transformer(hidden_states=packed, timestep=t, guidance=None, pooled_projections=pooled,
                                encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids,
                                return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise SystemExit(f"bare loop: loss {loss.item()} at step {step + 1}")
        e = time.perf_counter()
        return {"total": e - a, "load": b - a, "vae": c_ - b, "text": d - c_, "compute": e - d}
