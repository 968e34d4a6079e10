"""Where the studio keeps things, and what it counts as an image: one place for each fact."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "STUDIO_DATA"
DEFAULT_DATA_DIR = "studio_data"
DATA_DIR_HELP = f"studio data folder (default: ${DATA_ENV} or ./{DEFAULT_DATA_DIR})"

# File names the studio reads as images: uploads, zip members and training folders. A suffix
# alone never decides: the bytes are decoded and checked (studio/data/decode.py).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".webp", ".gif", ".bmp", ".tif", ".tiff",
                            ".avif", ".heic", ".heif"})


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: `explicit` if given, else $STUDIO_DATA, else ./studio_data."""
    return Path(explicit or os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


