"""Noise levels, schedules, targets, optimisers, checkpoints — and the engine options that use them."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import Events, make_images, tiny_config
from faulty_trainer import FaultHooks
from studio.config import resolve
from studio.engine import train
from studio.events import EXIT_OK
from studio.families.flux1 import FLUX1
from studio import training_utils as tu


@pytest.mark.parametrize("scheme", ["uniform", "sigmoid", "logit_normal", "shift", "resolution_shift"])
def test_timesteps_lie_in_unit_interval(scheme):
    cfg = resolve({"training": {"timestep_sampling": scheme}}, tier="cpu")
    t = tu.sample_timesteps(cfg, 20000, 1024, torch.Generator().manual_seed(0), "cpu", FLUX1.resolution_shift)
    assert t.shape == (20000,) and float(t.min()) > 0 and float(t.max()) < 1


def test_shift_moves_noise_levels_up_as_the_formula_says():
    g = torch.Generator().manual_seed(0)
    plain = tu.sample_timesteps(resolve({"training": {"timestep_sampling": "sigmoid"}}, tier="cpu"), 10000, 256, g, "cpu")
    g = torch.Generator().manual_seed(0)
    shifted = tu.sample_timesteps(resolve({"training": {"timestep_sampling": "shift", "shift": 3.0}}, tier="cpu"),
                                  10000, 256, g, "cpu")
    torch.testing.assert_close(shifted, 3 * plain / (1 + 2 * plain))
    small, large = (tu.sample_timesteps(resolve({"training": {"timestep_sampling": "resolution_shift"}}, tier="cpu"),
                                        10000, n, torch.Generator().manual_seed(0), "cpu", FLUX1.resolution_shift)
                    for n in (256, 4096))
    # FLUX.1's shift, μ = 0.5 at 256 tokens and 1.15 at 4096: the larger image gets noisier timesteps.
    assert float(large.mean()) > float(small.mean())
    torch.testing.assert_close(small, math.exp(0.5) * plain / (1 + (math.exp(0.5) - 1) * plain))
    with pytest.raises(ValueError, match="needs the model family's resolution_shift"):  # no silent default family
        tu.sample_timesteps(resolve({"training": {"timestep_sampling": "resolution_shift"}}, tier="cpu"), 4, 256, g, "cpu")


def _lrs(scheduler_cfg: dict, steps: int = 100) -> list[float]:
    cfg = resolve({"schedule": {"max_steps": steps, **scheduler_cfg}, "optimizer": {"lr": 1e-3}}, tier="cpu")
    opt = tu.build_optimizer(cfg, [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3}])
    sched = tu.build_scheduler(cfg, opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_schedulers_shape():
    assert set(_lrs({"scheduler": "constant", "warmup_steps": 0})) == {1e-3}
    warm = _lrs({"scheduler": "constant_with_warmup", "warmup_steps": 10})
    assert warm[0] < warm[5] < warm[10] == 1e-3 == warm[-1]
    cos = _lrs({"scheduler": "cosine", "warmup_steps": 10, "min_lr": 1e-4})
    assert max(cos) == pytest.approx(1e-3, rel=1e-3) and cos[-1] == pytest.approx(1e-4, rel=0.05) and min(cos[10:]) >= 1e-4 - 1e-9
    assert cos[0] < cos[5] < cos[10]
    restarts = _lrs({"scheduler": "cosine_with_restarts", "warmup_steps": 0, "num_cycles": 2})
    assert restarts[49] < 1e-4 and restarts[51] > 9e-4  # back up at the restart
    cyc = _lrs({"scheduler": "cyclic", "cyclic_base_lr": 1e-5, "cyclic_max_lr": 1e-4, "cyclic_step_size": 10})
    assert cyc[0] == pytest.approx(1e-5) and cyc[10] == pytest.approx(1e-4) and cyc[20] == pytest.approx(1e-5)
    poly = _lrs({"scheduler": "polynomial", "warmup_steps": 0, "poly_power": 2.0, "poly_end_lr": 1e-6})
    assert poly[0] == 1e-3 and poly[50] < 0.5e-3 and poly[-1] < 1e-4


def test_targets_follow_sets_and_block_choice(tiny_model):
    from diffusers import FluxTransformer2DModel

    model = FluxTransformer2DModel.from_pretrained(str(tiny_model), subfolder="transformer")
    names = lambda **lora: FLUX1.target_modules(resolve({"lora": lora}, tier="cpu").lora, model)  # noqa: E731
    attention, default, full = names(targets="attention"), names(targets="diffusers_default"), names(targets="all_linear")
    assert set(attention) < set(default) < set(full)
    assert "single_transformer_blocks.0.attn.to_q" in default and "single_transformer_blocks.0.proj_mlp" not in default
    assert {"single_transformer_blocks.1.proj_mlp", "single_transformer_blocks.1.proj_out",
            "single_transformer_blocks.1.norm.linear", "transformer_blocks.0.norm1_context.linear"} <= set(full)
    assert not any(n.startswith(("x_embedder", "proj_out", "norm_out")) for n in full)
    only = names(targets="all_linear", double_blocks=[1], single_blocks=[])
    assert only and all(n.startswith("transformer_blocks.1.") for n in only)
    assert names(target_modules=["ff.net.2"]) == ["transformer_blocks.0.ff.net.2", "transformer_blocks.1.ff.net.2"]


def test_checkpoint_write_is_atomic_and_pruned(tmp_path):
    state = {"w": torch.ones(2)}
    for step in (1, 2, 3):
        tu.write_checkpoint(tmp_path, step, state, {"step": step}, keep_last=2)
    assert [p.name for p in tu.list_checkpoints(tmp_path)] == ["step000002", "step000003"]
    written = []

    def disk_full(folder):
        written.extend(sorted(p.name for p in folder.iterdir()))
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        tu.write_checkpoint(tmp_path, 4, state, {"step": 4}, keep_last=2, before_commit=disk_full)
    assert written == ["lora.safetensors", "meta.json", "state.pt"]  # failed after every file was written
    assert [p.name for p in tu.list_checkpoints(tmp_path)] == ["step000002", "step000003"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    (tmp_path / "step000003" / "state.pt").write_bytes(b"garbage")  # damaged newest: fall back
    path, _, state = tu.latest_checkpoint(tmp_path)
    assert path.name == "step000002" and state["step"] == 2


def test_save_error_keeps_previous_checkpoint_and_fails_clearly(tiny_model, tmp_path, studio_data):
    dataset = make_images(tmp_path / "ds", count=2)
    cfg = tiny_config(tiny_model, dataset, tmp_path / "out", schedule={"max_steps": 4}, save={"every": 2})
    events = Events()
    assert train(resolve(cfg, tier="cpu"), tmp_path / "run", events) == EXIT_OK
    events = Events()
    cfg["schedule"]["max_steps"] = 6
    assert train(resolve(cfg, tier="cpu"), tmp_path / "run", events, resume=True, hooks=FaultHooks("save_error")) == 1
    error = events.of("error")[0]
    assert error["code"] == "SAVE_FAILED" and "No space left" in error["message"]
    assert [p.name for p in tu.list_checkpoints(tmp_path / "run" / "checkpoints")] == ["step000002"]
    tu.read_checkpoint(tmp_path / "run" / "checkpoints" / "step000002")


def test_text_encoder_lora_prodigy_multires_and_augmentation(tiny_model, tmp_path, studio_data):
    from studio.lora_files import validate_lora_file

    dataset = make_images(tmp_path / "ds", count=2)
    cfg = tiny_config(tiny_model, dataset, tmp_path / "out", schedule={"max_steps": 3},
                      lora={"train_text_encoder": True}, optimizer={"name": "prodigy", "lr": 1.0},
                      dataset={"extra_resolutions": [96], "augmentations": [{"name": "horizontal_flip", "prob": 0.5}]},
                      sample={"every": 2, "true_cfg": 3.0})  # guided samples: both CLIP vectors from the LoRA
    events = Events()
    assert train(resolve(cfg, tier="cpu"), tmp_path / "run", events) == EXIT_OK, events.of("error")
    assert [e["step"] for e in events.of("sample")] == [2, 3]
    info = validate_lora_file(tmp_path / "run" / "test-lora.safetensors")
    assert info.has_text_encoder
    assert events.of("start")[0]["num_images"] == 2
    assert any(w["code"] == "CACHE_BYPASSED" and "augment" in w["message"].lower() for w in events.of("warning"))
    assert "latent_misses" not in events.of("start")[0]  # augmented: no latent cache


def test_oom_reports_next_tier(tiny_model, tmp_path, studio_data):
    dataset = make_images(tmp_path / "ds", count=1)
    events = Events()
    cfg = resolve(tiny_config(tiny_model, dataset, tmp_path / "out"), tier="cpu")
    cfg.memory.tier = "16gb"  # what the advice names depends on the tier the job ran at
    cfg.memory.device = "cpu"
    assert train(cfg, tmp_path / "run", events, hooks=FaultHooks("oom@1")) == 5
    error = events.of("error")[0]
    assert error["code"] == "OUT_OF_MEMORY" and error["next_tier"] == "12gb" and "12gb" in error["message"]


def test_gradient_accumulation_steps_the_optimiser_once_per_step(tiny_model, tmp_path, studio_data):
    dataset = make_images(tmp_path / "ds", count=4)
    cfg = tiny_config(tiny_model, dataset, tmp_path / "out", schedule={"max_steps": 3},
                      training={"gradient_accumulation": 2}, save={"every": 2})
    events = Events()
    assert train(resolve(cfg, tier="cpu"), tmp_path / "run", events) == EXIT_OK, events.of("error")
    assert [e["step"] for e in events.of("step")] == [1, 2, 3]
    _, state = tu.read_checkpoint(tmp_path / "run" / "checkpoints" / "step000002")
    adam_steps = {float(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {2.0}  # four micro-batches, two optimiser updates
