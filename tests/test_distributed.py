"""Data-parallel training on CPU: two real processes (torchrun, gloo) through the studio engine.

One torchrun launch (module fixture) of the real `python -m studio train` path, wrapped by
tests/ddp_helper.py so that each rank also records its batches and its final LoRA state.
Checks: the ranks really form a 2-process gloo group and train a DDP-wrapped model; both
ranks end with identical LoRA weights (and they equal the LoRA file rank 0 saved) although
they trained on different images with different losses; the global batch of every step is
the sum of the two per-rank batches, and an epoch's global batches are exactly the
single-process epoch's batches (every image once).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, make_images, tiny_config

pytestmark = pytest.mark.engine

WORLD, STEPS, IMAGES = 2, 4, 4


@pytest.fixture(scope="module")
def ddp_run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    images = make_images(root / "images", count=IMAGES)
    # One bucket (no aspect buckets) and batch 1: an epoch is IMAGES batches, WORLD per step.
    cfg = tiny_config(tiny_model, images, root / "out", schedule={"max_steps": STEPS, "warmup_steps": 0},
                      dataset={"buckets": False}, training={"batch_size": 1}, log={"every": 1},
                      sample={"prompts": []})
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    run_dir = root / "run"
    env = dict(os.environ, STUDIO_DATA=str(root / "data"), PYTHONPATH=str(REPO),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           str(REPO / "tests" / "ddp_helper.py"), str(config), "--run-dir", str(run_dir), "--tier", "cpu"]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    ranks = [json.loads((run_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return {"run_dir": run_dir, "ranks": ranks, "cfg": cfg, "images": images, "log": proc.stderr}


def _load(path: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(path))


def test_two_gloo_ranks_train_a_ddp_model(ddp_run):
    ranks = ddp_run["ranks"]
    assert [r["process_index"] for r in ranks] == [0, 1]
    for r in ranks:
        assert r["num_processes"] == WORLD
        assert r["distributed_type"].endswith("MULTI_CPU")
        assert r["backend"] == "gloo"
        assert r["model_class"] == "DistributedDataParallel"  # accelerator.prepare wrapped it
    assert [r["is_main_process"] for r in ranks] == [True, False]


def test_ranks_end_with_identical_lora_weights(ddp_run):
    import torch

    run_dir, ranks = ddp_run["run_dir"], ddp_run["ranks"]
    states = [_load(run_dir / f"rank{r}.safetensors") for r in range(WORLD)]
    assert states[0].keys() == states[1].keys() and len(states[0]) > 0
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), f"{key} differs between ranks"
    # Training happened: peft's gaussian init starts every lora_B at zero.
    moved = [k for k, v in states[0].items() if "lora_B" in k and v.abs().max() > 0]
    assert len(moved) == len([k for k in states[0] if "lora_B" in k])
    # ... on different data with different losses, so equality needs the gradient all-reduce.
    losses = [r["losses"] for r in ranks]
    assert len(losses[0]) == STEPS and losses[0] != losses[1]
    # The file rank 0 saved holds the same weights.
    saved = _load(run_dir / "test-lora.safetensors")
    for key, value in states[0].items():
        assert torch.allclose(saved[f"transformer.{key}"].float(), value, atol=1e-6), key


def test_effective_batch_is_the_sum_of_the_rank_batches(ddp_run):
    from studio.config import resolve
    from studio.data.dataset import epoch_batches, load_samples

    ranks, batch = ddp_run["ranks"], ddp_run["cfg"]["training"]["batch_size"]
    cfg = resolve(ddp_run["cfg"], tier="cpu")
    samples = load_samples(cfg)
    per_epoch = len(samples) // (batch * WORLD)  # optimiser steps per epoch
    for step in range(STEPS):
        parts = [r["steps"][step] for r in ranks]
        assert all(len(p) == batch for p in parts)
        union = set(parts[0]) | set(parts[1])
        assert not set(parts[0]) & set(parts[1]), f"step {step}: ranks trained on the same image"
        assert len(union) == WORLD * batch  # the global batch
    for epoch in range(STEPS // per_epoch):
        steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
        seen = sorted(i for s in steps for r in ranks for i in r["steps"][s])
        assert seen == sorted(s.id for s in samples), f"epoch {epoch}: not every image exactly once"
        # The global batches are exactly the single-process epoch's batches, split between ranks.
        single = epoch_batches(samples, batch, cfg.training.seed, epoch, cfg.dataset.repeats)
        assert sorted(r["steps"][s] for s in steps for r in ranks) == sorted(single)


def test_only_the_main_process_reports(ddp_run):
    events = [json.loads(line) for line in (ddp_run["run_dir"] / "metrics.jsonl").read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds.count("start") == 1
    assert [e["step"] for e in events if e["type"] == "step"] == list(range(1, STEPS + 1))
    done = [e for e in events if e["type"] == "done"]
    assert len(done) == 1 and done[0]["status"] == "succeeded" and done[0]["files"]
