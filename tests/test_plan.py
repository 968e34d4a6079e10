"""The plan: what fits, how long, what it costs — from the dataset and the hardware, with sources;
and each run's prediction checked against what happened (plan.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.plan import FLUX1_PARAMS, LORA_WIDTH, find_gpu, make_plan, plan_text, step_flops

ROOT = Path(__file__).resolve().parents[1]


def _photos(folder: Path, n: int, size=(1200, 1100)) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)).resize(
            size, Image.NEAREST).save(folder / f"p{i}.png")
    return folder


def test_lora_sizes_and_parameter_count_are_flux1s():
    from studio.training_utils import TARGET_SETS
    from studio.verify import FLUX1_FULL, meta_transformer

    model = meta_transformer({**FLUX1_FULL, "guidance_embeds": True})
    assert sum(p.numel() for p in model.parameters()) == FLUX1_PARAMS
    for name, suffixes in TARGET_SETS.items():
        width = sum(m.in_features + m.out_features for n, m in model.named_modules()
                    if isinstance(m, torch.nn.Linear) and n.split(".")[0] in ("transformer_blocks",
                                                                               "single_transformer_blocks")
                    and any(".".join(n.split(".")[2:]) == s or n.endswith("." + s) for s in suffixes))
        assert LORA_WIDTH[name] == width, name


def test_what_fits_depends_on_the_card(tmp_path):
    data = _photos(tmp_path / "photos", 14)
    big, mid, small = (make_plan(data, gpu) for gpu in ("NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090",
                                                         "NVIDIA GeForce RTX 3060"))
    assert big.images == 14 and big.median_short_side == 1100 and big.resolution == 1024 and big.steps == 1400
    assert (big.tier, mid.tier, small.tier) == ("24gb", "16gb", "8gb")
    assert [r.fits for r in mid.rows] == [False, True, True, True]
    assert [r.fits for r in small.rows] == [False, False, False, True]  # NF4 at 1024 px needs ~11.6 of 12 GB
    assert all("estimated" in r.time_source and "published" in r.memory_source for r in mid.rows)
    # The same step on a slower card takes longer, in proportion to the published throughput.
    ratio = mid.chosen().seconds_per_step / big.rows[1].seconds_per_step
    assert ratio == pytest.approx(989 / 165, rel=0.01)
    assert make_plan(data, "NVIDIA GeForce RTX 4090", resolution=512).rows[0].seconds_per_step < \
        mid.rows[0].seconds_per_step
    text = plan_text(mid)
    assert "tier 16gb" in text and "base model download" in text and "estimated" in text


def test_no_gpu_plans_the_demo_model_from_measured_figures(tmp_path):
    plan = make_plan(_photos(tmp_path / "photos", 5, size=(400, 300)), None)
    assert (plan.model, plan.tier, plan.resolution, plan.steps) == ("demo", "cpu", 256, 150)
    assert plan.rows[0].time_source.startswith("measured") and plan.rows[0].minutes < 5


def test_unknown_gpu_names_and_flops():
    assert find_gpu("NVIDIA GeForce RTX 4090")[0] == "RTX 4090" and find_gpu("H100 PCIe")[0] == "H100 PCIe"
    assert find_gpu("Some Future Card") is None
    assert step_flops(1024) > 3 * step_flops(512) and step_flops(512, checkpointing=False) < step_flops(512)


def test_cli_plan(tmp_path):
    data = _photos(tmp_path / "photos", 3, size=(800, 800))
    out = subprocess.run([sys.executable, "-m", "studio", "plan", str(data), "--gpu", "RTX 4090", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["resolution"] == 768 and plan["tier"] == "16gb" and len(plan["rows"]) == 4


def test_a_run_records_its_prediction_and_what_happened(tmp_path):
    from studio.models import build_demo_model

    model = build_demo_model(tmp_path / "model", size="tiny")
    data = _photos(tmp_path / "data", 2, size=(256, 256))
    for p in data.iterdir():
        p.with_suffix(".txt").write_text("a photo of sks", encoding="utf-8")
    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{base: {model}}}\ndataset: {{path: {data}, resolution: 64}}\n"
                      "schedule: {max_steps: 4}\nsample: {every: 0, at_start: false}\nsave: {every: 0}\n",
                      encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "studio", "train", str(config), "--tier", "cpu", "--run-dir", str(run)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    plan = json.loads((run / "plan.json").read_text())
    assert plan["predicted"]["tier"] == "cpu" and plan["predicted"]["time_source"].startswith("measured")
    assert plan["actual"]["seconds_per_step"] > 0 and plan["actual"]["peak_gib"] > 0.1
    assert set(plan["error_percent"]) == {"seconds_per_step", "peak_gib"}
    assert "Plan vs this run" in (run / "train.log").read_text()


def test_the_train_tab_plan_speaks_the_page_language(tmp_path):
    from studio.ui.plan_view import plan_markdown

    data = _photos(tmp_path / "photos", 4, size=(900, 800))
    en = plan_markdown(data, ("NVIDIA GeForce RTX 4090", 24.0), "en")
    assert "What fits: RTX 4090" in en and "tier 16gb" in en and "| 24gb | no | 28.7 |" in en
    assert "estimated from the model's FLOPs" in en
    zh = plan_markdown(data, None, "zh-CN")
    assert "没有显卡" in zh and "在 2 核 CPU 上实测" in zh and "| cpu | 是 |" in zh
    assert plan_markdown(None, None, "en") == "" and plan_markdown(tmp_path / "missing", None, "en") == ""


def test_cli_plan_refuses_what_it_cannot_plan(tmp_path):
    def plan(*args):
        return subprocess.run([sys.executable, "-m", "studio", "plan", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)

    missing = plan(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "is not a folder" in missing.stderr and not missing.stdout
    (tmp_path / "empty").mkdir()
    empty = plan(str(tmp_path / "empty"), "--gpu", "RTX 4090")
    assert empty.returncode == 2 and "No readable photos" in empty.stderr
    data = _photos(tmp_path / "photos", 2, size=(600, 600))
    unknown = plan(str(data), "--gpu", "Some Future Card")
    assert unknown.returncode == 2 and "--gpu-gb" in unknown.stderr and "RTX 4090" in unknown.stderr
    known_memory = plan(str(data), "--gpu", "Some Future Card", "--gpu-gb", "48")
    assert known_memory.returncode == 0 and "tier 24gb" in known_memory.stdout
