"""Faults with the real worker and the real engine on the tiny model (HARDENING_NOTES §3, §5).

NaN loss, a full disk during a checkpoint, out of memory, and a bounded loop of kill -9 of
the worker or the training child. Faults are injected through the engine's hooks: the worker
runs tests/faulty_trainer.py, which reads each run's fault from a file when the run starts.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import faulty_trainer
from conftest import make_images, tiny_config
from studio.config import resolve
from studio.jobs import JobStore
from studio.lora_files import validate_lora_file
from studio.training_utils import list_checkpoints, read_checkpoint
from studio.ui import runs
from studio.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.engine
FINAL = ("succeeded", "failed", "cancelled", "interrupted")


def job_config(model: Path, images: Path, tmp: Path, run_name: str = "test-lora", **sections) -> dict:
    sections.setdefault("sample", {})
    sections["save"] = {"run_name": run_name, **sections.get("save", {})}
    sections["sample"] = {"prompts": [], "every": 0, "at_start": False, **sections["sample"]}
    return resolve(tiny_config(model, images, tmp / "unused-out", **sections), tier="cpu").to_dict()


def finite_checkpoint(path: Path) -> None:
    lora, state = read_checkpoint(path)
    assert lora and all(torch.isfinite(t).all() for t in lora.values()), path
    assert state["step"] == int(path.name.removeprefix("step"))


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def setup(tmp_path, tiny_model, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv("STUDIO_DATA", str(data))
    images = make_images(tmp_path / "images", count=2)
    return data, images, tmp_path, tiny_model


def test_fault_injection_lives_in_the_tests_not_in_studio():
    """The engine takes faults only through its hooks: no environment switch, no fault argument."""
    import inspect

    from studio import training_utils, worker

    for path in (ROOT / "studio").rglob("*.py"):
        assert "STUDIO_FAULT" not in path.read_text(encoding="utf-8"), path
    assert "fault" not in inspect.signature(training_utils.write_checkpoint).parameters
    assert "ModuleNotFoundError" not in inspect.getsource(worker.validate_lora)  # lora_files is always there


def set_faults(path: Path, **faults: str) -> None:
    """Faults by run name, for runs that start from now on (tests/faulty_trainer.py)."""
    path.write_text(json.dumps(faults))


def test_nan_then_disk_full_then_resume(setup):
    """NaN from step 3: failed with NAN_LOSS and advice, only finite checkpoints on disk.
    Resumed with the disk 'full': SAVE_FAILED, the step-2 checkpoint intact. Resumed again: done."""
    data, images, tmp, model = setup
    store = JobStore(data)
    job_id = store.create_job("faulty", job_config(model, images, tmp, "faulty", schedule={"max_steps": 6},
                                                   save={"every": 1, "keep_last": 50}))
    faults = tmp / "faults.json"
    worker = Worker(data, faulty_trainer.command(faults), poll_interval=0.1)

    set_faults(faults, faulty="nan@2")  # the loss is NaN from the third step on
    worker.run_once()
    job = store.get_job(job_id)
    run_dir = Path(job["run_dir"])
    assert job["status"] == "failed" and job["error_code"] == "NAN_LOSS", (job["error_message"], runs.log_tail(job))
    assert "step 3" in job["error_message"] and "learning rate" in job["advice"].lower()
    assert job["step"] <= 3 and job["last_checkpoint"] == "checkpoints/step000002"
    saved = list_checkpoints(run_dir / "checkpoints")
    assert [p.name for p in saved] == ["step000001", "step000002"]
    for path in saved:
        finite_checkpoint(path)
    shown = runs.job_view(data, job_id)["status"]
    assert job["error_message"] in shown and job["advice"] in shown

    set_faults(faults, faulty="save_error")  # ENOSPC on every checkpoint write
    store.resume(job_id)
    worker.run_once()
    job = store.get_job(job_id)
    assert job["status"] == "failed" and job["error_code"] == "SAVE_FAILED", job["error_message"]
    assert "No space left" in job["error_message"] and "previous" in job["advice"]
    assert store.events(job_id, types=["start"])[-1]["start_step"] == 2  # the step-2 checkpoint loaded
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step000001", "step000002"]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]
    finite_checkpoint(run_dir / "checkpoints" / "step000002")
    assert job["last_checkpoint"] == "checkpoints/step000002"

    set_faults(faults)
    store.resume(job_id)
    worker.run_once()
    job = store.get_job(job_id)
    assert job["status"] == "succeeded", job["error_message"]
    assert store.events(job_id, types=["start"])[-1]["start_step"] == 2
    assert len(job["files"]) == 2
    for name in job["files"]:
        validate_lora_file(run_dir / name)


def test_oom_fails_with_tier_advice_and_the_worker_runs_the_next_job(setup):
    data, images, tmp, model = setup
    store = JobStore(data)
    big = job_config(model, images, tmp, "too-big", schedule={"max_steps": 3})
    big["memory"].update(tier="16gb", device="cpu")  # the advice depends on the tier the job ran at
    oom = store.create_job("too big", big)
    nxt = store.create_job("next", job_config(model, images, tmp, "next", schedule={"max_steps": 2}))
    faults = tmp / "faults.json"
    set_faults(faults, **{"too-big": "oom@1"})  # the next job, run by the same worker, has no fault
    worker = Worker(data, faulty_trainer.command(faults), poll_interval=0.1)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        wait_for(lambda: store.get_job(nxt)["status"] in FINAL, 240, "the next job to finish")
        assert thread.is_alive(), "the worker died with the OOM"
    finally:
        worker.stop()
        thread.join(30)
    job = store.get_job(oom)
    assert job["status"] == "failed" and job["exit_code"] == 5 and job["error_code"] == "OUT_OF_MEMORY"
    assert "Out of GPU memory" in job["error_message"] and "'12gb'" in job["advice"]
    shown = runs.job_view(data, oom)["status"]
    assert "12gb" in shown
    after = store.get_job(nxt)
    assert after["status"] == "succeeded", after["error_message"]
    for name in after["files"]:
        validate_lora_file(Path(after["run_dir"]) / name)


# --------------------------------------------------------------------------- kill loop


class WorkerProcess:
    def __init__(self, data: Path, log: Path):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDIO_DATA": str(data), "STUDIO_GRACE_SECONDS": "3"}
        self.log = open(log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "studio", "worker", "--data-dir", str(data),
                                      "--poll-interval", "0.1"], env=env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def holds_lock(self, data: Path) -> bool:
        try:
            return (data / "worker.lock").read_text().split()[0] == str(self.proc.pid)
        except (OSError, IndexError):
            return False

    def kill(self, sig=signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(60)
        self.log.close()


def _kill_group(pid: int | None) -> None:
    if pid:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def test_random_kill_loop_keeps_the_store_sound_and_jobs_resumable(setup):
    data, images, tmp, model = setup
    rng = random.Random(7)
    store = JobStore(data)
    config = job_config(model, images, tmp, schedule={"max_steps": 10}, save={"every": 1, "keep_last": 2})
    jobs = [store.create_job("victim", config)]
    log = tmp / "worker.log"
    worker = WorkerProcess(data, log)
    kills, started = [], time.monotonic()
    try:
        for iteration in range(12):
            if iteration >= 3 and time.monotonic() - started > 90:
                break
            # A job to hit: resume the one we hurt last, or queue a fresh one.
            queued = store.list_jobs(["queued", "running"])
            if not queued:
                resumable = [j for j in store.list_jobs(["interrupted", "failed"]) if j["last_checkpoint"]]
                if resumable:
                    store.resume(resumable[0]["id"])
                else:
                    jobs.append(store.create_job("victim", config))
            running = wait_for(lambda: next((j for j in store.list_jobs(["running"]) if j["pid"]), None), 60,
                               "a running job")
            if rng.random() < 0.75:  # mostly after a checkpoint, sometimes while it still loads
                wait_for(lambda: store.get_job(running["id"])["step"] >= 1 or
                         store.get_job(running["id"])["status"] in FINAL, 90, "a training step")
            time.sleep(rng.uniform(0.0, 1.5))
            job = store.get_job(running["id"])
            victim = rng.choice(["worker", "child"])
            if victim == "child" and job["pid"]:
                os.kill(job["pid"], signal.SIGKILL)
                wait_for(lambda: store.get_job(job["id"])["status"] in FINAL, 30, "the worker to record the kill")
                worker.kill(signal.SIGTERM)  # idle now: a clean stop
            else:
                worker.kill(signal.SIGKILL)  # the child lives on as an orphan until reconciled
            kills.append((victim, job["step"]))
            worker = WorkerProcess(data, log)
            wait_for(lambda: worker.holds_lock(data) and not store.list_jobs(["running", "stopping"]), 60,
                     "the restarted worker to reconcile (a job stuck in running/stopping?)")
            assert store.integrity_check() == "ok"
            for j in store.list_jobs():
                assert j["status"] in FINAL, j

        # SIGTERM (what a platform sends before SIGKILL): the job is interrupted and resumable.
        for j in store.list_jobs(["interrupted", "failed"]):
            if j["last_checkpoint"]:
                store.resume(j["id"])
                break
        else:
            jobs.append(store.create_job("victim", config))
        running = wait_for(lambda: next((j for j in store.list_jobs(["running"])
                                         if store.get_job(j["id"])["step"] >= 1), None), 90, "a training step")
        worker.kill(signal.SIGTERM)
        job = store.get_job(running["id"])
        assert job["status"] == "interrupted" and job["last_checkpoint"], job
        assert "resume" in job["advice"]

        # Resume everything that was hurt; every job must finish with valid LoRA files.
        for j in store.list_jobs(["interrupted", "failed", "cancelled"]):
            if j["last_checkpoint"]:
                store.resume(j["id"])
            else:
                store.rerun_with(j["id"], j["config"])
        worker = WorkerProcess(data, log)
        wait_for(lambda: all(j["status"] in FINAL for j in store.list_jobs()), 240, "the resumed jobs")
        assert store.integrity_check() == "ok"
        for j in store.list_jobs():
            if j["status"] != "succeeded" and store.list_jobs() and any(
                    k["parent_job_id"] == j["id"] and k["status"] == "succeeded" for k in store.list_jobs()):
                continue  # re-run (it had no checkpoint) under a new job that succeeded
            assert j["status"] == "succeeded", (j["id"], j["status"], j["error_message"], log.read_text()[-2000:])
            assert len(j["files"]) == 2
            for name in j["files"]:
                validate_lora_file(Path(j["run_dir"]) / name)
    finally:
        worker.kill(signal.SIGTERM) if worker.proc.poll() is None else None
        for j in store.list_jobs():
            _kill_group(j["pid"])
    assert len(kills) >= 3, kills
    assert {"worker", "child"} <= {v for v, _ in kills} or len(kills) < 4, kills
