"""Which memory tier a GPU gets. torch is imported only inside detect_tier (the UI asks
nvidia-smi instead and calls tier_for_memory)."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache

from studio.core.vocab import MEMORY_TIERS  # noqa: F401  (the one tier order)

# The smallest GPU (total GiB) each tier is chosen for. The FLUX.1 transformer has 11.90 B
# parameters, nearly all in linear layers: its weights alone take 22.2 GiB in bf16, 11.1 GiB in
# int8 and 5.7 GiB in NF4 (block scales included). bf16 therefore cannot train on a 24 GB card
# (23.99 GiB, before the CUDA context, LoRA, optimiser and activations): such a card gets the
# 16 GB tier. Below 11 GiB only the 8 GB tier's block offload fits.
TIER_MIN_GIB = (("24gb", 26.0), ("16gb", 15.0), ("12gb", 11.0))


def tier_for_memory(gib: float | None) -> str:
    """The memory tier for a GPU with `gib` GiB in total (None: no GPU, the cpu tier)."""
    if gib is None:
        return "cpu"
    return next((tier for tier, need in TIER_MIN_GIB if gib >= need), "8gb")


def detect_tier() -> str:
    """The memory tier for the first visible GPU, or 'cpu'."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if not torch.cuda.is_available():
        return "cpu"
    return tier_for_memory(torch.cuda.get_device_properties(0).total_memory / 2**30)


@lru_cache(maxsize=1)
def detect_gpu() -> tuple[str, float] | None:
    """(name, GiB) of the first NVIDIA GPU via nvidia-smi: no torch import in the UI process.
    Asked once per process: every page load shows it."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        gpu_name, mib = out.splitlines()[0].rsplit(",", 1)
        return gpu_name.strip(), round(float(mib) / 1024, 1)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
