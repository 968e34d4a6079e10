"""The worker's process management, driven with tests/fake_trainer.py (fast, no torch).

Every test here runs real child processes and real signals; only the trainer is a stand-in
that honours the docs/architecture.md contract.
"""

from __future__ import annotations

import argparse
import dataclasses
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import fake_trainer
from studio.jobs import JobStore
from studio.worker import Worker, WorkerAlreadyRunning, add_worker_command, ensure_worker, main, try_lock

REPO = Path(__file__).resolve().parent.parent
CANARY = "hf_" + "WorkerCanary0123456789abcdef"
# How the fake trainer behaves in each run (by run name): test-only settings stay out of the config.
BEHAVIOURS = Path(tempfile.mkdtemp(prefix="studio-fake-trainer-"))
atexit.register(shutil.rmtree, BEHAVIOURS, True)
FAKE_COMMAND = fake_trainer.command(BEHAVIOURS)
# A worker in its own process, so that tests can kill -9 or SIGTERM it.
WORKER_SCRIPT = (
    "import sys; from studio.worker import Worker; "
    "sys.exit(Worker(sys.argv[1], train_command=sys.argv[3:], poll_interval=0.02, "
    "grace_seconds=float(sys.argv[2])).run_forever())"
)


def fake_config(tier="24gb", **fake):
    """A valid studio config whose run name selects the fake trainer's behaviour `fake`."""
    name = fake_trainer.behaviour(BEHAVIOURS, **{"steps": 10, "step_time": 0.02, **fake})
    return {"memory": {"tier": tier}, "save": {"run_name": name}}


def make_worker(data_dir, **kwargs):
    kwargs.setdefault("grace_seconds", 5.0)
    return Worker(data_dir, train_command=FAKE_COMMAND, poll_interval=0.02, **kwargs)


def wait_for(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def in_background(fn):
    """Run `fn` in a thread while the test drives the worker on the main thread."""
    errors = []

    def target():
        try:
            fn()
        except BaseException as exc:  # surfaced by join()
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()

    def join():
        thread.join(30)
        if errors:
            raise errors[0]
    return join


def running_at_step(store, job_id, step):
    job = store.get_job(job_id)
    return job["status"] in ("running", "stopping") and job["pid"] and job["step"] >= step


def final_lora(job):
    return load_file(str(Path(job["run_dir"]) / "fake.safetensors"))


def start_worker_process(data_dir, grace=5.0):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, str(data_dir), str(grace), *FAKE_COMMAND],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


# --------------------------------------------------------------------------- normal runs


def test_jobs_run_in_queue_order_one_at_a_time(tmp_path):
    store = JobStore(tmp_path)
    first = store.create_job("first", fake_config())
    second = store.create_job("second", fake_config())
    worker = make_worker(tmp_path)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    most_running, deadline = 0, time.monotonic() + 30
    while not all(store.get_job(i)["status"] == "succeeded" for i in (first, second)):
        assert thread.is_alive() and time.monotonic() < deadline, [j["status"] for j in store.list_jobs()]
        most_running = max(most_running, len(store.list_jobs(["running", "stopping"])))
        assert all(store.get_job(i)["status"] in ("queued", "running", "succeeded") for i in (first, second))
        time.sleep(0.01)
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()
    a, b = store.get_job(first), store.get_job(second)
    assert most_running == 1
    assert a["finished_at"] <= b["started_at"]
    for job in (a, b):
        assert job["exit_code"] == 0 and job["error_message"] is None
        assert job["files"] == ["fake.safetensors", "fake-comfyui.safetensors"]
        assert (job["step"], job["max_steps"]) == (10, 10)
        assert Path(job["run_dir"], "config.yaml").exists() and Path(job["run_dir"], "train.log").exists()
    types = [e["type"] for e in store.events(first)]
    assert types[0] == "start" and types[-1] == "done" and types.count("step") == 10


@pytest.mark.parametrize("fake, message", [
    ({"fail_at_step": 3, "exit_code": 1, "error_message": "optimizer.lr: -1 is not usable"},
     "optimizer.lr: -1 is not usable"),
    ({"fail_at_step": 3, "exit_code": 2, "no_error_event": True, "error_message": "bad key lora.rnk"},
     "RuntimeError: bad key lora.rnk"),  # no error event: the tail of train.log is quoted
    ({"fail_at_step": 3, "exit_code": 7, "error_message": "weird"}, "weird"),
])
def test_failing_config_is_failed_with_its_message(tmp_path, fake, message):
    store = JobStore(tmp_path)
    job_id = store.create_job("broken", fake_config(**fake))
    make_worker(tmp_path).run_once()
    job = store.get_job(job_id)
    assert job["status"] == "failed" and job["exit_code"] == fake["exit_code"]
    assert message in job["error_message"]
    assert "success" not in job["error_message"].lower()


@pytest.mark.parametrize("fake, problem", [
    ({"skip_files": True}, "only 0 of the 2 LoRA files"),
    ({"bad_files": True}, "holds no LoRA tensors"),
])
def test_exit_0_without_valid_lora_files_is_failed(tmp_path, fake, problem):
    store = JobStore(tmp_path)
    job_id = store.create_job("no files", fake_config(**fake))
    make_worker(tmp_path).run_once()
    job = store.get_job(job_id)
    assert job["status"] == "failed" and job["exit_code"] == 0
    assert job["error_code"] == "INVALID_OUTPUT" and problem in job["error_message"]


def test_sample_and_save_requests_become_control_files(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("controls", fake_config(steps=40, checkpoint_every=0))

    def ask():
        wait_for(lambda: running_at_step(store, job_id, 2))
        store.request_sample(job_id)
        store.request_save(job_id)

    join = in_background(ask)
    make_worker(tmp_path).run_once()
    join()
    job = store.get_job(job_id)
    assert job["status"] == "succeeded"
    assert len(store.events(job_id, types=["sample"])) == 1
    assert len(store.events(job_id, types=["checkpoint"])) == 1 and job["last_checkpoint"]
    assert not any(Path(job["run_dir"], "control").iterdir())


# --------------------------------------------------------------------------- OOM


def test_oom_names_the_next_tier_and_retries_there_from_the_checkpoint(tmp_path):
    store = JobStore(tmp_path)
    config = fake_config(fail_at_step=7, fail_on_tier="24gb", exit_code=5, error_code="oom",
                         error_message="CUDA out of memory. Tried to allocate 2.00 GiB")
    config["memory"]["auto_retry_lower_tier"] = True
    job_id = store.create_job("big", config)
    worker = make_worker(tmp_path)
    worker.run_once()
    job = store.get_job(job_id)
    assert job["status"] == "failed" and job["error_code"] == "OUT_OF_MEMORY" and job["exit_code"] == 5
    assert "CUDA out of memory" in job["error_message"] and "'16gb'" in job["advice"]

    [retry] = store.list_jobs(["queued"])
    assert retry["parent_job_id"] == job_id and retry["retry_tier"] and retry["resume"]
    assert retry["config"]["memory"]["tier"] == "16gb"
    worker.run_once()
    retry = store.get_job(retry["id"])
    assert retry["status"] == "succeeded"
    assert store.events(retry["id"], types=["start"])[0]["start_step"] == 5  # from the parent's checkpoint


def test_oom_without_opt_in_or_lower_tier_does_not_retry(tmp_path):
    store = JobStore(tmp_path)
    plain = store.create_job("plain", fake_config(fail_at_step=2, exit_code=5))
    lowest = store.create_job("lowest", {**fake_config(tier="8gb", fail_at_step=2, exit_code=5),
                                         "memory": {"tier": "8gb", "auto_retry_lower_tier": True}})
    worker = make_worker(tmp_path)
    worker.run_once()
    worker.run_once()
    assert "'16gb'" in store.get_job(plain)["advice"]
    assert "no lower tier" in store.get_job(lowest)["advice"]
    assert store.list_jobs(["queued"]) == []


# --------------------------------------------------------------------------- cancel


def test_cancel_is_graceful_and_resumable(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("cancel me", fake_config(steps=60, checkpoint_every=0))
    join = in_background(lambda: (wait_for(lambda: running_at_step(store, job_id, 3)), store.request_cancel(job_id)))
    worker = make_worker(tmp_path)
    worker.run_once()
    join()
    job = store.get_job(job_id)
    assert job["status"] == "cancelled" and job["exit_code"] == 3 and job["last_checkpoint"]
    store.resume(job_id)
    worker.run_once()
    assert store.get_job(job_id)["status"] == "succeeded"


def test_cancel_is_forced_after_the_timeout(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("stubborn", fake_config(steps=100_000, ignore_cancel=True, ignore_sigterm=True))
    join = in_background(lambda: (wait_for(lambda: running_at_step(store, job_id, 2)), store.request_cancel(job_id)))
    started = time.monotonic()
    make_worker(tmp_path, cancel_timeout=0.3, grace_seconds=0.3).run_once()
    join()
    job = store.get_job(job_id)
    assert time.monotonic() - started < 15
    assert job["status"] == "cancelled" and job["exit_code"] == -signal.SIGKILL
    assert "forced" in job["error_message"]


# --------------------------------------------------------------------------- crashes


def test_kill_9_of_the_child_fails_with_a_message_and_resume_matches_an_uninterrupted_run(tmp_path):
    store = JobStore(tmp_path)
    config = fake_config(steps=40, step_time=0.03)
    reference = store.create_job("reference", config)
    victim = store.create_job("victim", config)
    worker = make_worker(tmp_path)
    worker.run_once()

    def kill_child():
        wait_for(lambda: running_at_step(store, victim, 12))
        os.kill(store.get_job(victim)["pid"], signal.SIGKILL)

    join = in_background(kill_child)
    worker.run_once()
    join()
    job = store.get_job(victim)
    assert job["status"] == "failed" and job["error_code"] == "KILLED"
    assert "killed by SIGKILL" in job["error_message"] and job["last_checkpoint"]
    store.resume(victim)
    worker.run_once()
    assert store.get_job(victim)["status"] == "succeeded"
    np.testing.assert_array_equal(final_lora(store.get_job(victim))["transformer.single_transformer_blocks.0.proj_out.lora_A.weight"],
                                  final_lora(store.get_job(reference))["transformer.single_transformer_blocks.0.proj_out.lora_A.weight"])


def test_kill_9_of_the_worker_is_reconciled_on_restart_and_resumes(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("orphan", fake_config(steps=60, step_time=0.03))
    proc = start_worker_process(tmp_path)
    try:
        wait_for(lambda: running_at_step(store, job_id, 8), what="the job to run")
    finally:
        proc.kill()
        proc.wait()
    child_pid = store.get_job(job_id)["pid"]
    assert store.get_job(job_id)["status"] == "running"  # nobody has told the store yet

    worker = make_worker(tmp_path)
    worker.acquire()  # reconciles: the orphaned child is stopped (it checkpoints) and noted
    job = store.get_job(job_id)
    assert job["status"] == "interrupted" and job["last_checkpoint"]
    assert "worker restarted" in job["error_message"] and job["error_code"] == "WORKER_RESTARTED"
    wait_for(lambda: not Path(f"/proc/{child_pid}/cmdline").exists()
             or not Path(f"/proc/{child_pid}/cmdline").read_bytes())
    store.resume(job_id)
    worker.run_once()
    job = store.get_job(job_id)
    assert job["status"] == "succeeded" and job["step"] == 60
    assert store.events(job_id, types=["start"])[-1]["start_step"] > 0


def test_reconcile_marks_gone_processes_interrupted_or_cancelled(tmp_path):
    store = JobStore(tmp_path)
    gone = subprocess.Popen(["true"])
    gone.wait()
    interrupted = store.create_job("was running", fake_config())
    stopping = store.create_job("was stopping", fake_config())
    for job_id in (interrupted, stopping):
        store.claim_next("dead-worker")
        store.set_pid(job_id, gone.pid)
    store.request_cancel(stopping)
    make_worker(tmp_path).acquire()
    assert store.get_job(interrupted)["status"] == "interrupted"
    assert "process was gone" in store.get_job(interrupted)["error_message"]
    assert store.get_job(stopping)["status"] == "cancelled"


def sigterm_worker_at(tmp_path, store, job_id, step, **worker_kwargs) -> dict:
    """Run a worker process until the job reaches `step`, SIGTERM the worker, return the job."""
    proc = start_worker_process(tmp_path, **worker_kwargs)
    try:
        wait_for(lambda: running_at_step(store, job_id, step), what="the job to run")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    return store.get_job(job_id)


def test_sigterm_to_the_worker_interrupts_the_job_which_then_resumes(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("restart me", fake_config(steps=60))
    job = sigterm_worker_at(tmp_path, store, job_id, 5)
    assert job["status"] == "interrupted" and job["exit_code"] == 4
    assert store.events(job_id, types=["done"])[-1]["status"] == "interrupted"  # the child got SIGTERM
    assert job["last_checkpoint"] and "shutting down" in job["error_message"]
    assert job["error_code"] == "WORKER_SHUTDOWN"
    store.resume(job_id)
    make_worker(tmp_path).run_once()
    assert store.get_job(job_id)["status"] == "succeeded"


def test_sigterm_to_the_worker_kills_a_child_that_ignores_it_after_the_grace_period(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("deaf", fake_config(steps=100_000, ignore_sigterm=True))
    job = sigterm_worker_at(tmp_path, store, job_id, 2, grace=0.5)
    assert job["status"] == "interrupted" and job["exit_code"] == -signal.SIGKILL
    assert "killed after the grace period" in job["error_message"]


# --------------------------------------------------------------------------- one worker per folder


def test_a_second_worker_on_the_same_folder_is_refused(tmp_path, capsys):
    first = make_worker(tmp_path)
    first.acquire()
    with pytest.raises(WorkerAlreadyRunning, match=f"pid {os.getpid()}.*already serves"):
        make_worker(tmp_path).run_once()
    assert main(["--data-dir", str(tmp_path)]) == 1
    assert "already serves" in capsys.readouterr().err
    assert ensure_worker(tmp_path) is None
    first.release()
    second = make_worker(tmp_path)
    second.acquire()
    second.release()


def test_ensure_worker_starts_one_in_the_background(tmp_path):
    proc = ensure_worker(tmp_path)
    assert proc is not None
    try:
        def lock_is_held():
            fd = try_lock(tmp_path)
            if fd is not None:
                os.close(fd)
            return fd is None
        wait_for(lock_is_held, what="the background worker to take the lock")
        assert ensure_worker(tmp_path) is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        proc.kill()


def test_worker_subcommand_registers_on_the_main_cli(tmp_path):
    parser = argparse.ArgumentParser(prog="studio")
    add_worker_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["worker", "--data-dir", str(tmp_path), "--gpus", "0,1"])
    assert args.gpus == "0,1" and callable(args.func)


# --------------------------------------------------------------------------- secrets and commands


def test_commands_carry_no_secrets_and_launch_multi_gpu_through_accelerate(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    store = JobStore(tmp_path)
    job_id = store.create_job("multi", {"hf_token": CANARY, "memory": {"tier": "24gb", "num_gpus": 2}})
    job = store.claim_next("w")
    worker = Worker(tmp_path, gpus=[0, 1])
    command = worker.command_for(job, Path("/r/config.yaml"), Path("/r"))
    assert command == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
                       "--num_processes", "2",
                       "-m", "studio", "train", "/r/config.yaml", "--run-dir", "/r", "--data-dir", str(tmp_path)]
    job = dataclasses.replace(job, resume=True, config=dataclasses.replace(
        job.config, memory=dataclasses.replace(job.config.memory, num_gpus=1)))
    assert worker.command_for(job, Path("/r/config.yaml"), Path("/r")) == \
        [sys.executable, "-m", "studio", "train", "/r/config.yaml", "--run-dir", "/r", "--data-dir", str(tmp_path),
         "--resume"]
    monkeypatch.setenv("STUDIO_DATA", "/somewhere/else")
    env = worker.child_env()
    assert env["HF_TOKEN"] == CANARY and env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert "STUDIO_DATA" not in env  # the data folder travels as --data-dir only
    assert CANARY not in repr(job)
    store.finish(job_id, "failed")


def test_canary_token_in_config_and_error_never_reaches_db_or_run_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", CANARY)
    store = JobStore(tmp_path)
    config = fake_config(fail_at_step=2, exit_code=1, error_message=f"401 Unauthorized for token {CANARY}")
    config["hf_token"] = CANARY
    config["dataset"] = {"trigger_word": f"made with {CANARY}"}
    job_id = store.create_job("secret", config)
    make_worker(tmp_path).run_once()
    job = store.get_job(job_id)
    assert job["status"] == "failed" and "401 Unauthorized" in job["error_message"]
    assert "[REDACTED]" in job["error_message"]
    log = Path(job["run_dir"], "train.log").read_text()
    assert "token from env present=True" in log and "argv=" in log  # the token travels by env only
    for path in [*tmp_path.glob("studio.db*"), Path(job["run_dir"], "config.yaml"), Path(job["run_dir"], "train.log")]:
        assert CANARY.encode() not in path.read_bytes(), path


# --------------------------------------------------------------------------- the real engine


@pytest.mark.engine
def test_real_engine_job_through_the_worker(tmp_path, tiny_model):
    import studio.engine  # noqa: F401  (an engine that no longer imports must fail here, not skip)
    from conftest import make_images, tiny_config
    from engine_checks import worker_job
    from studio.config import resolve

    dataset = make_images(tmp_path / "dataset")
    config = resolve(tiny_config(tiny_model, dataset, tmp_path / "out", schedule={"max_steps": 4},
                                 save={"every": 2, "run_name": "tiny"}), tier="cpu")
    store, job_id, job = worker_job(tmp_path / "data", "tiny", config)
    assert job["exit_code"] == 0 and job["step"] == 4 and len(job["files"]) == 2
    assert all(Path(job["run_dir"], f).is_file() for f in job["files"])
    assert [e["step"] for e in store.events(job_id, types=["step"])][-1] == 4
    assert job["last_checkpoint"] and Path(job["run_dir"], job["last_checkpoint"]).is_dir()
