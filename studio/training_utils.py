"""Stateless helpers of the training step, kept under their old names.

They live by responsibility now: noise levels in studio/train/timesteps.py, optimiser and
schedule in studio/train/optim.py, checkpoints in studio/train/checkpoint.py; the LoRA targets
and block names are the model family's (`Family.target_modules`, `Family.block_counts`).
"""

from __future__ import annotations

from .train.checkpoint import (  # noqa: F401
    CHECKPOINT_PREFIX, checkpoints_size, latest_checkpoint, list_checkpoints, read_checkpoint, write_checkpoint)
from .train.optim import build_optimizer, build_scheduler, param_groups  # noqa: F401
from .train.timesteps import sample_timesteps  # noqa: F401
