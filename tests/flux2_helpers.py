"""What the FLUX.2 tests ([klein], [dev], edit LoRAs) share: small datasets, the engine run, the
pipeline, the flow-matching error of a pipeline's transformer computed with its own helpers, and
the bitwise resume check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import Events, tiny_config
from faulty_trainer import FaultHooks
from studio.config import resolve
from studio.engine import train
from studio.events import EXIT_INTERRUPTED, EXIT_OK

CAPTIONS = ["a photo of sks with a yellow circle", "a photo of sks with a blue square"]


def squares(folder: Path, count: int = 2) -> Path:
    """Square 64x64 pictures (their bucket is their own size), each with a caption."""
    from PIL import ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        y, x = np.mgrid[0:64, 0:64]
        im = Image.fromarray(np.stack([x * 4, y * 4, np.full_like(x, 90 * i)], -1).astype(np.uint8))
        ImageDraw.Draw(im).ellipse((12 + 8 * i, 12, 40 + 8 * i, 40), fill=(250, 240, 20))
        im.save(folder / f"pic_{i}.png")
        (folder / f"pic_{i}.txt").write_text(CAPTIONS[i % len(CAPTIONS)])
    return folder


def pixels(path: Path | Image.Image) -> torch.Tensor:
    """A picture as the pipelines' VAE input: (1, 3, H, W) in [-1, 1]."""
    image = path if isinstance(path, Image.Image) else Image.open(path)
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]


def run(cfg_dict, run_dir, data_dir, resume=False, fault=""):
    events = Events()
    code = train(resolve(cfg_dict, tier="cpu"), run_dir, events, resume=resume, hooks=FaultHooks(fault),
                 data_dir=data_dir)
    return code, events


def learning_config(model: Path, dataset: Path, out: Path, **sections) -> dict:
    """A run long enough for the tiny model to learn its two pictures (memorisation tests)."""
    from studio.config import deep_merge

    return tiny_config(model, dataset, out, **deep_merge(
        {"optimizer": {"lr": 1e-2}, "lora": {"rank": 8, "alpha": 8, "targets": "all_linear"},
         "schedule": {"max_steps": 50, "scheduler": "constant", "warmup_steps": 0},
         "training": {"timestep_sampling": "resolution_shift", "batch_size": 2}}, sections))


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


def one_step(trainer) -> tuple:
    """(loss, LoRA gradients, the noise generator's state before the step) of one engine step on the
    first batch, the LoRA's weights drawn non-zero first so that every LoRA path matters."""
    from studio.train.step import loss as step_loss

    torch.manual_seed(0)
    for p in trainer.lora_params:
        p.data.normal_(0, 0.05)
    state = trainer.generator.get_state()
    loss = step_loss(trainer, trainer.plan[0])
    loss.backward()
    grads = [p.grad.clone() for p in trainer.lora_params]
    trainer.optimizer.zero_grad(set_to_none=True)
    return loss, grads, state


def assert_same_step(trainer, loss, grads, expected) -> None:
    """The engine's loss and gradients (`one_step`) equal those of `expected`, written independently."""
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-5 * max(1.0, expected.item())
    for p, g in zip(trainer.lora_params, grads):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


def pipeline(model):
    """The model's own pipeline class (Flux2KleinPipeline or Flux2Pipeline, as model_index.json says)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def assert_lora_changes_and_zero_is_base(pipe, lora: Path, draw, changed: float = 1e-3) -> np.ndarray:
    """The LoRA file loads into the pipeline (`load_lora_weights`) and changes what `draw()` makes; at
    weight 0 the pipeline draws the base, bit for bit. Returns the drawing with the LoRA."""
    base = draw()
    pipe.load_lora_weights(str(lora), adapter_name="mine")
    with_lora = draw()
    pipe.set_adapters(["mine"], adapter_weights=[0.0])
    at_zero = draw()
    assert np.abs(with_lora - base).mean() > changed
    np.testing.assert_array_equal(at_zero, base)
    return with_lora


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


def assert_resume_is_bitwise_exact(model: Path, dataset: Path, tmp_path: Path, **sections) -> None:
    """A run stopped by SIGTERM at step 3 and resumed ends with the same LoRA, bit for bit, as one
    run straight through (cosine schedule, EMA, caption and LoRA dropout: every random stream)."""
    from safetensors.torch import load_file

    from studio.config import deep_merge

    cfg = tiny_config(model, dataset, tmp_path / "out", **deep_merge(
        {"schedule": {"max_steps": 6, "scheduler": "cosine", "warmup_steps": 2}, "training": {"ema": True},
         "dataset": {"caption_dropout": 0.3}, "lora": {"dropout": 0.1}}, sections))
    code, _ = run(cfg, tmp_path / "straight", tmp_path / "data")
    assert code == EXIT_OK
    code, events = run(cfg, tmp_path / "resumed", tmp_path / "data", fault="sigterm@3")
    assert code == EXIT_INTERRUPTED and events.of("checkpoint")[-1]["step"] == 3
    code, events = run(cfg, tmp_path / "resumed", tmp_path / "data", resume=True)
    assert code == EXIT_OK and events.of("start")[0]["start_step"] == 3
    a = load_file(str(tmp_path / "straight" / "test-lora.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "test-lora.safetensors"))
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
