"""The report card: checkpoints x strengths at fixed seeds, and promoting a checkpoint to final.

A real tiny run through `python -m studio train` (4 steps, a checkpoint every 2, all kept), then
`python -m studio report-card` and `--promote`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
STRENGTHS = 5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from studio.models import build_demo_model

    tmp = tmp_path_factory.mktemp("card")
    model = build_demo_model(tmp / "model", size="tiny")
    data = tmp / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((256, 256)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text("a photo of sks", encoding="utf-8")
    config = tmp / "c.yaml"
    config.write_text(f"model: {{base: {model}}}\ndataset: {{path: {data}, resolution: 64}}\n"
                      "schedule: {max_steps: 4, warmup_steps: 0}\noptimizer: {lr: 0.01}\n"
                      "sample: {every: 0, at_start: false, steps: 2, width: 64, height: 64, prompts: [a photo of sks]}\n"
                      "save: {every: 2, keep_last: 0, run_name: card}\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "studio", "train", str(config), "--tier", "cpu", "--run-dir",
                          str(tmp / "run")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp / "run"


def test_a_grid_of_checkpoints_and_strengths(run):
    out = subprocess.run([sys.executable, "-m", "studio", "report-card", str(run)], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((run / "report" / "report.json").read_text())
    assert [r["label"] for r in report["rows"]] == ["step 2", "final"]  # the last step is the final LoRA
    assert report["strengths"] == [0.0, 0.5, 0.75, 1.0, 1.25] and report["seeds"] == [1234]
    with Image.open(run / "report" / report["grids"][0]) as grid:
        assert grid.size == (90 + 64 * STRENGTHS, 22 + 64 * 2)
    cells = run / "report" / "cells"
    base = np.asarray(Image.open(cells / "p0_base.png"), dtype=float)
    # The LoRA changes the picture, and its strength changes how much.
    full = np.asarray(Image.open(cells / "p0_r1_s3.png"), dtype=float)
    half = np.asarray(Image.open(cells / "p0_r1_s1.png"), dtype=float)
    assert np.abs(full - base).mean() > 0.5 and np.abs(full - half).mean() > 0.1
    assert not (run / "report" / ".rows").exists()
    assert f"{1 + 2 * 4}/{1 + 2 * 4} pictures" in out.stdout


def test_the_worker_draws_the_report_card_as_a_job(run, tmp_path):
    """The real child (studio.jobs.report) through the real worker: progress per picture, the grids
    in the run's report/ folder, the Results tab's view of them."""
    import shutil

    import yaml

    from studio.jobs import JobStore
    from studio.ui import card_view
    from studio.worker import Worker

    data = tmp_path / "data"
    store = JobStore(data)
    copy = data / "runs" / "1-card"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("report"))
    source = store.create_job("card", yaml.safe_load((copy / "config.yaml").read_text()), run_dir=str(copy))
    store.claim_next("w")
    store.finish(source, "succeeded", exit_code=0)
    card_view.queue_report(data, source, "en")
    [job] = [j for j in store.jobs() if j.kind == "report"]
    assert Worker(data, poll_interval=0.05).run_once() == job.id
    done = store.job(job.id)
    assert done.status == "succeeded", (done.error_message, (Path(done.run_dir) / "train.log").read_text()[-3000:])
    assert done.files == ["report/grid_p0.png"] and (done.step, done.max_steps) == (9, 9)
    steps = [e for e in store.events(job.id, types=["step"])]
    assert [e["step"] for e in steps] == list(range(1, 10)) and all(e["it_s"] > 0 for e in steps[1:])
    with Image.open(copy / "report" / "grid_p0.png") as grid:
        assert grid.size == (90 + 64 * STRENGTHS, 22 + 64 * 2)
    panel = card_view.card_panel(data, source, "en")
    assert [Path(p).name for p, _ in panel["grids"]] == ["grid_p0.png"] and "Picture 9 / 9" in panel["progress"]

    # Promote from the Results tab: both files rewritten and verified, the card says which step.
    from studio.ui import runs
    from studio.ui.handlers import UserError

    before = (copy / "card.safetensors").read_bytes()
    with pytest.raises(UserError, match="Tick the box"):
        card_view.promote_confirmed(data, source, "2", False, "en")
    assert (copy / "card.safetensors").read_bytes() == before and not (copy / "previous-final").exists()
    assert card_view.promote_confirmed(data, source, "2", True, "zh-CN").startswith("第 2 步现在是这次训练的最终 LoRA")
    assert (copy / "card.safetensors").read_bytes() != before
    view = runs.result_view(data, source, "en")
    assert "❌" not in view["card"] and view["card"].count("✅") >= 5
    assert "**Promoted:** the final LoRA files are the checkpoint of step 2" in view["card"]
    assert "**Trained for** 2 steps" in view["card"]
    assert {Path(f).name for f in view["files"]} >= {"card.safetensors", "card-comfyui.safetensors", "README.md"}
    readme = (copy / "README.md").read_text()
    assert "| Steps | 2 |" in readme and "![a photo of sks](report/grid_p0.png)" in readme


def test_promote_a_checkpoint(run):
    from studio.lora_files import delta_weights
    from studio.training_utils import read_checkpoint
    from studio.verify import verify_run

    before = (run / "card.safetensors").read_bytes()
    out = subprocess.run([sys.executable, "-m", "studio", "report-card", str(run), "--promote", "2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "previous-final" / "card.safetensors").read_bytes() == before
    assert all(c.ok for c in verify_run(run))
    lora, _ = read_checkpoint(run / "checkpoints" / "step000002")
    deltas = delta_weights(run / "card.safetensors")
    name = "transformer_blocks.0.attn.to_q"
    a, b = lora[f"transformer.{name}.lora_A.weight"], lora[f"transformer.{name}.lora_B.weight"]
    torch.testing.assert_close(deltas[name], (b @ a) * (16 / 16), atol=1e-6, rtol=1e-4)
    bad = subprocess.run([sys.executable, "-m", "studio", "report-card", str(run), "--promote", "3"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1 and "No checkpoint of step 3" in bad.stderr and "kept: 2." in bad.stderr


def test_the_results_tab_view_of_the_report_card(run):
    """Runs after the grid and the promotion above: grids with their prompts, disk use, steps."""
    from studio.ui.card_view import card_view, promote

    view = card_view({"run_dir": str(run), "status": "succeeded"}, "zh-CN")
    assert [Path(p).name for p, _ in view["grids"]] == ["grid_p0.png"] and view["grids"][0][1] == "a photo of sks"
    assert view["steps"] == [2] and "保留的检查点：1 个" in view["summary"] and "最终" in view["summary"]
    assert "同一个种子" in view["summary"]
    message = promote({"run_dir": str(run), "status": "succeeded"}, 2, "en")
    assert message.startswith("Step 2 is now this run's final LoRA")
    from studio.ui.handlers import UserError

    with pytest.raises(UserError, match="Step 7 was not promoted: No checkpoint of step 7"):
        promote({"run_dir": str(run), "status": "succeeded"}, 7, "en")


def test_the_grids_go_into_the_model_card_and_the_upload(run):
    from studio.publish import _report_grids, model_card

    card = model_card(run)
    assert "## Report card" in card and "![a photo of sks](report/grid_p0.png)" in card
    assert _report_grids(run) == [("report/grid_p0.png", "a photo of sks")]


def test_a_base_model_that_cannot_load_is_a_clear_message(run, tmp_path):
    import shutil

    import yaml

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["model"]["base"] = str(tmp_path / "gone")
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run([sys.executable, "-m", "studio", "report-card", str(copy)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr
