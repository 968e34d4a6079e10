"""The SQLite job store: API rules, concurrency, crash safety and secret redaction."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time

import pytest

from studio.config import TrainConfig
from studio.jobs import JobNotFound, JobStateError, JobStore, next_lower_tier, redact

CANARY = "hf_" + "Canary1234567890abcdefXYZ"


def make_config(**memory):
    return {"model": {"base": "demo"}, "schedule": {"max_steps": 10}, "memory": {"tier": "24gb", **memory}}


def stored(config):
    """What the store keeps of `config`: the whole validated TrainConfig."""
    return TrainConfig.from_dict(config).to_dict()


def test_create_get_list_round_trip(tmp_path):
    store = JobStore(tmp_path)
    first = store.create_job("portrait", make_config())
    second = store.create_job("dog", make_config(tier="16gb"))
    job = store.get_job(first)
    assert job["status"] == "queued" and job["name"] == "portrait"
    assert job["config"] == stored(make_config())
    assert job["files"] == [] and job["resume"] is False and job["attempts"] == 0
    assert [j["id"] for j in store.list_jobs()] == [second, first]  # newest first
    assert [j["id"] for j in store.list_jobs(["queued"])] == [second, first]
    assert store.list_jobs(["running"]) == []
    with pytest.raises(JobNotFound, match="job 999 does not exist"):
        store.get_job(999)
    with pytest.raises(ValueError, match="non-empty name"):
        store.create_job("  ", make_config())
    with pytest.raises(TypeError, match="config must be a dict"):
        store.create_job("x", ["not", "a", "dict"])


def test_schema_is_versioned_and_newer_files_are_refused(tmp_path):
    store = JobStore(tmp_path)
    assert store.schema_version() == 2
    JobStore(tmp_path)  # reopening does not re-run migrations
    with sqlite3.connect(tmp_path / "studio.db") as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(RuntimeError, match="schema version 99"):
        JobStore(tmp_path)


def test_claim_next_takes_the_oldest_queued_job_once(tmp_path):
    store = JobStore(tmp_path)
    ids = [store.create_job(f"job {i}", make_config()) for i in range(3)]
    store.request_cancel(ids[0])
    claimed = store.claim_next("w1")
    assert claimed["id"] == ids[1] and claimed["status"] == "running" and claimed["attempts"] == 1
    assert claimed["run_dir"].endswith(f"runs/{ids[1]}-job-1")
    assert store.claim_next("w1")["id"] == ids[2]
    assert store.claim_next("w1") is None


def test_claims_from_many_threads_never_share_a_job(tmp_path):
    store = JobStore(tmp_path)
    for i in range(30):
        store.create_job(f"job {i}", make_config())
    claimed, lock = [], threading.Lock()

    def claim_all():
        while (job := store.claim_next(threading.current_thread().name)) is not None:
            with lock:
                claimed.append(job["id"])

    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 31))


def test_cancel_sample_save_follow_the_status(tmp_path):
    store = JobStore(tmp_path)
    queued = store.create_job("a", make_config())
    assert store.request_cancel(queued) == "cancelled"
    assert store.get_job(queued)["finished_at"] is not None
    with pytest.raises(JobStateError, match="already cancelled"):
        store.request_cancel(queued)
    with pytest.raises(JobStateError, match="only generate samples while running"):
        store.request_sample(queued)

    running = store.create_job("b", make_config())
    store.claim_next("w")
    store.request_sample(running)
    store.request_save(running)
    assert store.take_control_requests(running) == {"cancel": False, "sample": True, "save": True}
    assert store.take_control_requests(running) == {"cancel": False, "sample": False, "save": False}
    assert store.request_cancel(running) == "stopping"
    assert store.get_job(running)["status"] == "stopping"
    assert store.take_control_requests(running)["cancel"] is True


def test_events_update_progress_and_filter(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("a", make_config())
    store.claim_next("w")
    store.append_events(job_id, [
        {"type": "start", "time": 1.0, "max_steps": 100, "start_step": 0},
        {"type": "step", "time": 2.0, "step": 1, "max_steps": 100, "loss": 0.5, "it_s": 2.0, "eta_s": 50.0,
         "block_grad_norms": {"double_blocks.0": 0.1}},
        {"type": "checkpoint", "time": 3.0, "step": 1, "path": "checkpoints/step000001"},
        {"type": "step", "time": 4.0, "step": 2, "max_steps": 100, "loss": 0.25, "it_s": 2.5, "eta_s": 40.0},
    ], events_offset=123)
    job = store.get_job(job_id)
    assert (job["step"], job["max_steps"], job["loss"], job["it_s"], job["eta_s"]) == (2, 100, 0.25, 2.5, 40.0)
    assert job["last_checkpoint"] == "checkpoints/step000001" and job["events_offset"] == 123
    steps = store.events(job_id, types=["step"])
    assert [e["step"] for e in steps] == [1, 2]
    assert steps[0]["block_grad_norms"] == {"double_blocks.0": 0.1}
    assert [e["seq"] for e in store.events(job_id, since_seq=2)] == [3, 4]


def test_resume_rerun_duplicate(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("a", make_config())
    with pytest.raises(JobStateError, match="only interrupted, cancelled or failed"):
        store.resume(job_id)
    store.claim_next("w")
    store.finish(job_id, "failed", exit_code=1, error_message="boom")
    with pytest.raises(JobStateError, match="no checkpoint"):
        store.resume(job_id)
    store.append_events(job_id, [{"type": "checkpoint", "time": 1.0, "step": 5, "path": "checkpoints/step000005"}])
    store.resume(job_id)
    job = store.get_job(job_id)
    assert job["status"] == "queued" and job["resume"] is True and job["error_message"] is None

    rerun = store.rerun_with(job_id, make_config(tier="12gb"))
    assert store.get_job(rerun)["parent_job_id"] == job_id
    assert store.get_job(rerun)["config"]["memory"]["tier"] == "12gb"
    copy = store.duplicate(job_id)
    assert store.get_job(copy)["name"] == "a (copy)"
    assert store.get_job(copy)["config"] == stored(make_config())


def test_delete_refuses_running_and_removes_only_its_run_folder(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("a", make_config())
    job = store.claim_next("w")
    os.makedirs(os.path.join(job["run_dir"], "checkpoints"))
    store.append_events(job_id, [{"type": "step", "time": 1.0, "step": 1}])
    with pytest.raises(JobStateError, match="cancel it and wait"):
        store.delete(job_id)
    store.finish(job_id, "succeeded", exit_code=0)
    store.delete(job_id)
    assert not os.path.exists(job["run_dir"])
    assert store.events(job_id) == []
    with pytest.raises(JobNotFound):
        store.get_job(job_id)

    keep = store.create_job("b", make_config())
    store.claim_next("w")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    sqlite3.connect(tmp_path / "studio.db").execute(
        "UPDATE jobs SET run_dir=?, status='failed' WHERE id=?", (str(outside), keep)).connection.commit()
    store.delete(keep)
    assert outside.exists()  # a row pointing outside <data>/runs never deletes anything


def test_next_lower_tier():
    assert [next_lower_tier(t) for t in ("24gb", "16gb", "12gb", "8gb", "cpu", None)] == \
        ["16gb", "12gb", "8gb", None, None, None]


def test_redact_drops_secret_keys_and_masks_tokens():
    config = {"hf_token": CANARY, "model": {"api_key": "x", "password": "y", "token": "z", "name": "flux"},
              "tokenizer_max_length": 512, "notes": [f"use {CANARY} please", "Authorization: Bearer abcdefghijklmnopqrstuv"]}
    clean = redact(config)
    assert clean == {"model": {"name": "flux"}, "tokenizer_max_length": 512,
                     "notes": ["use [REDACTED] please", "Authorization: Bearer [REDACTED]"]}
    assert config["hf_token"] == CANARY  # the caller's dict is not modified


def test_canary_token_never_reaches_the_database_file(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job(f"run {CANARY}", {"hf_token": CANARY, "sample": {"prompts": [f"photo {CANARY}"]}})
    store.claim_next("w")
    store.append_events(job_id, [{"type": "error", "time": 1.0, "code": "auth", "message": f"401 for {CANARY}"}])
    store.finish(job_id, "failed", exit_code=1, error_message=f"token {CANARY} rejected", advice=CANARY)
    assert CANARY not in repr(store.get_job(job_id)) + repr(store.events(job_id))
    for name in os.listdir(tmp_path):  # studio.db, -wal and -shm
        assert CANARY.encode() not in (tmp_path / name).read_bytes(), name


def _hammer(data_dir, job_id, count, ready):
    store = JobStore(data_dir)  # also exercises the store object inherited through fork below
    ready.wait()
    for i in range(count):
        store.append_events(job_id, [{"type": "step", "time": time.time(), "step": i, "pid": os.getpid()}])


def test_two_processes_hammering_the_store_never_see_database_locked(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("hammer", make_config())
    store.get_job(job_id)  # the parent holds an open connection while it forks
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    procs = [ctx.Process(target=_hammer, args=(tmp_path, job_id, 1000, ready)) for _ in range(2)]
    for p in procs:
        p.start()
    ready.set()
    for p in procs:
        p.join(60)
    # append_events reads MAX(seq) then inserts: a lost update would collide on the primary key
    # or leave a gap, and any "database is locked" would have failed a child.
    assert [p.exitcode for p in procs] == [0, 0]
    seqs = [e["seq"] for e in store.events(job_id)]
    assert seqs == list(range(1, 2001))
    assert store.integrity_check() == "ok"


def _write_forever(data_dir, job_id):
    store = JobStore(data_dir)
    payload = "x" * 20_000  # big rows so that a kill lands inside a write more often
    while True:
        store.append_events(job_id, [{"type": "step", "time": time.time(), "blob": payload}] * 20)


def test_integrity_after_kill_9_mid_transaction(tmp_path):
    store = JobStore(tmp_path)
    job_id = store.create_job("crash", make_config())
    ctx = multiprocessing.get_context("spawn")
    for _ in range(3):
        proc = ctx.Process(target=_write_forever, args=(tmp_path, job_id))
        proc.start()
        deadline = time.time() + 20
        while not store.events(job_id, since_seq=len(store.events(job_id)) - 1) and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    fresh = JobStore(tmp_path)
    assert fresh.integrity_check() == "ok"
    seqs = [e["seq"] for e in fresh.events(job_id)]
    assert seqs and len(seqs) % 20 == 0 and seqs == list(range(1, len(seqs) + 1))  # whole batches only
    fresh.create_job("after crash", make_config())  # still writable: no stale lock left
