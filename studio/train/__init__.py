"""The training engine, by responsibility (docs/architecture.md, "The engine"):

state.py (build_state → TrainState), step.py (the loss), loop.py (run, train), sampling.py,
checkpoint.py, caches.py, lora.py, optim.py, timesteps.py, output.py, control.py.
"""

from .loop import train

__all__ = ["train"]
