"""Extension points of the training loop: `studio.engine.train(..., hooks=...)`.

The default hooks do nothing. A hook runs inside the loop, so whatever it raises is handled
exactly as if the engine had raised it: `torch.OutOfMemoryError` ends the run with the
out-of-memory exit code, an `OSError` while a checkpoint is written ends it with SAVE_FAILED
and leaves the previous checkpoint in place. The fault tests inject their faults this way
(tests/faulty_trainer.py), through the same code paths a real fault takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class TrainHooks:
    def on_step(self, step: int) -> None:
        """Called before each optimiser step; `step` steps are done so far."""

    def on_loss(self, step: int, loss: "torch.Tensor") -> "torch.Tensor":
        """Called with each micro-batch's loss before its backward pass; returns the loss to use."""
        return loss

    def on_step_end(self, step: int) -> None:
        """Called after each optimiser step (`step` steps are done), before the run's controls
        (samples, checkpoints, cancel, signals) are handled."""

    def on_checkpoint_write(self, step: int, folder: Path) -> None:
        """Called when the checkpoint of `step` is complete in its temporary `folder`, before it
        is renamed into place; raising here abandons it and keeps the previous checkpoint."""
