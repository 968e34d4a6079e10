"""What the model families' end-to-end tests share: one studio step with its LoRA gradients (to
compare with an objective computed independently), its comparison, and the bitwise resume."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import Events, tiny_config


def studio_step(cfg, tmp_path: Path):
    """One training step of the studio on `cfg`, every LoRA B non-zero (so every LoRA path matters):
    (trainer, the step generator's state before the step, the loss, the LoRA gradients)."""
    from studio.engine import build_state
    from studio.train.step import loss as step_loss

    trainer = build_state(cfg, tmp_path / "run", Events(), data_dir=tmp_path / "data")
    torch.manual_seed(0)
    for p in trainer.lora_params:
        p.data.normal_(0, 0.05)
    state = trainer.generator.get_state()
    loss = step_loss(trainer, trainer.plan[0])
    loss.backward()
    grads = [p.grad.clone() for p in trainer.lora_params]
    trainer.optimizer.zero_grad(set_to_none=True)
    return trainer, state, loss, grads


def assert_same_step(trainer, loss, grads, expected) -> None:
    """The studio's loss and gradients equal `expected` (the independent objective, backpropagated here)."""
    expected.backward()
    assert abs(loss.item() - expected.item()) < 1e-5 * max(1.0, expected.item())
    for p, g in zip(trainer.lora_params, grads):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


def assert_resume_is_bitwise(model: Path, dataset: Path, tmp_path: Path, run) -> None:
    """A run stopped by SIGTERM at step 3 and resumed writes the same LoRA, bit for bit, as one that
    ran straight through (cosine schedule with warm-up, EMA, caption and LoRA dropout all on).
    `run(cfg, run_dir, data_dir, resume=, fault=)` → (exit code, events)."""
    from safetensors.torch import load_file

    from studio.events import EXIT_INTERRUPTED, EXIT_OK

    cfg = tiny_config(model, dataset, tmp_path / "out", schedule={"max_steps": 6, "scheduler": "cosine",
                                                                 "warmup_steps": 2},
                      training={"ema": True}, dataset={"caption_dropout": 0.3}, lora={"dropout": 0.1})
    code, _ = run(cfg, tmp_path / "straight", tmp_path / "data")
    assert code == EXIT_OK
    code, events = run(cfg, tmp_path / "resumed", tmp_path / "data", fault="sigterm@3")
    assert code == EXIT_INTERRUPTED and events.of("checkpoint")[-1]["step"] == 3
    code, events = run(cfg, tmp_path / "resumed", tmp_path / "data", resume=True)
    assert code == EXIT_OK and events.of("start")[0]["start_step"] == 3
    a = load_file(str(tmp_path / "straight" / "test-lora.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "test-lora.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def memorising_run(model: Path, dataset: Path, root: Path, run, **sections):
    """The run the learning and file tests share: 50 steps at lr 1e-2 of a rank-8 LoRA on every
    linear layer, two pictures per batch; `sections` add the family's own settings. → (run folder,
    dataset, events)."""
    from studio.config import deep_merge
    from studio.events import EXIT_OK

    cfg = tiny_config(model, dataset, root / "out", **deep_merge(dict(
        optimizer={"lr": 1e-2}, lora={"rank": 8, "alpha": 8, "targets": "all_linear"},
        schedule={"max_steps": 50, "scheduler": "constant", "warmup_steps": 0}, training={"batch_size": 2}), sections))
    code, events = run(cfg, root / "out" / "run", root / "data")
    assert code == EXIT_OK, events.of("error")
    return root / "out" / "run", dataset, events
