"""The studio's vocabulary, defined once: exit codes, job statuses, job kinds, memory tiers and
event types. The engine, the CLIs, the worker, the job store and the UI all import these words
from here (docs/architecture.md). No torch, no yaml: the UI imports this at start-up.
"""

from __future__ import annotations

# ---------------------------------------------------------------- exit codes of `python -m studio train`
EXIT_OK = 0           # succeeded; both LoRA files written and validated
EXIT_FAILED = 1       # failed (an `error` event says why)
EXIT_CONFIG = 2       # invalid config or command line (nothing started)
EXIT_CANCELLED = 3    # cancelled (a checkpoint was saved)
EXIT_INTERRUPTED = 4  # interrupted by SIGTERM/SIGINT (a checkpoint was saved; resumable)
EXIT_OOM = 5          # out of memory (an `error` event names the next lower memory tier)
EXIT_USAGE = EXIT_CONFIG  # the other CLIs' "bad command line"

# ---------------------------------------------------------------- job statuses
QUEUED, RUNNING, STOPPING = "queued", "running", "stopping"
SUCCEEDED, FAILED, CANCELLED, INTERRUPTED = "succeeded", "failed", "cancelled", "interrupted"
STATUSES = (QUEUED, RUNNING, STOPPING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
ACTIVE_STATUSES = (RUNNING, STOPPING)
FINAL_STATUSES = (SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
RESUMABLE_STATUSES = (INTERRUPTED, CANCELLED, FAILED)

# ---------------------------------------------------------------- job kinds
KIND_TRAIN = "train"  # a training run: `python -m studio train`
KIND_TRYIT = "tryit"  # draw a prompt with and without a finished run's LoRA
KIND_REPORT = "report"  # a finished run's report card: checkpoints x strengths (studio/report_card.py)
JOB_KINDS = (KIND_TRAIN, KIND_TRYIT, KIND_REPORT)

# ---------------------------------------------------------------- memory tiers
# From most to least GPU memory; an out-of-memory retry moves one step right. `cpu` is a tier of
# its own (no GPU), never a step down from a GPU tier.
GPU_TIERS = ("24gb", "16gb", "12gb", "8gb")
MEMORY_TIERS = GPU_TIERS + ("cpu",)


def next_lower_tier(tier: str | None) -> str | None:
    """The GPU tier one step below `tier`, or None ('8gb', 'cpu' and unknown tiers)."""
    if tier in GPU_TIERS[:-1]:
        return GPU_TIERS[GPU_TIERS.index(tier) + 1]
    return None


# ---------------------------------------------------------------- events of metrics.jsonl
EVENT_START, EVENT_STEP, EVENT_SAMPLE, EVENT_CHECKPOINT = "start", "step", "sample", "checkpoint"
EVENT_WARNING, EVENT_ERROR, EVENT_DONE = "warning", "error", "done"
EVENT_TYPES = (EVENT_START, EVENT_STEP, EVENT_SAMPLE, EVENT_CHECKPOINT, EVENT_WARNING, EVENT_ERROR, EVENT_DONE)
