"""Small copies of a dataset's images for the galleries.

A gallery of full-size photos makes every dataset pick copy and hash megabytes on the server and
decode them in the browser (seconds of CPU for a few dozen photos, while a job trains). The
galleries show these thumbnails instead; training always reads images/. A thumbnail is made once
and made again only when its image changes.
"""

from __future__ import annotations

import os
from pathlib import Path

THUMBS_DIR = ".thumbs"
SIDE = 384  # px, the longer side: sharp in a six-column gallery and in its preview
QUALITY = 85


def thumbnail(image: Path) -> Path:
    """The thumbnail of a dataset image (`<dataset>/images/x.png` -> `<dataset>/.thumbs/x.jpg`);
    the image itself if no thumbnail can be written (a read-only folder, a broken file)."""
    from PIL import Image

    thumb = image.parent.parent / THUMBS_DIR / f"{image.stem}.jpg"
    try:
        if thumb.is_file() and thumb.stat().st_mtime_ns >= image.stat().st_mtime_ns:
            return thumb
        thumb.parent.mkdir(exist_ok=True)
        with Image.open(image) as im:
            im.draft("RGB", (SIDE, SIDE))
            small = im.convert("RGB")
            small.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
        tmp = thumb.with_name(f".{thumb.name}.tmp")
        small.save(tmp, "JPEG", quality=QUALITY)
        os.replace(tmp, thumb)
        return thumb
    except (OSError, ValueError, Image.DecompressionBombError):
        return image


def remove_thumbnail(dataset_dir: Path, stem: str) -> None:
    (Path(dataset_dir) / THUMBS_DIR / f"{stem}.jpg").unlink(missing_ok=True)
