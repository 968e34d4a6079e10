"""The report card as a worker job: queued from the Results tab for a finished training job, run
by the real worker in a child process (a torch-free stand-in here; tests/test_report_card.py runs
the real one on a tiny model), with progress in pictures, failures that say why, cancelling, and
the Results tab's view of it."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from studio.jobs import JobStateError, JobStore
from studio.jobs.report import ProgressEvents
from studio.ui import card_view, runs
from studio.ui.handlers import UserError
from studio.worker import Worker

TESTS = Path(__file__).resolve().parent
FAKE_REPORT = [sys.executable, str(TESTS / "fake_report.py")]
NOT_TRAINING = [sys.executable, "-c", "raise SystemExit(0)"]


def finished_run(store: JobStore, name="cat") -> int:
    job_id = store.create_job(name, {"save": {"run_name": name}})
    run_dir = Path(store.claim_next("w").run_dir)
    run_dir.mkdir(parents=True)
    for file in (f"{name}.safetensors", f"{name}-comfyui.safetensors"):
        (run_dir / file).write_bytes(b"x")
    (run_dir / "checkpoints" / "step000002").mkdir(parents=True)
    (run_dir / "checkpoints" / "step000002" / "meta.json").write_text("{}")
    store.finish(job_id, "succeeded", exit_code=0, files=[f"{name}.safetensors", f"{name}-comfyui.safetensors"])
    return job_id


def worker(data: Path, **kw) -> Worker:
    return Worker(data, train_command=NOT_TRAINING, poll_interval=0.02, report_command=FAKE_REPORT, **kw)


def test_the_report_card_is_a_job_the_worker_runs_with_progress(tmp_path):
    store = JobStore(tmp_path)
    source = finished_run(store)
    before = card_view.card_panel(tmp_path, source, "en")
    assert before["grids"] == [] and before["progress"] == "" and "No report card yet" in before["summary"]
    message = card_view.queue_report(tmp_path, source, "en")
    [report] = [j for j in store.jobs() if j.kind == "report"]
    assert f"job {report.id}" in message and "2 row(s)" in message
    assert report.parent_job_id == source and report.status == "queued"
    assert report.run_dir == str(Path(store.job(source).run_dir) / "report-jobs" / str(report.id))
    queued = card_view.card_panel(tmp_path, source, "en")
    assert queued["active"] and "Waiting for the worker" in queued["progress"]
    with pytest.raises(UserError, match="already queued"):
        card_view.queue_report(tmp_path, source, "en")
    assert any(row[0] == report.id for row in runs.job_rows(tmp_path))  # listed on the Monitor

    assert worker(tmp_path).run_once() == report.id
    done = store.job(report.id)
    assert done.status == "succeeded" and done.files == ["report/grid_p0.png"], done.error_message
    assert (done.step, done.max_steps, done.it_s, done.eta_s) == (3, 3, 0.5, 0.0)
    seen = json.loads((Path(done.run_dir) / "seen.json").read_text())
    assert seen["run_dir"] == store.job(source).run_dir and seen["source_job_id"] == source
    panel = card_view.card_panel(tmp_path, source, "zh-CN")
    assert [Path(p).name for p, _ in panel["grids"]] == ["grid_p0.png"] and panel["grids"][0][1] == "a cat"
    assert not panel["active"] and "第 3 / 3 张图 · 用时" in panel["progress"] and panel["steps"] == [2]
    card_view.queue_report(tmp_path, source, "en")  # once drawn, it can be drawn again


def test_a_running_report_shows_pictures_rate_and_eta():
    from studio.ui.job_status import progress_html

    job = {"kind": "report", "status": "running", "step": 4, "max_steps": 9, "it_s": 0.25, "eta_s": 20}
    assert "Picture 4 / 9 · 0.25 pictures/s · ETA 0:20" in progress_html(job, "en")
    assert "Step 4 / 9" in progress_html({**job, "kind": "train"}, "en")


def test_progress_events_count_the_rate_from_the_first_picture():
    events, clock = [], iter([100.0, 110.0, 130.0])

    class Reporter:
        def emit(self, kind, **fields):
            events.append((kind, fields))

    progress = ProgressEvents(Reporter(), clock=lambda: next(clock))
    for done in (1, 2, 3):
        progress(done, 5, f"{done}/5 pictures")
    assert events[0] == ("step", {"step": 1, "max_steps": 5})  # loading the model is not a rate
    assert events[1][1] == {"step": 2, "max_steps": 5, "it_s": 0.1, "eta_s": 30.0}
    assert events[2][1] == {"step": 3, "max_steps": 5, "it_s": round(2 / 30, 4), "eta_s": 30.0}


def report_of(data: Path, run_name: str):
    """(the finished training job, its report job) after the worker ran a report queued from the Results tab."""
    store = JobStore(data)
    source = finished_run(store, run_name)
    card_view.queue_report(data, source, "en")
    worker(data).run_once()
    [report] = [j for j in store.jobs() if j.kind == "report"]
    return source, report


def test_a_report_that_fails_says_why_in_the_results_tab(tmp_path):
    source, report = report_of(tmp_path, "fail")
    assert report.status == "failed" and report.error_code == "NOTHING_TO_COMPARE"
    panel = card_view.card_panel(tmp_path, source, "zh-CN")
    assert not panel["active"] and "没有可供报告卡比较的内容" in panel["ended"] and "no checkpoints" in panel["ended"]


def test_a_report_without_its_grid_is_not_a_success(tmp_path):
    report = report_of(tmp_path, "nogrid")[1]
    assert report.status == "failed" and "grid_p0.png missing from report/" in report.error_message


def test_only_a_succeeded_training_job_gets_a_report_card(tmp_path):
    store = JobStore(tmp_path)
    source = finished_run(store)
    queued = store.create_job("later", {})
    with pytest.raises(UserError, match="succeeded"):
        card_view.queue_report(tmp_path, queued, "en")
    with pytest.raises(UserError, match="成功完成"):
        card_view.queue_report(tmp_path, queued, "zh-CN")
    with pytest.raises(UserError, match="No finished job selected"):
        card_view.queue_report(tmp_path, None, "en")
    tryit = store.create_tryit(source, "/x.safetensors", "a cat", 1.0, 1)
    with pytest.raises(JobStateError, match="only a training job that succeeded"):
        store.create_report(tryit)


def test_a_report_job_can_be_cancelled_and_deleted_without_its_run(tmp_path):
    store = JobStore(tmp_path)
    source = finished_run(store, "slow")
    card_view.queue_report(tmp_path, source, "en")
    [report] = [j for j in store.jobs() if j.kind == "report"]
    folder = Path(report.run_dir)
    thread = threading.Thread(target=worker(tmp_path, grace_seconds=2.0).run_once, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while store.job(report.id).step < 1:  # the first picture is drawn
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert card_view.card_panel(tmp_path, source, "en")["active"]
    assert "stopping" in runs.control(tmp_path, report.id, "cancel")
    thread.join(20)
    assert not thread.is_alive() and store.job(report.id).status == "cancelled"
    store.delete(report.id)
    assert not folder.exists() and Path(store.job(source).run_dir, "slow.safetensors").is_file()


def test_promoting_asks_for_a_confirmation_and_a_step(tmp_path):
    store = JobStore(tmp_path)
    source = finished_run(store)
    final = Path(store.job(source).run_dir) / "cat.safetensors"
    with pytest.raises(UserError, match="Tick the box"):
        card_view.promote_confirmed(tmp_path, source, "2", False, "en")
    with pytest.raises(UserError, match="请先勾选"):
        card_view.promote_confirmed(tmp_path, source, "2", None, "zh-CN")
    with pytest.raises(UserError, match="Pick the checkpoint"):
        card_view.promote_confirmed(tmp_path, source, None, True, "en")
    later = store.create_job("later", {})
    with pytest.raises(UserError, match="Only a job that succeeded"):
        card_view.promote_confirmed(tmp_path, later, "2", True, "en")
    assert final.read_bytes() == b"x"  # nothing was touched
