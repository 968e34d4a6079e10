"""Checks several engine tests share: one step against an independent objective, a LoRA file's
effect in a diffusers pipeline, and a training job through the real worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from conftest import Events


def one_step(cfg, run_dir: Path, data_dir: Path | None = None):
    """(state, loss, LoRA gradients, generator state) of the first step of `cfg`, its LoRA B made
    non-zero so every LoRA path matters. The generator state is where the step's draws began: an
    independent computation replays them from it."""
    from studio.engine import build_state
    from studio.train.step import loss as step_loss

    trainer = build_state(cfg, run_dir, Events(), data_dir=data_dir)
    torch.manual_seed(0)
    for p in trainer.lora_params:
        p.data.normal_(0, 0.05)
    state = trainer.generator.get_state()
    loss = step_loss(trainer, trainer.plan[0])
    loss.backward()
    grads = [p.grad.clone() for p in trainer.lora_params]
    trainer.optimizer.zero_grad(set_to_none=True)
    return trainer, loss, grads, state


def replay(state) -> torch.Generator:
    """A CPU generator at the step's starting state."""
    gen = torch.Generator().manual_seed(0)
    gen.set_state(state)
    return gen


def assert_step_matches(trainer, loss, grads, expected, loss_tolerance: float = 1e-5, rtol: float = 1e-5,
                        atol: float = 1e-5) -> None:
    """The engine's loss and LoRA gradients equal the independent `expected` loss and its gradients."""
    expected.backward()
    assert abs(loss.item() - expected.item()) < loss_tolerance, (loss.item(), expected.item())
    for p, g in zip(trainer.lora_params, grads):
        torch.testing.assert_close(g, p.grad, rtol=rtol, atol=atol)


def assert_lora_changes_output(pipe, lora_file: Path, generate, min_change: float = 1e-3):
    """The diffusers file loads with the pipeline's load_lora_weights and changes `generate()`'s output;
    at weight 0 the output is the base model's bit for bit. Returns the output with the LoRA."""
    base = generate()
    pipe.load_lora_weights(str(lora_file), adapter_name="mine")
    with_lora = generate()
    pipe.set_adapters(["mine"], adapter_weights=[0.0])
    weight_zero = generate()
    assert np.abs(with_lora - base).mean() > min_change
    np.testing.assert_array_equal(weight_zero, base)
    return with_lora


def worker_job(data_dir: Path, name: str, config):
    """(store, job id, job) of a training job run by the real worker with its default command
    (`python -m studio train`); the job must succeed."""
    from studio.jobs import JobStore
    from studio.worker import Worker

    store = JobStore(data_dir)
    job_id = store.create_job(name, config.to_dict())
    Worker(data_dir, poll_interval=0.1).run_once()
    job = store.get_job(job_id)
    assert job["status"] == "succeeded", (job["error_message"], job["advice"])
    return store, job_id, job


def quiet_pipeline(pipeline_class, model: Path):
    """A diffusers pipeline of the tiny model, without progress bars."""
    pipe = pipeline_class.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def shifted_transformer_file(transformer_class, model: Path, path: Path):
    """The model's transformer with every weight moved by 0.01, saved as one .safetensors file at
    `path` (a fine-tune's single file); returns that transformer."""
    from safetensors.torch import save_file

    other = transformer_class.from_pretrained(str(model), subfolder="transformer")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    save_file(other.state_dict(), str(path))
    return other


def assert_same_delta_weights(a: dict, b: dict) -> None:
    """Two files' ΔW per module ({module: tensor}) are the same adapter."""
    assert set(a) == set(b) and a
    for name, dw in a.items():
        torch.testing.assert_close(b[name], dw, atol=1e-6, rtol=1e-5)


def assert_identical_loras(a_path: Path, b_path: Path) -> None:
    """Two LoRA files hold the same tensors, bit for bit (a resumed run against a straight one)."""
    from safetensors.torch import load_file

    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def flux2_objective(pipe, trainer, cfg, caption: str, pixels, state, compute_empirical_mu, guidance=None):
    """The FLUX.2 flow-matching loss of the engine's first step, written with the pipeline's own
    helpers (prompt encoding, VAE latents with batch norm, patch packing, 4-D ids, the shift from
    `compute_empirical_mu` at the pipelines' 50 steps), replaying the step's draws from `state`."""
    import math

    gen = replay(state)
    with torch.no_grad():
        embeds, text_ids = pipe.encode_prompt(prompt=caption, max_sequence_length=512)
        x0 = pipe._encode_vae_image(pixels, generator=None)  # mode, patchify, batch norm
    noise = torch.randn(x0.shape, generator=gen)
    sigma = torch.sigmoid(torch.randn((1,), generator=gen) * cfg.training.logit_std)
    shift = math.exp(compute_empirical_mu(x0.shape[2] * x0.shape[3], 50))
    t = shift * sigma / (1 + (shift - 1) * sigma)
    noisy = (1 - t) * x0 + t * noise
    ids = pipe._prepare_latent_ids(noisy)
    pred = trainer.transformer(hidden_states=pipe._pack_latents(noisy), timestep=t,
                               guidance=None if guidance is None else torch.tensor([guidance]),
                               encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=ids, return_dict=False)[0]
    return ((pipe._unpack_latents_with_ids(pred, ids) - (noise - x0)) ** 2).mean()


def resume_settings(max_steps: int) -> dict:
    """Config sections whose state a resume must carry over exactly: a cosine schedule with warm-up,
    EMA weights, caption dropout and LoRA dropout (random draws), no checkpoints but the interrupt's."""
    return dict(schedule={"max_steps": max_steps, "scheduler": "cosine", "warmup_steps": 2}, training={"ema": True},
                dataset={"caption_dropout": 0.3}, lora={"dropout": 0.1}, save={"every": 0})


def assert_resume_is_bitwise_exact(run, cfg: dict, tmp_path: Path, at: int) -> None:
    """With `run(cfg, run_dir, resume=False, fault="")` → (exit code, events): a run stopped by SIGTERM
    after step `at` checkpoints there and, resumed, ends bit for bit where a straight run ends."""
    from studio.events import EXIT_INTERRUPTED, EXIT_OK

    code, _ = run(cfg, tmp_path / "straight")
    assert code == EXIT_OK
    code, events = run(cfg, tmp_path / "resumed", fault=f"sigterm@{at}")
    assert code == EXIT_INTERRUPTED and events.of("checkpoint")[-1]["step"] == at
    code, events = run(cfg, tmp_path / "resumed", resume=True)
    assert code == EXIT_OK and events.of("start")[0]["start_step"] == at
    assert_identical_loras(tmp_path / "straight" / "test-lora.safetensors",
                           tmp_path / "resumed" / "test-lora.safetensors")


def memorising_settings(lr: float, rank: int, max_steps: int) -> dict:
    """Config sections of a run long and strong enough to memorise a few images: a constant rate, no
    warm-up, a LoRA on every linear layer of the blocks."""
    return dict(optimizer={"lr": lr}, lora={"rank": rank, "alpha": rank, "targets": "all_linear"},
                schedule={"max_steps": max_steps, "scheduler": "constant", "warmup_steps": 0})


def run_with_data_folder(run, cfg: dict, root: Path):
    """`run(cfg, root/out/run)` with $STUDIO_DATA at root/data, for a module-scoped fixture (the
    monkeypatch fixture is per test); returns (run folder, exit code, events)."""
    import pytest

    with pytest.MonkeyPatch.context() as env:
        env.setenv("STUDIO_DATA", str(root / "data"))
        code, events = run(cfg, root / "out" / "run")
    return root / "out" / "run", code, events
