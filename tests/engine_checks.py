"""Checks the engine and model-family tests share: small captioned pictures and the engine run, one
step against an independent objective, a memorising run, a LoRA file's effect in a diffusers
pipeline, the bitwise resume, a quantised base on the CPU kernels, a single-file transformer, and a
training job through the real worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import Events, force_avx512_bf16, tiny_config
from faulty_trainer import FaultHooks

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
    """The engine on `cfg_dict` at the CPU tier with faults from FaultHooks → (exit code, events)."""
    from studio.config import resolve
    from studio.engine import train

    events = Events()
    code = train(resolve(cfg_dict, tier="cpu"), run_dir, events, resume=resume, hooks=FaultHooks(fault),
                 data_dir=data_dir)
    return code, events


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
                        atol: float = 1e-5, relative_loss: bool = False) -> None:
    """The engine's loss and LoRA gradients equal the independent `expected` loss and its gradients;
    with `relative_loss` the loss tolerance is scaled by the loss where it is above 1."""
    expected.backward()
    scale = max(1.0, expected.item()) if relative_loss else 1.0
    assert abs(loss.item() - expected.item()) < loss_tolerance * scale, (loss.item(), expected.item())
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
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


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


def memorising_config(model: Path, dataset: Path, out: Path, **sections) -> dict:
    """The run the families' learning and file tests share: 50 steps at lr 1e-2 of a rank-8 LoRA on
    every linear layer, two pictures per batch; `sections` add the family's own settings."""
    from studio.config import deep_merge

    return tiny_config(model, dataset, out, **deep_merge(
        {**memorising_settings(lr=1e-2, rank=8, max_steps=50), "training": {"batch_size": 2}}, sections))


def memorising_run(run, cfg: dict, root: Path):
    """`run(cfg, root/out/run, root/data)` → (exit code, events), which must succeed. → (run folder,
    dataset folder, events)."""
    from studio.events import EXIT_OK

    code, events = run(cfg, root / "out" / "run", root / "data")
    assert code == EXIT_OK, events.of("error")
    return root / "out" / "run", Path(cfg["dataset"]["path"]), events


def run_with_data_folder(run, cfg: dict, root: Path):
    """`run(cfg, root/out/run)` with $STUDIO_DATA at root/data, for a module-scoped fixture (the
    monkeypatch fixture is per test); returns (run folder, exit code, events)."""
    import pytest

    with pytest.MonkeyPatch.context() as env:
        env.setenv("STUDIO_DATA", str(root / "data"))
        code, events = run(cfg, root / "out" / "run")
    return root / "out" / "run", code, events


def single_file_pipeline(family, model: Path, tmp_path: Path, transformer_class):
    """The family's pipeline with its transformer from one .safetensors file (the folder's weights
    + 0.01, so it differs from the folder's). → (pipeline, the transformer the file holds)."""
    from studio.families.base import inspect_model

    single = tmp_path / "finetune.safetensors"
    other = shifted_transformer_file(transformer_class, model, single)
    return family.load(inspect_model(str(model)), str(single)), other


QUANTISED_CASES = [("12gb", "nf4", False), ("12gb", "nf4", True), ("16gb", "int8", False)]
QUANTISED_IDS = ["nf4-cpu", "nf4-cpu-avx512bf16", "int8-cpu"]


def quantised_run(model: Path, dataset: Path, tmp_path: Path, monkeypatch, built: dict, tier: str, precision: str,
                  avx512_bf16: bool):
    """Two steps of the `tier`'s quantised base (bitsandbytes NF4 / int8) through the engine, on the CPU
    kernels with conftest's `cpu_quantisation` guards lifted (`built` is that fixture). NF4 runs both as
    on this CPU and as on one with AVX512-BF16 (bitsandbytes' flag forced), where the packed inference
    kernel must never be entered. → (the run's training state, the LoRA files written)."""
    import pytest

    pytest.importorskip("bitsandbytes", reason="bitsandbytes is in requirements.txt")
    from accelerate.state import AcceleratorState

    from studio.config import resolve
    from studio.engine import train
    from studio.events import EXIT_OK

    packed = force_avx512_bf16(monkeypatch, avx512_bf16)
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
    assert not any(getattr(m, "support_avx512bf16_for_cpu", False) for m in built["trainer"].transformer.modules())
    return built["trainer"], events.of("done")[-1]["files"]
