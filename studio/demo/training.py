"""Training the demo model's parts: the VAE as an autoencoder, then the transformer by flow matching.

Both loops are plain PyTorch on the CPU, seeded, with fixed step counts (the same seed gives
the same weights on the same machine). `build.py` calls them in order.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from .wider import wider_picture
from .world import sample


def to_tensor(images) -> torch.Tensor:
    """PIL images → a [-1, 1] float batch, as the studio and FluxPipeline feed a VAE."""
    array = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def vae_batch(rng: random.Random, n: int, wider_share: float) -> torch.Tensor:
    images = [wider_picture(rng) if rng.random() < wider_share else sample(rng.randrange(1 << 30))[0]
              for _ in range(n)]
    return to_tensor(images)


def random_crop(x: torch.Tensor, size: int, rng: random.Random) -> torch.Tensor:
    if size >= x.shape[-1]:
        return x
    step = 8  # on the latent grid, so a crop's latents are those of the whole picture
    top, left = (rng.randrange(0, x.shape[-1] - size + 1, step) for _ in range(2))
    return x[..., top:top + size, left:left + size]


def train_vae(vae, steps: int, batch: int = 16, crop: int = 32, lr: float = 2e-3, kl_weight: float = 1e-4,
              wider_share: float = 0.15, whole_share: float = 0.05, seed: int = 0, log=print) -> dict:
    """Autoencode world pictures (and wider ones). A convolutional VAE learns edges and colours
    as well from crops, at a fraction of the cost; the last `whole_share` of the steps sees whole
    pictures (a quarter of the batch), so that GroupNorm's statistics are those of whole pictures."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    with torch.no_grad():  # start with a near-deterministic posterior (std ≈ 0.02), so the decoder
        half = vae.encoder.conv_out.bias.shape[0] // 2  # can use the latents from the first step
        vae.encoder.conv_out.bias[half:] = -8.0
    vae.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    vae.train()
    start, recent = time.perf_counter(), []
    for step in range(steps):
        whole = step >= steps * (1 - whole_share)
        x = vae_batch(rng, max(1, batch // 4) if whole else batch, wider_share)
        if not whole:
            x = random_crop(x, crop, rng)
        x = x.contiguous(memory_format=torch.channels_last)  # a third faster for these thin convolutions
        posterior = vae.encode(x).latent_dist
        y = vae.decode(posterior.sample(generator=None)).sample
        recon = (y - x).abs().mean() + (y - x).pow(2).mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = recon + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        recent.append(recon.item())
        if step % 50 == 0 or step == steps - 1:
            log(f"vae   step {step:5d}/{steps}  recon {np.mean(recent[-50:]):.4f}  kl {kl.item():.2f}  "
                f"{time.perf_counter() - start:.0f}s")
    vae.eval()
    vae.requires_grad_(False)
    return {"recon": float(np.mean(recent[-50:]))}


@torch.no_grad()
def psnr(vae, n: int = 32, seed: int = 10_000) -> float:
    """Reconstruction quality on whole world pictures the VAE never trained on."""
    x = to_tensor([sample(seed + i)[0] for i in range(n)])
    y = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    mse = ((y - x) / 2).pow(2).mean().item()
    return 10 * np.log10(1 / mse)


@torch.no_grad()
def latent_statistics(vae, n: int = 256, seed: int = 20_000) -> tuple[float, float]:
    """shift_factor and scaling_factor that give the world's latents mean 0 and variance 1."""
    rng = random.Random(seed)
    z = torch.cat([vae.encode(vae_batch(rng, 16, 0.0)).latent_dist.mean for _ in range(n // 16)])
    return float(z.mean()), float(1 / z.std())


def encode_world(vae, count: int, seed: int, log=print, batch: int = 32) -> tuple[torch.Tensor, list]:
    """Latent distribution parameters and scenes of `count` world pictures (seeds seed..seed+count)."""
    params, scenes = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, count, batch):
            drawn = [sample(seed + k) for k in range(i, min(count, i + batch))]
            params.append(vae.encode(to_tensor([d[0] for d in drawn])).latent_dist.parameters)
            scenes += [d[2] for d in drawn]
            if i % (batch * 50) == 0:
                log(f"encode {i}/{count}  {time.perf_counter() - start:.0f}s")
    return torch.cat(params), scenes




def flow_timesteps(n: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """Noise levels as the engine's `shift` scheme draws them: sigmoid(N(0, 1)), then shifted."""
    t = torch.sigmoid(torch.randn((n,), generator=generator))
    return shift * t / (1 + (shift - 1) * t)


def flow_matching_loss(pipe, latents, embeds, pooled, t, noise) -> torch.Tensor:
    """The engine's objective: noisy = (1−t)·x + t·ε, target ε − x, MSE on packed latents."""
    from diffusers import FluxPipeline

    b, c, h, w = latents.shape
    t_ = t.view(-1, 1, 1, 1)
    noisy = (1 - t_) * latents + t_ * noise
    packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
    target = FluxPipeline._pack_latents(noise - latents, b, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, latents.device, latents.dtype)
    txt_ids = torch.zeros(embeds.shape[1], 3)
    pred = pipe.transformer(hidden_states=packed, timestep=t, guidance=None, pooled_projections=pooled,
                            encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred, target)


def train_transformer(pipe, params: torch.Tensor, scenes: list, steps: int, lr: float = 1e-3,
                      shift: float = 3.0, lengths=((24, 32),), ema_decay: float = 0.995, seed: int = 0,
                      log=print) -> dict:
    """Flow matching on the encoded world, captions in every wording, ending with the weights'
    exponential moving average (it samples better than the last step's weights).

    FluxPipeline pads T5 to max_sequence_length (256 in the engine, 512 by default) and FLUX
    has no text mask, so the padding takes part in attention: a model trained on one length
    reads prompts padded to another badly. With the local T5 the padding only adds copies of
    one vector, so steps cycle through `lengths`, (T5 length, batch size) pairs: mostly short
    and cheap, with some long ones on smaller batches to learn to look past the padding."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from .world import caption

    transformer = pipe.transformer
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    vae = pipe.vae.config
    weights = [p for p in transformer.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in weights]
    opt = torch.optim.AdamW(weights, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    transformer.train()
    start, recent = time.perf_counter(), []
    for step in range(steps):
        length, n = lengths[step % len(lengths)]
        idx = torch.randint(len(params), (n,), generator=gen)
        dist = DiagonalGaussianDistribution(params[idx])
        latents = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        latents = (latents - vae.shift_factor) * vae.scaling_factor
        captions = [caption(scenes[i], rng) for i in idx.tolist()]
        with torch.no_grad():
            embeds, pooled, _ = pipe.encode_prompt(captions, None, max_sequence_length=length)
        t = flow_timesteps(n, shift, gen)
        noise = torch.randn(latents.shape, generator=gen)
        loss = flow_matching_loss(pipe, latents, embeds, pooled, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        opt.step()
        sched.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p, e in zip(weights, ema):
                e.lerp_(p, 1 - decay)
        recent.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            log(f"flow  step {step:5d}/{steps}  loss {np.mean(recent[-50:]):.4f}  {time.perf_counter() - start:.0f}s")
    with torch.no_grad():
        for p, e in zip(weights, ema):
            p.copy_(e)
    transformer.eval()
    transformer.requires_grad_(False)
    return {"loss": float(np.mean(recent[-200:]))}
