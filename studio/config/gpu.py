"""Which memory tier a GPU gets. The smallest GPU each tier needs is a fact of the model family
(`Family.tier_min_gib`, `Family.tier_for`); the first registered family (FLUX.1) is asked when
none is named. torch is imported only inside detect_tier (the UI asks nvidia-smi instead and
calls tier_for_memory)."""

from __future__ import annotations

import shutil
import subprocess
from functools import lru_cache

from studio.core.vocab import MEMORY_TIERS  # noqa: F401  (the one tier order)


def tier_for_memory(gib: float | None, family=None, variant: str = "") -> str:
    """The memory tier for a GPU with `gib` GiB in total (None: no GPU, the cpu tier). `family`: a
    Family or its name (default: the first registered, FLUX.1). A GPU too small for the family
    still gets the lowest tier here; `Family.tier_for` tells whether it fits at all."""
    from studio.families import families, get_family

    if family is None:
        family = families()[0]
    elif isinstance(family, str):
        family = get_family(family)
    return family.tier_for(gib, variant) or "8gb"


def detect_tier(family=None, variant: str = "") -> str:
    """The memory tier for the first visible GPU, or 'cpu'."""
    try:
        import torch
    except ImportError:
        return "cpu"
    if not torch.cuda.is_available():
        return "cpu"
    return tier_for_memory(torch.cuda.get_device_properties(0).total_memory / 2**30, family, variant)


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
