"""Latency of the Monitor tab's polling work, idle vs. while a training job saturates the CPU.

    python bench/ui_latency.py [--polls 60] [--steps 400]

What is timed is the whole server-side work of one Monitor poll (job list, job detail with
loss/LR curves, heat map, samples and log tail, read from the job store and run folder), the
same function the gr.Timer calls, on a job with a few hundred step events. HTTP and browser
rendering are not included. The training load is a real `demo`-model job run by the worker.
Goal (issue 5): p95 under 150 ms while training.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def poll_once(data_dir: Path, job_id: int) -> float:
    from studio.ui import runs

    start = time.perf_counter()
    runs.job_rows(data_dir, "en")
    runs.job_choices(data_dir)
    runs.job_view(data_dir, job_id, "en")
    runs.worker_running(data_dir)
    return (time.perf_counter() - start) * 1000


def measure(data_dir: Path, job_id: int, polls: int) -> dict:
    times = [poll_once(data_dir, job_id) for _ in range(polls)]
    times.sort()
    return {"p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))], "max": times[-1]}


def fake_history(data_dir: Path, steps: int) -> int:
    """A finished job with `steps` step events (block norms every 10) to poll."""
    from studio.jobs import JobStore

    store = JobStore(data_dir)
    job_id = store.create_job("history", {"save": {"run_name": "history"}})
    job = store.claim_next("bench")
    Path(job["run_dir"]).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    events = [{"type": "step", "step": s, "max_steps": steps, "loss": float(rng.random()), "lr": 1e-4,
               "it_s": 2.0, "eta_s": 1.0,
               "block_grad_norms": {f"double.{b}": float(rng.random()) for b in range(19)} if s % 10 == 0 else None}
              for s in range(1, steps + 1)]
    store.append_events(job_id, events)
    store.finish(job_id, "succeeded", files=[])
    return job_id


def start_training(data_dir: Path) -> int:
    """Queue a long demo-model job on the CPU tier and start the worker."""
    from studio.config import resolve
    from studio.jobs import JobStore
    from studio.worker import ensure_worker

    images = data_dir / "datasets" / "bench" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text("ohwx")
    cfg = resolve({"dataset": {"path": str(images), "resolution": 128, "trigger_word": "ohwx"},
                   "schedule": {"max_steps": 100_000, "warmup_steps": 0},
                   "sample": {"every": 0, "at_start": False}, "save": {"every": 0, "run_name": "load"}},
                  preset="portrait", tier="cpu")
    job_id = JobStore(data_dir).create_job("load", cfg.to_dict())
    ensure_worker(data_dir)
    return job_id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=60)
    parser.add_argument("--steps", type=int, default=400, help="step events in the polled job's history")
    parser.add_argument("--warmup-timeout", type=float, default=180.0)
    args = parser.parse_args()
    from studio.jobs import JobStore

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        os.environ["STUDIO_DATA"] = str(data_dir)
        history = fake_history(data_dir, args.steps)
        idle = measure(data_dir, history, args.polls)
        load_id = start_training(data_dir)
        store, deadline = JobStore(data_dir), time.time() + args.warmup_timeout
        while time.time() < deadline:
            job = store.get_job(load_id)
            if job["status"] == "running" and (job["step"] or 0) > 2:
                break
            if job["status"] in ("failed", "succeeded", "cancelled", "interrupted"):
                print(f"training job ended early: {job['status']} {job['error_message']}", file=sys.stderr)
                return 1
            time.sleep(1)
        else:
            print("training did not start in time", file=sys.stderr)
            return 1
        busy = measure(data_dir, history, args.polls)
        busy_live = measure(data_dir, load_id, args.polls)
        store.request_cancel(load_id)
        deadline = time.time() + 60
        while store.get_job(load_id)["status"] not in ("cancelled", "failed", "interrupted") and time.time() < deadline:
            time.sleep(1)
        out = subprocess.run(["pgrep", "-f", f"studio.worker --data-dir {data_dir}"], capture_output=True, text=True)
        for pid in out.stdout.split():  # only the worker this script started, found by its own data folder
            os.kill(int(pid), 15)
    print(f"monitor poll, {args.polls} polls each, history of {args.steps} steps (ms):")
    for name, r in (("idle", idle), ("training (history job)", busy), ("training (live job)", busy_live)):
        print(f"  {name:24s} p50 {r['p50']:7.1f}  p95 {r['p95']:7.1f}  max {r['max']:7.1f}")
    ok = busy["p95"] < 150 and busy_live["p95"] < 150
    print("goal p95 < 150 ms while training:", "met" if ok else "NOT met")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
