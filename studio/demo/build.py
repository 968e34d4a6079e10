"""`python -m studio build-demo OUT`: the demo model, trained from a seed on this machine's CPU.

A FLUX.1 [schnell]-shaped FluxPipeline with the real FLUX latent geometry (16 latent channels,
an 8x VAE, 2x2 packing, so the transformer takes 64 input channels; CLIP pooled vector plus T5
sequence), small enough to ship in the repository and to train on two CPU cores:

  1. tokenizers, trained on the world's captions and common words;
  2. CLIP learns to name what a caption asks for; T5 stays random (see `text.py`);
  3. the VAE, an autoencoder of the world's pictures (and wider ones, for LoRAs to come);
  4. the transformer, by the engine's flow-matching objective on the encoded world.

The same seed and step counts give the same weights on the same machine and thread count.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from .world import SIZE


@dataclass(frozen=True)
class Recipe:
    """Sizes and step counts of a build; `scaled` shortens every stage (for tests)."""
    vae_channels: tuple[int, ...] = (8, 16, 32, 32)
    vae_groups: int = 2  # 4 channels per group: GroupNorm over fewer channels washes out flat colours
    heads: int = 6  # 192 wide: at 96 the model drew blobs of the right colour, not outlines
    head_dim: int = 32
    double_blocks: int = 3
    single_blocks: int = 3
    rope: tuple[int, int, int] = (8, 12, 12)  # sums to head_dim
    text_width: int = 64
    text_steps: int = 150
    vae_steps: int = 1600
    vae_batch: int = 16
    vae_crop: int = 32
    world_pictures: int = 8000
    transformer_steps: int = 4400
    transformer_lr: float = 1e-3
    train_shift: float = 3.0
    # (T5 length, batch) per step, in turn: 8 short steps, then 256 and 512 (see train_transformer).
    lengths: tuple[tuple[int, int], ...] = ((24, 32),) * 8 + ((256, 8), (512, 8))
    # Sampling settings written into the model folder (scheduler config and README).
    sample_steps: int = 8
    sample_shift: float = 3.0
    # Guidance against the empty prompt (FluxPipeline's true_cfg_scale): the shapes' outlines, and
    # a star's five points above all, come out far clearer at 3 (docs/benchmarks.md).
    sample_true_cfg: float = 3.0

    @property
    def transformer_batch(self) -> int:
        return self.lengths[0][1]

    def scaled(self, factor: float) -> "Recipe":
        def n(value: int) -> int:
            return max(2, int(round(value * factor)))
        return replace(self, text_steps=n(self.text_steps), vae_steps=n(self.vae_steps),
                       world_pictures=max(64, n(self.world_pictures)),
                       transformer_steps=max(len(self.lengths), n(self.transformer_steps)))


def make_vae(recipe: Recipe):
    from diffusers import AutoencoderKL

    # FLUX's VAE layout: no quant convs, 16 latent channels, 2^(len(channels) - 1) = 8x.
    # No attention in the middle block: the VAE is then purely convolutional and learns on crops.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=recipe.vae_channels,
        down_block_types=["DownEncoderBlock2D"] * len(recipe.vae_channels),
        up_block_types=["UpDecoderBlock2D"] * len(recipe.vae_channels), layers_per_block=1,
        norm_num_groups=recipe.vae_groups, sample_size=SIZE, use_quant_conv=False,
        use_post_quant_conv=False, mid_block_add_attention=False, shift_factor=0.0, scaling_factor=1.0)


def make_transformer(recipe: Recipe):
    from diffusers import FluxTransformer2DModel

    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16 * 4, num_layers=recipe.double_blocks, num_single_layers=recipe.single_blocks,
        attention_head_dim=recipe.head_dim, num_attention_heads=recipe.heads,
        joint_attention_dim=recipe.text_width, pooled_projection_dim=recipe.text_width,
        guidance_embeds=False, axes_dims_rope=list(recipe.rope))
    # adaLN-Zero (as in DiT): every block starts as the identity and the output as zero, which
    # trains much faster from scratch than FLUX's default initialisation.
    with torch.no_grad():
        zeroed = [transformer.norm_out.linear, transformer.proj_out]
        for block in transformer.transformer_blocks:
            zeroed += [block.norm1.linear, block.norm1_context.linear]
        for block in transformer.single_transformer_blocks:
            zeroed.append(block.norm.linear)
        for layer in zeroed:
            layer.weight.zero_()
            layer.bias.zero_()
    return transformer


def make_scheduler(recipe: Recipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    # A fixed shift suits one resolution; FLUX's dynamic shift is tuned for 256–4096 tokens, not 64.
    return FlowMatchEulerDiscreteScheduler(shift=recipe.sample_shift, use_dynamic_shifting=False)


def build(out: str | Path, seed: int = 0, recipe: Recipe | None = None, log=print) -> Path:
    """Train every part and write a FluxPipeline folder to `out` (replaced atomically)."""
    from diffusers import FluxPipeline

    from . import text, training
    from ..models import quiet_loading

    quiet_loading()
    recipe = recipe or Recipe()
    out = Path(out)
    times: dict[str, float] = {}
    cpu: dict[str, float] = {}
    clock, cpu_clock = time.perf_counter(), time.process_time()

    def lap(name: str) -> None:  # wall time, and CPU time (which a busy machine does not inflate)
        nonlocal clock, cpu_clock
        now, cpu_now = time.perf_counter(), time.process_time()
        times[name], cpu[name] = round(now - clock, 1), round(cpu_now - cpu_clock, 1)
        clock, cpu_clock = now, cpu_now
        log(f"-- {name}: {times[name]:.0f} s wall, {cpu[name]:.0f} s CPU")

    torch.manual_seed(seed)
    clip_tok, t5_tok = text.train_tokenizers()
    clip = text.make_clip(clip_tok, recipe.text_width)
    t5 = text.make_t5(t5_tok, recipe.text_width)
    named = text.teach_clip(clip, clip_tok, steps=recipe.text_steps, seed=seed, log=log)
    lap("text")

    torch.manual_seed(seed + 1)
    vae = make_vae(recipe)
    training.train_vae(vae, recipe.vae_steps, batch=recipe.vae_batch, crop=recipe.vae_crop, seed=seed + 1, log=log)
    vae = vae.to(memory_format=torch.contiguous_format)
    shift, scale = training.latent_statistics(vae)
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    vae_psnr = training.psnr(vae)
    log(f"vae   psnr {vae_psnr:.1f} dB  shift {shift:.4f}  scale {scale:.4f}")
    lap("vae")

    params, scenes = training.encode_world(vae, recipe.world_pictures, seed=seed * 1_000_000, log=log)
    lap("encode")

    torch.manual_seed(seed + 2)
    pipe = FluxPipeline(scheduler=make_scheduler(recipe), vae=vae, text_encoder=clip, tokenizer=clip_tok,
                        text_encoder_2=t5, tokenizer_2=t5_tok, transformer=make_transformer(recipe))
    flow = training.train_transformer(pipe, params, scenes, recipe.transformer_steps, lr=recipe.transformer_lr,
                                      shift=recipe.train_shift, lengths=recipe.lengths, seed=seed + 2, log=log)
    lap("transformer")

    summary = {"seed": seed, "seconds": times, "total_seconds": round(sum(times.values()), 1),
               "cpu_seconds": cpu, "total_cpu_seconds": round(sum(cpu.values()), 1),
               "clip_named_right": round(named, 4), "vae_psnr_db": round(vae_psnr, 2),
               "flow_loss": round(flow["loss"], 4), "threads": torch.get_num_threads(),
               "cpu": cpu_name(), "cores": os.cpu_count(),
               "recipe": asdict(recipe)}
    save(pipe, out, summary)
    return out


def cpu_name() -> str:
    """The processor's model name (for the build record), or the machine type where it is unknown."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def save(pipe, out: Path, summary: dict) -> None:
    """Write the pipeline (transformer and VAE in fp16: half the size, and loaded back as the
    caller's dtype by from_pretrained) with its build record; a half-written folder never stands."""
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # "modules to keep in float32": this model has none
    pipe.transformer.to(torch.float16)
    pipe.vae.to(torch.float16)
    try:
        pipe.save_pretrained(tmp)
    finally:
        pipe.transformer.to(torch.float32)
        pipe.vae.to(torch.float32)
        diffusers_logging.set_verbosity(level)
    (tmp / "build.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (tmp / "README.md").write_text(model_card(summary), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def model_card(summary: dict) -> str:
    r = summary["recipe"]
    minutes = summary["total_seconds"] / 60
    cpu_minutes = summary["total_cpu_seconds"] / 60
    stages = ", ".join(f"{k} {v / 60:.1f}" for k, v in summary["seconds"].items())
    return f"""# Flux LoRA Studio demo model

A FLUX.1 [schnell]-shaped model that draws a synthetic world: a circle, square, triangle or star
in red, green, blue, yellow, purple, orange, white or black, on a plain or two-tone background,
at 128 x 128 pixels (shapes 72–92 px wide, stars 84–100 px, near the middle). It loads with
`FluxPipeline.from_pretrained` like any FLUX.1 folder and exists so that the studio can show a
LoRA working in minutes on a CPU, offline. Everything here was trained by the studio itself from
a seed, on synthetic pictures drawn by `studio/demo/world.py`.

## Use

```python
import torch
from diffusers import FluxPipeline

pipe = FluxPipeline.from_pretrained("studio/demo/model")
image = pipe("a red circle on a white background", num_inference_steps={r["sample_steps"]},
             true_cfg_scale={r.get("sample_true_cfg", 1.0)}, negative_prompt="",
             max_sequence_length=256, height=128, width=128,
             generator=torch.Generator().manual_seed(0)).images[0]
```

Sampling: {r["sample_steps"]} Euler steps, scheduler shift {r["sample_shift"]} (fixed, in
`scheduler/scheduler_config.json`), guidance against the empty prompt at {r.get("sample_true_cfg", 1.0)}
(`true_cfg_scale` with `negative_prompt=""`; a list of prompts needs a list of as many empty
negative prompts; without it the shapes' outlines are softer and stars often lose their points),
no guidance embedding (schnell-shaped), 128 px. `max_sequence_length` 256 is what the
studio's engine uses for schnell; the transformer was trained on 256 and 512 as well, so
diffusers' default of 512 works too.
Prompts: "a <colour> <shape> on a <colour> background" (or "… on a <colour> and <colour>
background"), also "a <colour> <shape>" and "<colour> <shape>, <colour> background".

## Build

```bash
.venv/bin/python -m studio build-demo studio/demo/model --seed {summary["seed"]} --threads {summary["threads"]}
```

Seed {summary["seed"]}, {summary["threads"]} torch thread(s): {minutes:.1f} minutes of wall time
({stages} minutes) and {cpu_minutes:.1f} minutes of CPU time, on {summary.get("cores", "the")} core(s) of
{summary.get("cpu", "a CPU")}. The same seed and thread count give the same weights on the same machine.

| part | size | trained |
|---|---|---|
| tokenizers | CLIP BPE and T5 unigram, trained on the world's captions and common words | seconds |
| text_encoder (CLIP) | {r["text_width"]} wide, 2 layers | {r["text_steps"]} steps to name shape, colour and background (named right: {summary["clip_named_right"]:.1%}) |
| text_encoder_2 (T5) | {r["text_width"]} wide, 2 layers, attention limited to 2 neighbours | random, fixed |
| vae | 16 latent channels, 8x, channels {list(r["vae_channels"])} | {r["vae_steps"]} steps (PSNR {summary["vae_psnr_db"]:.1f} dB on unseen world pictures) |
| transformer | {r["double_blocks"]} double + {r["single_blocks"]} single blocks, {r["heads"]} x {r["head_dim"]} heads, in_channels 64 | {r["transformer_steps"]} flow-matching steps of {r["lengths"][0][1]} on {r["world_pictures"]} pictures (final loss {summary["flow_loss"]:.3f}) |

How well it draws what it is asked (colour and shape accuracy over a grid of prompts) is
measured by `bench/demo_quality.py`; the figures are in `docs/benchmarks.md`. Licence: Apache-2.0,
like the rest of the repository.
"""
