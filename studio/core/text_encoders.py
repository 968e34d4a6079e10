"""Where the text encoders run while captions are cached: one rule for the engine and the plan.

On the GPU when they fit in its free memory with room to run (1.5 GiB plus a tenth of their size:
activations, the allocator, other programs), else on the CPU: correct and slower, and only once,
since the embeddings are cached. No torch: the plan imports this at start-up.
"""

from __future__ import annotations

GIB = 2**30
MARGIN_GIB = 1.5      # fixed room beside the encoders' weights
MARGIN_SHARE = 0.10   # and room in proportion to them
# Assumed throughput of a desktop CPU running a bf16 text encoder (PyTorch, all cores): an
# estimate, not a measurement; CPUs without native bf16 are slower.
CPU_TFLOPS = 0.2


def encoders_fit(encoder_bytes: float, free_bytes: float | None) -> bool:
    """Whether text encoders of `encoder_bytes` fit in `free_bytes` of free GPU memory, margin included."""
    return free_bytes is not None and needed_bytes(encoder_bytes) <= free_bytes


def needed_bytes(encoder_bytes: float) -> float:
    """Free GPU memory the encoders need to run there: their weights plus the margin."""
    return encoder_bytes * (1 + MARGIN_SHARE) + MARGIN_GIB * GIB


def cpu_encoding_seconds(parameters: float, tokens: int, captions: int) -> float:
    """Estimated seconds to encode `captions` captions of `tokens` tokens on the CPU: two FLOPs per
    parameter and token, at the assumed CPU_TFLOPS."""
    return 2 * parameters * tokens * captions / (CPU_TFLOPS * 1e12)
