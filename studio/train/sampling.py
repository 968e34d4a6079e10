"""Sample images during training: the configured prompts at fixed seeds, saved with their prompt.
An edit run draws each prompt from a fixed control image of the dataset (state.sample_controls)."""

from __future__ import annotations

import torch


def make_samples(state) -> None:
    """Draw every sample prompt with the current LoRA (its EMA weights when EMA is on)."""
    if not state.accelerator.is_main_process or not state.sample_prompts:
        return
    from PIL.PngImagePlugin import PngInfo

    cfg, pipe, device = state.cfg, state.pipe, state.device
    model = state.accelerator.unwrap_model(state.model)
    was_training = model.training
    model.eval()
    if state.ema:
        state.ema.store(state.lora_params)
        state.ema.copy_to(state.lora_params)
    pipe.transformer = model
    pipe.vae.to(device)
    try:
        for k, prompt in enumerate(state.sample_prompts):
            seed = cfg.sample.seed + k
            control = sample_input(state, k)
            # Under mixed precision the prepared model returns fp32 (accelerate's output wrapper), so the
            # latents reach a bf16 VAE as fp32: sample under the training autocast, as the step runs.
            with torch.no_grad(), state.accelerator.autocast():
                image = state.family.sample(pipe, state.text[prompt], prompt, state.text_encoder, seed,
                                            cfg.sample.steps, cfg.sample.guidance,
                                            (cfg.sample.width, cfg.sample.height), device, control=control,
                                            true_cfg=cfg.sample.true_cfg, negative=state.text[""])
            rel = f"samples/step{state.step:06d}_p{k}.png"
            meta = PngInfo()
            meta.add_text("prompt", prompt)
            meta.add_text("step", str(state.step))
            meta.add_text("seed", str(seed))
            if control is not None:
                meta.add_text("control", state.sample_controls[k].name)
            image.save(state.run_dir / rel, pnginfo=meta)
            state.report.emit("sample", step=state.step, path=rel, prompt=prompt, seed=seed)
    finally:
        if state.ema:
            state.ema.restore(state.lora_params)
        if device.type == "cuda":
            pipe.vae.to("cpu")
        model.train(was_training)


def sample_input(state, k: int):
    """Prompt k's input image (an edit run), cropped to the sample size, else None."""
    if not state.sample_controls:
        return None
    from ..data.pairs import fitted_input

    return fitted_input(state.sample_controls[k], (state.cfg.sample.width, state.cfg.sample.height))
