"""A stand-in for `python -m studio.jobs.tryit` without torch, for the worker's try-it tests.

    fake_tryit.py REQUEST.json --run-dir RUN_DIR [--data-dir DATA]

It copies the request to RUN_DIR/seen.json (so a test can check what the worker asked for),
then behaves as the request's prompt says: "slow" sleeps until killed, "fail" exits 1 with an
error event, anything else writes with.png, without.png, the events and status.json.
"""

from __future__ import annotations

import json
import sys
import time

from PIL import Image

from fake_child import start


def main() -> int:
    request, out, emit = start()
    emit("start", max_steps=2, start_step=0)
    if request["prompt"] == "slow":
        time.sleep(600)
    if request["prompt"] == "fail":
        emit("error", code="MODEL_MISSING", message="no such model: nowhere")
        return 1
    for step, name in enumerate(("without", "with"), 1):
        Image.new("RGB", (8, 8), (step * 100, 0, 0)).save(out / f"{name}.png")
        emit("step", step=step, max_steps=2)
    emit("done", status="succeeded", files=["with.png", "without.png"])
    (out / "status.json").write_text(json.dumps({"state": "done", "with": str(out / "with.png"),
                                                 "without": str(out / "without.png")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
