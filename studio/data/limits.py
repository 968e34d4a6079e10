"""What an upload may be and why an item is refused: the limits, the reason codes, the
refusal raised while reading (`Reject`) and the refusal reported (`Rejected`). Shared by the
modules that read uploads (sources.py), decode them (decode.py) and import them (ingest.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Reason codes a rejected item can carry; the UI and the report key off these.
CODES = {
    "not_an_image": "the content is not an image (whatever its extension says)",
    "corrupt": "the file is damaged or truncated and cannot be fully decoded",
    "too_many_pixels": "the image has more pixels than the upload limit",
    "too_small": "the image's short side is below the minimum size",
    "unsupported_format": "an image format this installation cannot read",
    "caption_encoding": "the caption file is not readable UTF-8 (or UTF-16) text",
    "duplicate": "the same image is already in the dataset",
    "empty_file": "the file is empty (0 bytes)",
    "file_too_large": "the file is larger than the per-file limit",
    "too_many_files": "the dataset already holds as many images as it may",
    "upload_too_large": "the upload is larger than the per-upload limit",
    "too_many_entries": "the zip has more entries than the limit",
    "zip_bomb": "the zip expands beyond the unpacked-size limit",
    "nested_zip": "archives inside archives are not opened",
    "unsafe_path": "an archive entry name that points outside the dataset",
    "symlink": "symbolic links are not followed",
    "junk": "operating-system metadata, not a photo",
    "orphan_caption": "a caption with no image of the same name",
}


@dataclass(frozen=True)
class IngestLimits:
    """Explicit upload limits; each one is named in the rejection it causes."""

    max_files: int = 5000  # images per dataset (existing + new)
    max_total_bytes: int = 4 * 1024**3  # bytes read in one upload (all files, zip entries uncompressed)
    max_file_bytes: int = 100 * 1024**2  # one file; a 100 MP JPEG is ~30 MB
    max_pixels: int = 100_000_000  # 100 MP covers phone and full-frame cameras; above is a bomb or a scan
    min_side: int = 256  # below this a FLUX LoRA learns mostly upscaling blur
    max_zip_entries: int = 20_000
    max_zip_uncompressed_bytes: int = 8 * 1024**3  # real archives compress 1-3x (Sonar RSPEC-5042)
    max_caption_chars: int = 2000  # ~500 tokens: about the longest text-encoder limit a family has (512)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"IngestLimits.{f.name} must be a positive integer, got {value!r}")


@dataclass
class Rejected:
    name: str  # the item as the user named it, e.g. "photos.zip:holiday/a.jpg"
    code: str  # a key of CODES
    message: str  # what, which file, what to do
    values: dict = field(default_factory=dict)  # the real numbers in the message, for translations



class Reject(Exception):
    """Why an item was refused: `code` (a key of ingest.CODES), `message` (English, what/which file/
    what to do) and `values` (the real numbers, for the UI's translation of the reason)."""

    def __init__(self, code: str, message: str, values: dict | None = None):
        super().__init__(message)
        self.code, self.message, self.values = code, message, dict(values or {})


def mb(n: int, unit: bool = True) -> str:
    """Bytes as megabytes for people ('100 MB')."""
    text = f"{n / 1024**2:,.0f}" if n >= 1024**2 else f"{n / 1024**2:.2f}"
    return f"{text} MB" if unit else text
