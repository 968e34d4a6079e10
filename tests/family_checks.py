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


QUANTISED_CASES = [("12gb", "nf4", False), ("12gb", "nf4", True), ("16gb", "int8", False)]
QUANTISED_IDS = ["nf4-cpu", "nf4-cpu-avx512bf16", "int8-cpu"]


def quantised_run(model: Path, dataset: Path, tmp_path: Path, monkeypatch, tier: str, precision: str,
                  avx512_bf16: bool):
    """Two steps of the `tier`'s quantised base (bitsandbytes NF4 / int8) through the engine, on the CPU
    kernels with the same two GPU guards lifted as tests/test_quantised_cpu.py lifts. NF4 runs both as
    on this CPU and as on one with AVX512-BF16 (bitsandbytes' flag forced), where the packed inference
    kernel must never be entered. → (the run's training state, the LoRA files written)."""
    import pytest

    pytest.importorskip("bitsandbytes", reason="bitsandbytes is in requirements.txt")
    from accelerate.state import AcceleratorState
    from bitsandbytes.nn import modules
    from diffusers.quantizers.bitsandbytes import bnb_quantizer

    from studio.config import resolve
    from studio.engine import train
    from studio.events import EXIT_OK
    from studio.train import loop, state

    monkeypatch.setattr(modules, "has_avx512bf16", lambda: avx512_bf16)
    packed = []
    original_pack = modules._convert_weight_packed_for_cpu
    monkeypatch.setattr(modules, "_convert_weight_packed_for_cpu",
                        lambda *a, **k: packed.append(a[1].shape) or original_pack(*a, **k))
    for cls in (bnb_quantizer.BnB4BitDiffusersQuantizer, bnb_quantizer.BnB8BitDiffusersQuantizer):
        monkeypatch.setattr(cls, "validate_environment", lambda self, *a, **k: None)
        monkeypatch.setattr(cls, "update_device_map", lambda self, device_map: {"": "cpu"})
    monkeypatch.setattr(state, "gpu_only_settings", lambda cfg: [])
    built = {}
    original = loop.build_state
    monkeypatch.setattr(loop, "build_state", lambda *a, **k: built.setdefault("state", original(*a, **k)))
    cfg = resolve(tiny_config(model, dataset, tmp_path / "out", schedule={"max_steps": 2},
                              memory={"device": "auto", "base_precision": precision},
                              optimizer={"name": "adamw", "lr": 1e-3}), tier=tier)
    AcceleratorState._reset_state(reset_partial_state=True)  # bf16 mixed precision here, none elsewhere
    try:
        events = Events()
        code = train(cfg, tmp_path / "run", events, data_dir=tmp_path / "data")
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert code == EXIT_OK, events.of("error")
    assert packed == []  # samples and steps stayed on the dequantising kernels on either CPU
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in built["state"].transformer.modules())
    return built["state"], events.of("done")[-1]["files"]


def single_file_pipeline(family, model: Path, tmp_path: Path, transformer_class):
    """The family's pipeline with its transformer from one .safetensors file (the folder's weights
    + 0.01, so it differs from the folder's). → (pipeline, the transformer the file holds)."""
    from safetensors.torch import save_file

    from studio.families.base import inspect_model

    other = transformer_class.from_pretrained(str(model), subfolder="transformer")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    single = tmp_path / "finetune.safetensors"
    save_file(other.state_dict(), str(single))
    return family.load(inspect_model(str(model)), str(single)), other
