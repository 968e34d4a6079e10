"""`python -m studio train` as a person runs it: its train.log, the packages it imports, and resume.

Each test drives the real command in a child process on the tiny model (a training process
decides once which quantisation packages the libraries may see).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import make_images, tiny_config

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.engine

# Runs `python -m studio train ARGS` and reports which quantisation packages it imported.
PROBE = ("import json, sys\nfrom studio.__main__ import main\ncode = main(sys.argv[1:])\n"
         "print('IMPORTED ' + json.dumps([m for m in ('bitsandbytes', 'torchao') if sys.modules.get(m)]))\n"
         "sys.exit(code)\n")


def studio_train(config: Path, run_dir: Path, *extra: str, data: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDIO_DATA": str(data)}
    return subprocess.run([sys.executable, "-c", PROBE, "train", str(config), "--tier", "cpu", "--run-dir",
                           str(run_dir), *extra], capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def fingerprint(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def config(tmp_path, tiny_model) -> Path:
    images = make_images(tmp_path / "images", count=2)
    cfg = tiny_config(tiny_model, images, tmp_path / "out", schedule={"max_steps": 2}, save={"every": 1},
                      sample={"prompts": []})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_a_run_from_the_command_line_writes_train_log_and_imports_no_quantisation(config, tmp_path):
    """The README promises train.log in every run folder and the INTERNAL error points to it; and a
    run that quantises nothing neither imports bitsandbytes / torchao nor logs their start-up lines."""
    run_dir = tmp_path / "run"
    out = studio_train(config, run_dir, data=tmp_path / "data")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "IMPORTED []" in out.stdout
    log = (run_dir / "train.log").read_text(encoding="utf-8")
    assert "Training 2 steps on 2 images (cpu), from step 0" in log and "succeeded: " in log
    assert "WARNING [DATASET_CHECK]" in log  # the dataset check's advice (the made-up images are blurry)
    assert "gemm_4bit_forward" not in log and "bitsandbytes" not in log and "torchao" not in log
    assert log.count("Training 2 steps") == 1


def test_resume_refuses_a_changed_shape_and_leaves_the_run_untouched(config, tmp_path):
    """A resume with another rank used to end in a size-mismatch traceback after overwriting the
    run's config.yaml. It is refused at once, with one message, and nothing in the run changes."""
    run_dir, data = tmp_path / "run", tmp_path / "data"
    assert studio_train(config, run_dir, data=data).returncode == 0
    before = fingerprint(run_dir)
    assert "checkpoints/step000001/config.yaml" in before  # the settings the checkpoint was trained with

    out = studio_train(config, run_dir, "--resume", "--set", "lora.rank=8", "--set", "training.seed=7", data=data)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        "Invalid config:",
        f"  Cannot resume {run_dir}: its checkpoint step000001 was trained with other values of settings that "
        "fix the LoRA's shape, the optimiser's state or the data order: lora.rank 4 in the checkpoint, 8 now; "
        "training.seed 42 in the checkpoint, 7 now. Resume with the checkpoint's values, or start a new run "
        "(another run folder, or without --resume). Settings that may change on resume: schedule.max_steps and "
        "warmup_steps, sample.*, save.*, log.*, memory.* (but not num_gpus or device) and the dataset cache "
        "switches."]
    assert fingerprint(run_dir) == before


def test_resume_allows_and_records_safe_changes(config, tmp_path):
    run_dir, data = tmp_path / "run", tmp_path / "data"
    assert studio_train(config, run_dir, data=data).returncode == 0
    out = studio_train(config, run_dir, "--resume", "--set", "schedule.max_steps=3", "--set", "save.every=0",
                       "--set", "sample.prompts=[a photo of sks]", data=data)
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = next(e for e in events(run_dir) if e.get("code") == "RESUMED")
    assert resumed["message"] == ("Resumed from step000001 (step 1). Changed since then: "
                                  "schedule.max_steps: 2 → 3; sample.prompts: [] → ['a photo of sks']; "
                                  "save.every: 1 → 0.")
    assert events(run_dir)[-1] == {**events(run_dir)[-1], "type": "done", "status": "succeeded"}
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["schedule"]["max_steps"] == 3 and saved["save"]["every"] == 0
    assert "Changed since then: schedule.max_steps: 2 → 3" in (run_dir / "train.log").read_text()


def test_data_dir_option_takes_the_caches_away_from_studio_data(tmp_path):
    """--data-dir names where the caches live; $STUDIO_DATA is only the default. The demo model is
    the one committed in studio/demo/model, read in place: nothing is copied into the data folder."""
    images = make_images(tmp_path / "images", count=1)
    cfg = tiny_config("demo", images, tmp_path / "out", schedule={"max_steps": 1}, sample={"prompts": []})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    chosen, env_data = tmp_path / "chosen", tmp_path / "env-data"
    out = studio_train(path, tmp_path / "run", "--data-dir", str(chosen), data=env_data)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (chosen / "models").exists()
    assert any((chosen / "cache" / "latents").rglob("*")) and any((chosen / "cache" / "text").rglob("*"))
    assert not env_data.exists()
