"""Job kinds and the typed job record: configs are validated when a job is created, old job
stores migrate, try-it runs as a worker job (listed, cancellable), and `worker_running` never
takes the worker's lock."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from studio.config import ConfigError, TrainConfig
from studio.core.vocab import EXIT_CANCELLED, EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_OOM
from studio.jobs import Job, JobStateError, JobStore, outcomes
from studio.jobs.schema import MIGRATIONS
from studio.ui import runs, tryit_view
from studio.worker import Worker, try_lock, worker_running

TESTS = Path(__file__).resolve().parent
FAKE_TRYIT = [sys.executable, str(TESTS / "fake_tryit.py")]
CANARY = "hf_" + "KindsCanary0123456789abcdef"


def finished_run(store: JobStore, name="cat", **config) -> int:
    """A succeeded training job with two (fake) LoRA files in its run folder."""
    job_id = store.create_job(name, {"save": {"run_name": name}, **config})
    run_dir = Path(store.claim_next("w").run_dir)
    run_dir.mkdir(parents=True)
    for file in (f"{name}.safetensors", f"{name}-comfyui.safetensors"):
        (run_dir / file).write_bytes(b"x")
    store.finish(job_id, "succeeded", exit_code=0, files=[f"{name}.safetensors", f"{name}-comfyui.safetensors"])
    return job_id


# --------------------------------------------------------------------------- the typed record


def test_create_job_validates_the_config_and_names_the_wrong_key(tmp_path):
    store = JobStore(tmp_path)
    with pytest.raises(ConfigError) as caught:
        store.create_job("bad", {"lora": {"rnak": 16}, "sample": {"width": "wide"}, "hf_token": CANARY})
    text = "\n".join(caught.value.problems)
    assert "lora.rnak" in text and "rank" in text and "sample.width" in text
    assert CANARY not in text
    assert store.list_jobs() == []  # nothing half-created


def test_the_record_is_typed_and_carries_the_configs_own_defaults(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("typed", TrainConfig.from_dict({"sample": {"steps": 7}}))
    job = store.job(job_id)
    assert isinstance(job, Job) and isinstance(job.config, TrainConfig)
    assert (job.kind, job.config.sample.steps, job.config.sample.width, job.config.sample.guidance) == \
        ("train", 7, 512, 3.5)
    assert job["name"] == "typed" and store.get_job(job_id)["config"]["sample"]["steps"] == 7


def test_create_job_refuses_unknown_kinds(tmp_path):
    with pytest.raises(ValueError, match="unknown job kind 'paint'"):
        JobStore(tmp_path).create_job("x", {}, kind="paint")


# --------------------------------------------------------------------------- migration


def old_store(data: Path, config_text: str) -> None:
    """A studio.db exactly as the first schema wrote it, with one finished job."""
    data.mkdir(parents=True)
    conn = sqlite3.connect(data / "studio.db")
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute("INSERT INTO jobs (name, config, status, created_at, run_dir) VALUES (?, ?, 'succeeded', ?, ?)",
                 ("old run", config_text, time.time(), str(data / "runs" / "1-old-run")))
    conn.commit()
    conn.close()


def test_a_store_from_the_first_schema_migrates_and_keeps_its_jobs(tmp_path):
    old_store(tmp_path / "data", "memory:\n  tier: 16gb\n")
    store = JobStore(tmp_path / "data")
    assert store.schema_version() == len(MIGRATIONS) == 2
    job = store.job(1)
    assert (job.name, job.kind, job.request, job.status) == ("old run", "train", {}, "succeeded")
    assert job.config.memory.tier == "16gb"
    assert store.integrity_check() == "ok"
    new = store.create_tryit(1, "/x.safetensors", "a cat", 1.0, 3)
    assert store.job(new).kind == "tryit"


def test_an_old_job_whose_config_no_longer_validates_is_listed_and_failed_not_run(tmp_path):
    old_store(tmp_path / "data", "memory:\n  tier: 16gb\nfake:\n  steps: 3\n")
    sqlite3.connect(tmp_path / "data" / "studio.db").execute(
        "UPDATE jobs SET status='queued', run_dir=NULL").connection.commit()
    store = JobStore(tmp_path / "data")
    [listed] = store.list_jobs()
    assert listed["config_problem"] and "fake" in listed["config_problem"]
    Worker(tmp_path / "data", train_command=[sys.executable, "-c", "raise SystemExit(0)"]).run_once()
    job = store.job(1)
    assert job.status == "failed" and job.error_code == "CONFIG_INVALID" and "fake" in job.error_message


# --------------------------------------------------------------------------- the outcome table


@pytest.mark.parametrize("code, shutting_down, cancel, status, catalogue", [
    (EXIT_OK, True, True, "succeeded", None),  # a run that finished is finished
    (EXIT_CANCELLED, False, False, "cancelled", None),
    (EXIT_INTERRUPTED, False, False, "interrupted", "INTERRUPTED"),
    (EXIT_OOM, False, False, "failed", "OUT_OF_MEMORY"),
    (EXIT_FAILED, False, False, "failed", "INTERNAL"),
    (EXIT_CONFIG, False, False, "failed", "CONFIG_INVALID"),
    (EXIT_FAILED, True, False, "interrupted", "WORKER_SHUTDOWN"),
    (-9, False, True, "cancelled", None),
    (-9, False, False, "failed", "KILLED"),
    (7, False, False, "failed", "PROCESS_EXITED"),
])
def test_outcome_table(code, shutting_down, cancel, status, catalogue):
    outcome = outcomes.decide(code, shutting_down=shutting_down, cancel_requested=cancel)
    assert (outcome.status, outcome.code) == (status, catalogue)


# --------------------------------------------------------------------------- try-it as a job


def test_try_it_is_a_job_that_the_worker_runs_on_the_runs_own_settings(tmp_path):
    store = JobStore(tmp_path)
    source = finished_run(store, sample={"width": 320, "height": 256, "steps": 6, "guidance": 2.0, "true_cfg": 3.0})
    queued_training = store.create_job("later", {})
    folder = tryit_view.start_try_it(tmp_path, source, "a cat on a sofa", 0.75, 11)
    [tryit] = [j for j in store.jobs() if j.kind == "tryit"]
    assert folder == Path(store.job(source).run_dir) / "tryit" / str(tryit.id)
    assert tryit.status == "queued" and tryit.parent_job_id == source
    assert tryit_view.try_it_result(str(folder)) == {"state": "running"}
    assert any(row[0] == tryit.id for row in runs.job_rows(tmp_path))  # in the job list

    worker = Worker(tmp_path, train_command=[sys.executable, "-c", "raise SystemExit(0)"], poll_interval=0.02,
                    tryit_command=FAKE_TRYIT)
    assert worker.run_once() == tryit.id  # drawing goes before the queued training job
    done = store.job(tryit.id)
    assert done.status == "succeeded" and done.files == ["with.png", "without.png"], done.error_message
    assert (done.step, done.max_steps) == (2, 2)
    seen = json.loads((folder / "seen.json").read_text())
    assert (seen["width"], seen["height"], seen["steps"], seen["guidance"], seen["true_cfg"]) == (320, 256, 6, 2.0, 3.0)
    assert (seen["prompt"], seen["strength"], seen["seed"]) == ("a cat on a sofa", 0.75, 11)
    assert seen["lora"].endswith("cat.safetensors") and seen["data_dir"] == str(tmp_path.resolve())
    result = tryit_view.try_it_result(str(folder))
    assert result["state"] == "done" and Path(result["with"]).is_file()
    assert store.job(queued_training).status == "queued"
    store.delete(tryit.id)
    assert not folder.exists() and Path(store.job(source).run_dir).is_dir()


def test_a_failed_try_it_reports_its_error_to_the_results_tab(tmp_path):
    store = JobStore(tmp_path)
    folder = tryit_view.start_try_it(tmp_path, finished_run(store), "fail", 1.0, 0)
    Worker(tmp_path, poll_interval=0.02, tryit_command=FAKE_TRYIT).run_once()
    [tryit] = [j for j in store.jobs() if j.kind == "tryit"]
    assert tryit.status == "failed" and tryit.error_code == "MODEL_MISSING"
    result = tryit_view.try_it_result(str(folder))
    assert result["state"] == "failed" and "no such model" in result["error"]


def test_a_try_it_job_can_be_cancelled_while_it_draws(tmp_path):
    store = JobStore(tmp_path)
    folder = tryit_view.start_try_it(tmp_path, finished_run(store), "slow", 1.0, 0)
    [tryit] = [j for j in store.jobs() if j.kind == "tryit"]
    with pytest.raises(JobStateError, match="only training jobs"):
        store.duplicate(tryit.id)
    worker = Worker(tmp_path, poll_interval=0.02, grace_seconds=2.0, tryit_command=FAKE_TRYIT)
    thread = threading.Thread(target=worker.run_once, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not (folder / "seen.json").exists():  # the child is up and listening for SIGTERM
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(JobStateError, match="only training jobs"):
        store.request_sample(tryit.id)
    assert "stopping" in runs.control(tmp_path, tryit.id, "cancel")  # running: asked to stop, not yet stopped
    thread.join(20)
    assert not thread.is_alive() and store.job(tryit.id).status == "cancelled"
    assert store.job(tryit.id).error_message == "cancelled."  # it stopped when asked, nothing forced
    assert tryit_view.try_it_result(str(folder))["state"] == "failed"


# --------------------------------------------------------------------------- worker liveness


def test_worker_running_follows_the_heartbeat_and_the_pid(tmp_path):
    assert not worker_running(tmp_path)
    worker = Worker(tmp_path)
    worker.acquire()
    try:
        assert worker_running(tmp_path)
        from studio.jobs import process

        assert not process.worker_alive(tmp_path, stale_after=0.0)  # a silent worker is not taken for alive
    finally:
        worker.release()
    lock = tmp_path / "worker.lock"
    lock.write_text("999999999\n")  # a pid that cannot exist, with a fresh mtime
    assert not worker_running(tmp_path)


def test_worker_running_never_turns_away_a_worker_that_is_starting(tmp_path):
    """The check used to take the lock for an instant; a worker starting then exited 'already running'."""
    (tmp_path / "worker.lock").write_text(f"{os.getpid()}\n")
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            worker_running(tmp_path)

    threads = [threading.Thread(target=poll, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    refused = 0
    try:
        for _ in range(3000):
            fd = try_lock(tmp_path)
            if fd is None:
                refused += 1
            else:
                os.close(fd)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert refused == 0
