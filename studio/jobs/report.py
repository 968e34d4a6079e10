"""A report-card job's child process: `python -m studio.jobs.report REQUEST.json --run-dir FOLDER --data-dir DATA`.

The worker runs it for jobs of kind "report" (studio/jobs/kinds.py): drawing the grids of a
finished run (studio/report_card.py) takes minutes of GPU time, so it waits its turn in the queue,
shows in the job list with its progress and can be cancelled. The grids go into the finished
run's own `report/` folder (request["run_dir"]); this job's folder (FOLDER) holds only its
events and log. Progress is one `step` event per picture: pictures done / total, the rate and
the time left, which the Monitor and Results tabs show like a training step.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from studio.core.vocab import EVENT_DONE, EVENT_ERROR, EVENT_START, EVENT_STEP, EXIT_OK, FAILED, SUCCEEDED
from studio.jobs.child import code_of, start


class ProgressEvents:
    """report_card's progress callback as `step` events with a rate and the time left."""

    def __init__(self, reporter, clock=time.monotonic):
        self.reporter, self.clock = reporter, clock
        self.first: tuple[float, int] | None = None  # (time, cells) of the first picture: loading excluded

    def __call__(self, done: int, total: int, message: str) -> None:
        now = self.clock()
        fields = {"step": done, "max_steps": total}
        if self.first is None:
            self.first = (now, done)
        elif now > self.first[0]:
            rate = (done - self.first[1]) / (now - self.first[0])
            fields.update(it_s=round(rate, 4), eta_s=round((total - done) / rate, 1) if rate > 0 else None)
        self.reporter.emit(EVENT_STEP, **fields)


def main(argv: list[str]) -> int:
    from studio.report_card import ReportCardError

    child = start(argv, "python -m studio.jobs.report",
                  "where to write the job's events (default: the request's folder)")
    reporter = child.reporter
    try:
        from studio.report_card import build_report_card, cell_count

        source = Path(child.request["run_dir"])
        reporter.emit(EVENT_START, max_steps=cell_count(source), start_step=0, run=source.name)
        result = build_report_card(source, progress=ProgressEvents(reporter), data_dir=child.data_dir)
        reporter.emit(EVENT_DONE, status=SUCCEEDED, files=[f"report/{name}" for name in result["grids"]])
        return EXIT_OK
    except Exception as exc:  # the UI shows this line; the traceback stays in the log
        traceback.print_exc()
        code, exit_code = code_of(exc, {ReportCardError: "NOTHING_TO_COMPARE"})
        reporter.emit(EVENT_ERROR, code=code, message=f"{exc.__class__.__name__}: {exc}" if code == "INTERNAL" else str(exc))
        reporter.emit(EVENT_DONE, status=FAILED, files=[])
        return exit_code
    finally:
        reporter.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
