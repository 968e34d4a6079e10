"""Stateless helpers of the training step, kept under their old names.

They live by responsibility now: noise levels in studio/train/timesteps.py, optimiser and
schedule in studio/train/optim.py, checkpoints in studio/train/checkpoint.py, and the LoRA
targets and block names of FLUX.1 in studio/families/flux1.py.
"""

from __future__ import annotations

import torch

from .config import TrainConfig
from .families.flux1 import TARGET_SETS, block_counts, block_of  # noqa: F401
from .families.flux1 import target_modules as _family_targets
from .train.checkpoint import (  # noqa: F401
    CHECKPOINT_PREFIX, checkpoints_size, latest_checkpoint, list_checkpoints, read_checkpoint, write_checkpoint)
from .train.lora import check_model_fit as _check_model_fit
from .train.optim import build_optimizer, build_scheduler, param_groups  # noqa: F401
from .train.timesteps import sample_timesteps  # noqa: F401


def target_modules(cfg: TrainConfig, transformer: torch.nn.Module) -> list[str]:
    """Full module names that get a LoRA (explicit names, so block selection is exact)."""
    return _family_targets(cfg.lora, transformer)


def check_model_fit(cfg: TrainConfig, transformer: torch.nn.Module, names: list[str]) -> None:
    """Problems that only the model can reveal, raised before training starts."""
    _check_model_fit(cfg, transformer, names, block_counts(transformer))
