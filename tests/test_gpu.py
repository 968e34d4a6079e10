"""GPU memory tiers through the engine (marked gpu: skipped without CUDA), plus the CPU-side
checks that always run: a GPU tier fails fast without CUDA, and bench/gpu_flux.py's code path
runs on a tiny config on the CPU."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

from conftest import REPO, Events, make_images, tiny_config
from studio.config import resolve
from studio.engine import train
from studio.events import EXIT_FAILED, EXIT_OK


def _train(tiny_model, tmp_path, tier: str, **sections):
    images = make_images(tmp_path / "images", count=2)
    sections.setdefault("schedule", {"max_steps": 3, "warmup_steps": 0})
    sections.setdefault("log", {"every": 1})
    cfg = resolve(tiny_config(tiny_model, images, tmp_path / "out", **sections), tier=tier)
    events = Events()
    code = train(cfg, tmp_path / "run", events)
    return code, events, cfg


def _assert_trained(code, events):
    from studio.lora_files import validate_lora_file

    assert code == EXIT_OK, events.of("error")
    losses = [e["loss"] for e in events.of("step")]
    assert losses and all(isinstance(v, float) and v == v and abs(v) != float("inf") for v in losses)
    files = events.of("done")[-1]["files"]
    assert files
    for path in files:
        validate_lora_file(path)
    return files


# --------------------------------------------------------------------------- on a GPU


@pytest.mark.gpu
def test_bf16_training_on_cuda(tiny_model, tmp_path, studio_data):
    code, events, cfg = _train(tiny_model, tmp_path, "24gb", memory={
        "tier": "24gb", "device": "cuda", "mixed_precision": "bf16", "base_precision": "bf16"})
    assert events.of("start")[0]["device"].startswith("cuda")
    files = _assert_trained(code, events)
    from safetensors.torch import load_file
    tensors = load_file(files[0])
    assert all(torch.isfinite(t.float()).all() for t in tensors.values())


@pytest.mark.gpu
def test_adamw8bit_optimizer_runs(tiny_model, tmp_path, studio_data):
    pytest.importorskip("bitsandbytes")
    code, events, cfg = _train(tiny_model, tmp_path, "24gb", optimizer={"name": "adamw8bit"})
    assert cfg.optimizer.name == "adamw8bit"
    _assert_trained(code, events)


@pytest.mark.gpu
def test_nf4_base_trains(tiny_model, tmp_path, studio_data):
    """12 GB tier: NF4 base (bitsandbytes 4-bit), gradient checkpointing, 8-bit AdamW."""
    pytest.importorskip("bitsandbytes")
    code, events, cfg = _train(tiny_model, tmp_path, "12gb")
    assert cfg.memory.base_precision == "nf4" and cfg.memory.gradient_checkpointing
    _assert_trained(code, events)


@pytest.mark.gpu
def test_int8_base_trains(tiny_model, tmp_path, studio_data):
    pytest.importorskip("bitsandbytes")
    code, events, cfg = _train(tiny_model, tmp_path, "16gb")
    assert cfg.memory.base_precision == "int8"
    _assert_trained(code, events)


@pytest.mark.gpu
def test_nf4_with_block_offload_trains_and_learns(tiny_model, tmp_path, studio_data):
    """8 GB tier: NF4 plus group offloading. The LoRA must really change (an offload hook that
    restores stale CPU copies of the weights would leave lora_B at its zero init)."""
    pytest.importorskip("bitsandbytes")
    from safetensors.torch import load_file

    code, events, cfg = _train(tiny_model, tmp_path, "8gb", optimizer={"name": "adamw8bit", "lr": 1e-3})
    assert cfg.memory.block_offload
    files = _assert_trained(code, events)
    tensors = load_file(files[0])
    ups = [t for k, t in tensors.items() if "lora_B" in k or "lora_up" in k]
    assert ups and any(t.float().abs().max() > 0 for t in ups)


# --------------------------------------------------------------------------- on any machine


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU failure")
def test_gpu_tier_without_cuda_fails_fast(tiny_model, tmp_path, studio_data):
    import time

    start = time.perf_counter()
    code, events, cfg = _train(tiny_model, tmp_path, "16gb")
    assert code == EXIT_FAILED
    errors = events.of("error")
    assert errors and errors[0]["code"] == "GPU_REQUIRED", events.items
    assert "cpu" in errors[0]["message"].lower()
    assert events.of("done")[-1]["status"] == "failed" and not events.of("step")
    assert time.perf_counter() - start < 30  # before any model weights are loaded


def _bench():
    from bench import gpu_flux
    return gpu_flux


def test_gpu_bench_tiny_cpu_smoke(tmp_path, capsys):
    """`bench/gpu_flux.py --tiny --device cpu`: the whole path of every tier (meta init, in-place
    int8 / NF4 quantisation on bitsandbytes' CPU kernels, LoRA, checkpointing, group offload,
    8-bit AdamW, timing, FLOPs, JSON) on a tiny config. Run in-process (main(argv)) to spare a
    second torch/diffusers import."""
    out = tmp_path / "bench.json"
    code = _bench().main(["--tiny", "--device", "cpu", "--steps", "2", "--warmup", "0", "--tiers",
                          "24gb,16gb,12gb,8gb", "--resolutions", "64", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert re.search(r"^8gb 64px: \d+\.\d+ s/step, .* TFLOP/s", captured.out, re.M), captured.out
    assert "a smoke test of the code path, not a figure" in captured.err  # said plainly
    results = {r["tier"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"24gb", "16gb", "12gb", "8gb"}
    for tier, r in results.items():
        assert r["s_per_step"] > 0 and r["steps"] == 2 and r["loss_finite"], tier
        assert r["image_tokens"] == 16 and r["mfu"] is None and r["lora_layers"] > 0
    assert results["24gb"]["quantised_linear_layers"] == 0
    assert results["16gb"]["base"] == "int8" and results["12gb"]["base"] == "nf4"
    for tier in ("16gb", "12gb", "8gb"):  # every block linear, embedder and projection is quantised
        assert results[tier]["quantised_linear_layers"] >= results[tier]["lora_layers"], tier
        assert results[tier]["optimizer"] == "adamw8bit"
    assert results["8gb"]["block_offload"] and results["8gb"]["gradient_checkpointing"]


def test_gpu_bench_flops_formula():
    gpu_flux = _bench()
    # 24·N·D² + 4·N²·D per block, 57 blocks, N = 4096 + 512 at 1024² (plus small terms).
    N, D = 4096 + 512, 3072
    blocks = 57 * (24 * N * D * D + 4 * N * N * D)
    full = gpu_flux.forward_flops(gpu_flux.FULL, 4096, 512, rank=0)
    assert blocks <= full <= blocks * 1.01
    assert 74e12 < gpu_flux.forward_flops(gpu_flux.FULL, 4096, 512) < 76e12


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_gpu_bench_refuses_without_cuda(capsys):
    assert _bench().main(["--steps", "1"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["flux1-kontext", "flux2-klein", "flux2-dev", "flux3"])
def test_gpu_bench_measures_every_family(family, tmp_path, capsys):
    """`--family`: each family's own transformer, LoRA targets and step inputs (Kontext: reference
    tokens beside the target's) through the same bench path, bf16-tier and NF4-tier settings."""
    out = tmp_path / "bench.json"
    code = _bench().main(["--family", family, "--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0",
                          "--tiers", "24gb,12gb", "--resolutions", "64", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [r["tier"] for r in results] == ["24gb", "12gb"]
    for r in results:
        assert r["loss_finite"] and r["lora_layers"] > 0 and r["model"].startswith(f"{family}-")
        assert r["image_tokens"] == (32 if family == "flux1-kontext" else 16)  # 64 px: 16 tokens, twice with a reference
    assert results[1]["base"] == "nf4" and results[1]["quantised_linear_layers"] >= results[1]["lora_layers"]


def test_gpu_bench_flux2_flops_are_bounded_by_the_parameter_count():
    """FLUX.2's and FLUX.3's FLOPs from their linear layers: below 2·parameters·tokens + attention (a
    double block's streams each carry their own tokens), and above 75 % of it, for the published 4 B
    and 32 B FLUX.2 and 5.5 B FLUX.3 (whose reference-image blocks stay idle in a text-to-image step)."""
    from bench import gpu_families as g

    for name, variant in (("flux2-klein", "base-4b"), ("flux2-dev", "dev"), ("flux3", "base")):
        family = g.family_of(name)
        cfg = g.transformer_config(family, variant, tiny=False)
        model = family.meta_transformer(cfg)
        idle = model.mode_blocks["image_cond"].parameters() if name == "flux3" else ()
        params = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in idle)
        n, width = 4096 + 512, cfg["num_attention_heads"] * cfg["attention_head_dim"]
        bound = 2 * params * n + 4 * n * n * width * (cfg["num_layers"] + cfg["num_single_layers"])
        assert 0.75 * bound < g.forward_flops(family, cfg, model, 4096, 512, 0) < bound, name
