"""The quantised memory-tier paths (int8 / NF4 bases through bitsandbytes, fp8 through torchao,
8-bit AdamW) through the real engine, on the CPU.

For users these settings need a CUDA GPU (config.gpu_only_settings; the engine refuses them on a
CPU). bitsandbytes and torchao have CPU kernels, though, so with exactly two guards lifted
(ours, and diffusers' own "a GPU is needed for quantization" check) the engine's code for these
tiers runs here: quantised loading, peft's quantised LoRA layers, gradient checkpointing,
sampling, checkpoint + resume, and writing both LoRA files. The GPU kernels and the memory
figures are what the `gpu`-marked tests and bench/gpu_flux.py add on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from conftest import Events, force_avx512_bf16, make_images, tiny_config
from faulty_trainer import FaultHooks
from studio import engine
from studio.config import resolve
from studio.events import EXIT_INTERRUPTED, EXIT_OK
from studio.lora_files import validate_lora_file

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is in requirements.txt")
pytest.importorskip("torchao", reason="torchao is in requirements.txt")
pytestmark = pytest.mark.engine


def _reset_accelerate():
    """These runs use bf16 mixed precision, the others none, and accelerate keeps one state per
    process (a studio job is its own process): each run here starts from a fresh one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    yield
    _reset_accelerate()  # leave the process as the other tests expect it


def _train(cfg, run_dir, resume=False, hooks=None):
    _reset_accelerate()
    events = Events()
    return engine.train(cfg, run_dir, events, resume=resume, hooks=hooks), events


def _config(tiny_model, tmp_path, tier: str, **sections):
    images = make_images(tmp_path / "images", count=2)
    sections.setdefault("schedule", {"max_steps": 4, "warmup_steps": 0})
    sections.setdefault("sample", {"every": 2, "at_start": False, "steps": 2, "width": 64, "height": 64,
                                   "prompts": ["a photo of [trigger]"]})
    memory = {"device": "auto", **sections.pop("memory", {})}  # the tier presets say cuda
    optimizer = {"lr": 1e-3, **sections.pop("optimizer", {})}
    cfg = tiny_config(tiny_model, images, tmp_path / "out", memory=memory, optimizer=optimizer,
                      log={"every": 1}, **sections)
    return resolve(cfg, tier=tier)


def _files(code, events):
    assert code == EXIT_OK, events.of("error")
    losses = [e["loss"] for e in events.of("step")]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    files = events.of("done")[-1]["files"]
    assert len(files) == 2  # diffusers and ComfyUI layouts
    for path in files:
        validate_lora_file(path)
    return files


def _lora_b_moved(path) -> bool:
    from safetensors.torch import load_file

    ups = [t for k, t in load_file(path).items() if "lora_B" in k]
    return bool(ups) and any(t.abs().max() > 0 for t in ups)  # lora_B starts at zero


@pytest.mark.parametrize("tier, precision", [("16gb", "int8"), ("12gb", "nf4"), ("16gb", "fp8"), ("24gb", "bf16")])
def test_quantised_base_trains_samples_and_saves(tiny_model, tmp_path, studio_data, cpu_quantisation, caplog,
                                                 tier, precision):
    """Each GPU tier's base precision, with bf16 mixed precision as on a GPU (the samples are made
    under the training autocast: accelerate returns fp32 from the prepared model, and the VAE is bf16)."""
    from peft.tuners.lora import bnb as peft_bnb
    from peft.tuners.lora.torchao import TorchaoLoraLinear

    cfg = _config(tiny_model, tmp_path, tier, memory={"base_precision": precision},
                  optimizer={"name": "adamw", "lr": 1e-3})
    assert cfg.memory.mixed_precision == "bf16" and cfg.memory.gradient_checkpointing == (tier != "24gb")
    code, events = _train(cfg, tmp_path / "run")
    files = _files(code, events)

    transformer = cpu_quantisation["trainer"].transformer
    layer, single = transformer.transformer_blocks[0].attn.to_q, transformer.single_transformer_blocks[0].attn.to_q
    weight = layer.base_layer.weight
    if precision == "nf4":
        assert isinstance(layer, peft_bnb.Linear4bit) and isinstance(single, peft_bnb.Linear4bit)
        assert isinstance(weight, bnb.nn.Params4bit) and weight.dtype == torch.uint8
        assert weight.quant_state is not None and weight.quant_state.quant_type == "nf4"
    elif precision == "int8":
        assert isinstance(layer, peft_bnb.Linear8bitLt) and isinstance(single, peft_bnb.Linear8bitLt)
        assert isinstance(weight, bnb.nn.Int8Params) and weight.dtype == torch.int8
    elif precision == "fp8":
        assert isinstance(layer, TorchaoLoraLinear) and isinstance(single, TorchaoLoraLinear)
        assert type(weight).__name__ == "Float8Tensor" and weight.qdata.dtype == torch.float8_e4m3fn
    else:
        assert type(weight) is torch.nn.Parameter and weight.dtype == torch.bfloat16
    assert layer.lora_A["default"].weight.dtype == torch.float32  # LoRA trains in fp32 over the base
    assert [e["step"] for e in events.of("sample")] == [2, 4]
    assert _lora_b_moved(files[0])
    assert not [r for r in caplog.records if "MatMul8bitLt" in r.getMessage()]  # one per int8 matmul: filtered


def test_quantised_lora_files_have_the_full_precision_layout(tiny_model, tmp_path, studio_data, cpu_quantisation):
    """A LoRA trained over an NF4 base is a plain LoRA: same tensor names and shapes as one trained
    over the fp32 base, so it loads in diffusers / ComfyUI / Forge on any base precision."""
    from safetensors.torch import load_file

    nf4 = _config(tiny_model, tmp_path, "12gb", optimizer={"name": "adamw", "lr": 1e-3})
    quantised = _files(*_train(nf4, tmp_path / "nf4"))
    plain = _config(tiny_model, tmp_path, "cpu")
    full = _files(*_train(plain, tmp_path / "fp32"))
    for q, f in zip(quantised, full):
        a, b = load_file(q), load_file(f)
        assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_nf4_with_adamw8bit_checkpoints_and_resumes(tiny_model, tmp_path, studio_data, cpu_quantisation):
    """The 12 GB tier as shipped (NF4 base, 8-bit AdamW): interrupted at step 2, resumed to 4, it
    ends where an uninterrupted run ends (the 8-bit optimiser state survives the checkpoint)."""
    from safetensors.torch import load_file

    cfg = _config(tiny_model, tmp_path, "12gb", sample={"every": 0, "at_start": False, "prompts": []})
    assert cfg.optimizer.name == "adamw8bit" and cfg.memory.base_precision == "nf4"
    straight = _files(*_train(cfg, tmp_path / "straight"))
    optimizer = cpu_quantisation["trainer"].optimizer.optimizer
    # (the tiny model's LoRA tensors are below bitsandbytes' min_8bit_size, so their state is fp32)
    assert isinstance(optimizer, bnb.optim.AdamW8bit) and optimizer.state

    code, events = _train(cfg, tmp_path / "resumed", hooks=FaultHooks("sigterm@2"))
    assert code == EXIT_INTERRUPTED
    assert events.of("checkpoint")[-1]["step"] == 2
    code, events = _train(cfg, tmp_path / "resumed", resume=True)
    assert code == EXIT_OK and events.of("start")[0]["start_step"] == 2
    resumed = events.of("done")[-1]["files"]
    a, b = load_file(straight[0]), load_file(resumed[0])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("avx512_bf16", [False, True], ids=["cpu", "cpu-avx512bf16"])
def test_nf4_trains_and_samples_with_and_without_avx512_bf16(tiny_model, tmp_path, studio_data, cpu_quantisation,
                                                             monkeypatch, avx512_bf16):
    """On a CPU with AVX512-BF16, bitsandbytes repacks a Linear4bit's weights for its inference
    kernel at the first forward in eval mode without grad (our sampling pass). The repacking fails
    on layers narrower than a quantisation block, and a repacked layer would train through a kernel
    without gradients. The flag is forced either way here, so both machine kinds are tested on
    any CPU: the engine keeps NF4 layers on the training kernels, and nothing is ever repacked."""
    repacked = force_avx512_bf16(monkeypatch, avx512_bf16)
    assert bnb.nn.Linear4bit(64, 64).support_avx512bf16_for_cpu is avx512_bf16  # what each new layer reads

    cfg = _config(tiny_model, tmp_path, "12gb", optimizer={"name": "adamw", "lr": 1e-3})
    files = _files(*_train(cfg, tmp_path / "run"))
    assert _lora_b_moved(files[0])
    layers = [m for m in cpu_quantisation["trainer"].transformer.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not repacked
    assert not any(m.support_avx512bf16_for_cpu for m in layers)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
