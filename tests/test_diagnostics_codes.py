"""One catalogue of error codes: every code the engine or the worker can write is in it (found by
reading the source, not listed here), and a job the worker records shows its advice in Chinese."""

from __future__ import annotations

import ast
import atexit
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

import fake_trainer
from studio.diagnostics import CATALOGUE, known_code
from studio.i18n import catalogue
from studio.jobs import JobStore
from studio.ui import runs
from studio.worker import Worker

ROOT = Path(__file__).resolve().parent.parent
BEHAVIOURS = Path(tempfile.mkdtemp(prefix="studio-fake-trainer-"))
atexit.register(shutil.rmtree, BEHAVIOURS, True)
HAN = re.compile(r"[\u4e00-\u9fff]")
# Where a code is written: keyword arguments code= / error_code=, {"code": ...} and
# {"error_code": ...} entries, and the
# first argument of StudioError(...), warn(...) (the dataset loader's warning callback) and explain(...).
CODE_KEYWORDS = {"code", "error_code"}
CODE_CALLS = {"StudioError", "warn", "explain"}


def written_codes() -> tuple[dict[str, list[str]], list[str]]:
    """{code: [file:line, ...]} for every literal code in studio/, and the places that build one
    some other way (an f-string, an expression) — which the catalogue could not be checked against."""
    codes: dict[str, list[str]] = {}
    unchecked: list[str] = []
    for path in sorted((ROOT / "studio").rglob("*.py")):
        if path.name == "diagnostics.py":
            continue  # the catalogue itself: StudioError refuses a code it does not hold
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            values = []
            if isinstance(node, ast.Call):
                values += [kw.value for kw in node.keywords if kw.arg in CODE_KEYWORDS]
                if isinstance(node.func, ast.Name) and node.func.id in CODE_CALLS and node.args:
                    values.append(node.args[0])
            elif isinstance(node, ast.Dict):
                values += [v for k, v in zip(node.keys, node.values)
                           if isinstance(k, ast.Constant) and k.value in CODE_KEYWORDS]
            for value in values:
                where = f"{path.relative_to(ROOT)}:{value.lineno}"
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    codes.setdefault(value.value, []).append(where)
                elif isinstance(value, ast.Constant) and value.value is None:
                    continue
                elif isinstance(value, ast.Name):
                    continue  # a parameter passing on a code found at its own source
                elif (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                      and value.func.id == "known_code"):
                    continue  # maps anything unknown to INTERNAL
                else:
                    unchecked.append(f"{where}: {ast.unparse(value)}")
    return codes, unchecked


def test_every_code_written_is_in_the_catalogue():
    codes, unchecked = written_codes()
    assert not unchecked, "codes built at run time (use a catalogue code or known_code()):\n" + "\n".join(unchecked)
    unknown = {code: places for code, places in codes.items() if code not in CATALOGUE}
    assert not unknown, f"codes missing from studio/diagnostics.py: {unknown}"
    # the scan sees both writers (it is not vacuous)
    files = {place.split(":")[0] for places in codes.values() for place in places}
    assert {"studio/jobs/worker.py", "studio/jobs/outcomes.py", "studio/train/loop.py", "studio/train/state.py"} <= files
    assert {"OUT_OF_MEMORY", "KILLED", "WORKER_RESTARTED", "NAN_LOSS", "NO_IMAGES"} <= set(codes)


def test_every_code_has_a_title_and_advice_in_both_languages():
    en, zh = catalogue("en"), catalogue("zh-CN")
    for code in CATALOGUE:
        for part in ("title", "advice"):
            key = f"diag.{code}.{part}"
            assert en[key] and HAN.search(zh[key]), key


def test_known_code():
    assert known_code("NAN_LOSS") == "NAN_LOSS"
    assert known_code("fake_error") == known_code(None) == known_code(5) == "INTERNAL"


# --------------------------------------------------------------------------- what the worker records


def fake_config(**fake):
    """A valid config whose run name selects the fake trainer's behaviour `fake`."""
    name = fake_trainer.behaviour(BEHAVIOURS, **{"steps": 6, "step_time": 0.02, **fake})
    return {"memory": {"tier": "24gb"}, "save": {"run_name": name}}


def run_one(data: Path, config: dict, command: list[str] | None = None, during=None) -> dict:
    store = JobStore(data)
    job_id = store.create_job("job", config)
    worker = Worker(data, train_command=command or fake_trainer.command(BEHAVIOURS), poll_interval=0.02,
                    grace_seconds=5.0)
    thread = None
    if during:
        thread = threading.Thread(target=during, args=(store, job_id), daemon=True)
        thread.start()
    worker.run_once()
    if thread:
        thread.join(20)
    return store.get_job(job_id)


def kill_at_step_2(store, job_id):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = store.get_job(job_id)
        if job["pid"] and (job["step"] or 0) >= 2:
            import os
            os.killpg(job["pid"], signal.SIGKILL)
            return
        time.sleep(0.02)


@pytest.mark.parametrize("case, config, command, during, expected", [
    ("oom", fake_config(fail_at_step=2, exit_code=5, error_code="oom", error_message="CUDA out of memory"),
     None, None, "OUT_OF_MEMORY"),
    ("unexpected exit", fake_config(fail_at_step=2, exit_code=7, error_message="weird"), None, None,
     "PROCESS_EXITED"),
    ("refused command line", fake_config(fail_at_step=1, exit_code=2, no_error_event=True,
                                         error_message="bad key"), None, None, "CONFIG_INVALID"),
    ("unknown code from the child", fake_config(fail_at_step=2, exit_code=1, error_code="fake_error",
                                                error_message="boom"), None, None, "INTERNAL"),
    ("no files", fake_config(skip_files=True), None, None, "INVALID_OUTPUT"),
    ("cannot start", fake_config(), ["/nonexistent/python-for-training"], None, "SPAWN_FAILED"),
    ("killed", fake_config(steps=400, step_time=0.05), None, kill_at_step_2, "KILLED"),
])
def test_worker_codes_are_catalogued_and_advise_in_chinese(tmp_path, case, config, command, during, expected):
    job = run_one(tmp_path, config, command, during)
    assert job["status"] == "failed" and job["error_code"] == expected, (case, job["error_message"])
    shown = runs.job_status_markdown(job, "zh-CN")
    assert catalogue("zh-CN")[f"diag.{expected}.advice"] in shown, shown
    assert job["advice"] not in shown or HAN.search(job["advice"])   # no English advice in the Chinese view
