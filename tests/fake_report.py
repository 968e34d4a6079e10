"""A stand-in for `python -m studio.jobs.report` without torch, for the worker's report-card tests.

    fake_report.py REQUEST.json --run-dir JOB_DIR [--data-dir DATA]

It copies the request to JOB_DIR/seen.json, then behaves as the finished run's folder name
says: a name ending in "slow" draws one picture and sleeps until killed, "fail" exits 1 with an
error event, "nogrid" succeeds without writing the grid; anything else draws 3 pictures (step
events with rate and ETA, as studio.jobs.report emits them) and writes report/grid_p0.png and
report/report.json into the run folder.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from PIL import Image

from fake_child import start


def main() -> int:
    request, _, emit = start()
    run = Path(request["run_dir"])
    emit("start", max_steps=3, start_step=0)
    if run.name.endswith("fail"):
        emit("error", code="NOTHING_TO_COMPARE", message=f"{run} has no checkpoints and no final LoRA")
        return 1
    emit("step", step=1, max_steps=3)
    if run.name.endswith("slow"):
        time.sleep(600)
    emit("step", step=2, max_steps=3, it_s=0.5, eta_s=2.0)
    emit("step", step=3, max_steps=3, it_s=0.5, eta_s=0.0)
    (run / "report").mkdir(exist_ok=True)
    if not run.name.endswith("nogrid"):
        Image.new("RGB", (8, 8), (200, 0, 0)).save(run / "report" / "grid_p0.png")
    (run / "report" / "report.json").write_text(json.dumps({
        "rows": [{"label": "step 2", "step": 2, "checkpoint": "x"}, {"label": "final", "step": None, "file": "y"}],
        "strengths": [0.0, 0.5, 0.75, 1.0, 1.25], "prompts": ["a cat"], "seeds": [1234], "grids": ["grid_p0.png"]}))
    emit("done", status="succeeded", files=["report/grid_p0.png"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
