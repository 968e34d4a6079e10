"""The training engine's entry point: `from studio.engine import train`.

The engine lives in studio/train/ (state, step, loop, sampling, checkpoint, caches, optimiser);
these names are kept here for callers that import them from this module.
"""

from __future__ import annotations

from .train.control import Control, Stop  # noqa: F401
from .train.loop import run, train  # noqa: F401
from .train.state import DTYPES, TrainState, build_state  # noqa: F401

__all__ = ["train", "build_state", "run", "TrainState", "Stop", "Control", "DTYPES"]
