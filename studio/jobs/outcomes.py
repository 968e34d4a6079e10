"""How a child's exit becomes a job's final status: one table (docs/architecture.md, exit codes).

`decide` picks the row from the exit code and what the worker knows (it was shutting down, the
user cancelled); `record_exit` fills in the message (the run's own error event when it wrote one,
else the end of its log) and writes it to the store. Out of memory also names the next lower
memory tier and, when the config asks for it, queues a retry there.
"""

from __future__ import annotations

import dataclasses
import signal
from dataclasses import dataclass
from pathlib import Path

from studio.core.vocab import (
    CANCELLED, EVENT_DONE, EVENT_ERROR, EXIT_CANCELLED, EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_OOM,
    FAILED, INTERRUPTED, KIND_TRAIN, SUCCEEDED, next_lower_tier,
)
from studio.diagnostics import CATALOGUE, known_code
from studio.jobs.process import log_tail
from studio.jobs.record import Job

RESUME_ADVICE = "resume the job to continue from its last checkpoint"


@dataclass(frozen=True)
class Outcome:
    status: str
    code: str | None  # catalogue code; with `code_from_run`, the fallback when the run wrote none
    message: str      # format fields: {process} {activity} {checkpoint} {forced} {signal} {hint} {exit} {problem}
    advice: str | None = None  # None: the catalogue's advice for `code`
    message_from_run: bool = False  # the run's error event message, else this one and the log's end
    code_from_run: bool = False  # the run's error event code and advice, else `code` and its advice


# Exit codes of the child (studio/core/vocab.py) and the situations that override them.
BY_EXIT_CODE: dict[int, Outcome] = {
    EXIT_OK: Outcome(SUCCEEDED, code=None, message=""),
    EXIT_CANCELLED: Outcome(CANCELLED, code=None, message="cancelled.{checkpoint}"),
    EXIT_INTERRUPTED: Outcome(INTERRUPTED, code="INTERRUPTED",
                              message="{activity} was interrupted by a signal.{checkpoint}", advice=RESUME_ADVICE),
    EXIT_OOM: Outcome(FAILED, code="OUT_OF_MEMORY", message="out of GPU memory", message_from_run=True),
    # Without an error event: a crash before the engine could report (INTERNAL), or a command
    # line / config refused before training (CONFIG_INVALID).
    EXIT_FAILED: Outcome(FAILED, code="INTERNAL", message="{activity} failed",
                         message_from_run=True, code_from_run=True),
    EXIT_CONFIG: Outcome(FAILED, code="CONFIG_INVALID", message="invalid config or command line",
                         message_from_run=True, code_from_run=True),
}
SHUTDOWN = Outcome(INTERRUPTED, code="WORKER_SHUTDOWN",
                   message="the worker was shutting down and the {process} {forced}.{checkpoint}",
                   advice=RESUME_ADVICE)
CANCEL_REQUESTED = Outcome(CANCELLED, code=None, message="cancelled{forced}.{checkpoint}")
KILLED_BY_SIGNAL = Outcome(FAILED, code="KILLED", message="the {process} was killed by {signal}{hint}.{checkpoint}")
UNEXPECTED_EXIT = Outcome(FAILED, code="PROCESS_EXITED", message="{activity} exited with unexpected code {exit}",
                          message_from_run=True)
INVALID_OUTPUT = Outcome(FAILED, code="INVALID_OUTPUT", message="{activity} exited normally but {problem}")


def decide(code: int, *, shutting_down: bool, cancel_requested: bool) -> Outcome:
    """The table row for a child that exited with `code`."""
    if code != EXIT_OK and shutting_down and not cancel_requested:
        return SHUTDOWN
    if code != EXIT_OK and cancel_requested:
        return CANCEL_REQUESTED
    if code in BY_EXIT_CODE:
        return BY_EXIT_CODE[code]
    return KILLED_BY_SIGNAL if code < 0 else UNEXPECTED_EXIT


def record_exit(store, job: Job, kind, code: int, run_dir: Path, *, forced: bool, shutting_down: bool) -> Outcome:
    """Write how `job` ended (its child exited with `code`) into `store`; returns the row used."""
    outcome = decide(code, shutting_down=shutting_down, cancel_requested=job.cancel_requested)
    errors = store.events(job.id, types=[EVENT_ERROR])
    # Only errors of this attempt count: an earlier attempt's error must not be reported.
    last_error = next((e for e in reversed(errors) if e["time"] >= (job.started_at or 0)), None) or {}
    done = next(iter(store.events(job.id, types=[EVENT_DONE])[-1:]), None)
    files = None
    fields = {"process": kind.process, "activity": kind.activity, "exit": code, "problem": "",
              "checkpoint": f" Last checkpoint: {job.last_checkpoint}." if job.last_checkpoint else "",
              "forced": _forced_words(outcome, code, forced), "signal": _signal_name(code),
              "hint": " (the system may have run out of RAM)" if code == -signal.SIGKILL else ""}
    if outcome.status == SUCCEEDED:
        files, problem = kind.check_outputs(run_dir, done)
        if problem:
            outcome, files, fields["problem"] = INVALID_OUTPUT, None, problem
    message = outcome.message.format(**fields)
    if outcome.message_from_run:
        message = str(last_error.get("message") or _with_log_tail(message, run_dir))
    code_name, advice = outcome.code, outcome.advice
    if outcome.code_from_run:
        code_name = known_code(last_error.get("code") or outcome.code)
        advice = last_error.get("advice") or CATALOGUE[outcome.code].advice
    oom = outcome.code == "OUT_OF_MEMORY" and job.kind == KIND_TRAIN
    if oom:
        advice = _oom_advice(job.config.memory.tier)
    if advice is None and code_name is not None:
        advice = CATALOGUE[code_name].advice
    store.finish(job.id, outcome.status, exit_code=code, error_code=code_name,
                 error_message=message or None, advice=advice, files=files)
    if oom:
        _queue_lower_tier_retry(store, job)
    return outcome


def _forced_words(outcome: Outcome, code: int, forced: bool) -> str:
    if outcome is SHUTDOWN:
        return "was killed after the grace period" if forced else "stopped"
    if outcome is CANCEL_REQUESTED:
        return " (forced: it did not stop in time)" if forced or code < 0 else ""
    return ""


def _signal_name(code: int) -> str:
    if code >= 0:
        return ""
    return signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)


def _with_log_tail(default: str, run_dir: Path) -> str:
    tail = log_tail(run_dir / "train.log")
    return f"{default}. Last lines of train.log:\n{tail}" if tail else default


def _oom_advice(tier: str) -> str:
    lower = next_lower_tier(tier)
    if lower:
        return f"Out of GPU memory at memory tier '{tier}'. Try the next lower tier: '{lower}'."
    return (f"Out of GPU memory at memory tier '{tier}', and there is no lower tier. "
            "Lower the resolution, batch size or LoRA rank, or use a larger GPU.")


def _queue_lower_tier_retry(store, job: Job) -> None:
    lower = next_lower_tier(job.config.memory.tier)
    if not lower or job.config.memory.auto_retry_lower_tier is not True:
        return
    retry = dataclasses.replace(job.config, memory=dataclasses.replace(job.config.memory, tier=lower))
    resume_from = str(Path(job.run_dir) / job.last_checkpoint) if job.last_checkpoint else None
    store.create_job(job.name, retry, parent_job_id=job.id, resume_from=resume_from, retry_tier=True)
