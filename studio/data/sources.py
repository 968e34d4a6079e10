"""Collecting an upload's entries from files, folders and zip archives, each read lazily under
the upload's limits: zips are streamed under byte and entry caps instead of extracted, links are
never followed, operating-system metadata is skipped. Entries that cannot be used become
`Rejected` items; the rest go on to ingest.py."""

from __future__ import annotations

import os
import re
import stat
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .decode import sniff
from studio.core.paths import IMAGE_SUFFIXES

from .files import CAPTION_EXT
from .limits import IngestLimits, Reject, Rejected, mb

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}


def _unsafe_zip_name(name: str) -> str | None:
    """Why a zip entry name is unsafe, or None. zipfile.Path does not sanitise (cpython #130537)."""
    if "\\" in name:
        return "contains a backslash (a Windows path that could climb directories)"
    if name.startswith("/"):
        return "is an absolute path"
    if re.match(r"^[A-Za-z]:", name):
        return "starts with a drive letter"
    if ".." in name.split("/"):
        return "contains '..' (zip-slip)"
    return None


def _is_junk(relpath: str) -> bool:
    parts = relpath.split("/")
    base = parts[-1].lower()
    return "__MACOSX" in parts or base in JUNK_NAMES or base.startswith("._")


@dataclass
class Entry:
    name: str  # shown to the user
    key: str  # relative path without extension: pairs "a.jpg" with "a.txt"
    basename: str
    read: Callable[[], bytes]


class Budget:
    """Bytes read so far in this upload; enforces max_total_bytes across every source."""

    def __init__(self, limits: IngestLimits):
        self.limits, self.total = limits, 0

    def take(self, n: int, name: str) -> None:
        self.total += n
        if self.total > self.limits.max_total_bytes:
            raise Reject("upload_too_large", f"{name} was not read: this upload passed its limit of "
                          f"{mb(self.limits.max_total_bytes)}. Upload the rest separately.",
                          {"limit_mb": mb(self.limits.max_total_bytes, unit=False)})


def _read_file(path: Path, name: str, limits: IngestLimits, budget: Budget) -> bytes:
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise Reject("file_too_large", f"{name} is {mb(size)}, over the limit of {mb(limits.max_file_bytes)} "
                      "per file. Downscale or re-compress it.", {"limit_mb": mb(limits.max_file_bytes, unit=False)})
    budget.take(size, name)
    return path.read_bytes()


def _zip_entries(path: Path, label: str, limits: IngestLimits, budget: Budget, stack: ExitStack,
                 rejected: list[Rejected]) -> Iterator[Entry]:
    try:
        zf = stack.enter_context(zipfile.ZipFile(path))
        infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        rejected.append(Rejected(label, "corrupt", f"{label} is not a readable zip archive ({exc}). "
                                 "Re-create the archive or upload the images directly."))
        return
    if len(infos) > limits.max_zip_entries:
        rejected.append(Rejected(label, "too_many_entries", f"{label} has {len(infos):,} entries, more than the "
                                 f"{limits.max_zip_entries:,} a zip may hold; nothing in it was read. "
                                 "Split the archive.", {"limit": f"{limits.max_zip_entries:,}"}))
        return
    unzipped = [0]  # bytes actually decompressed from this zip, counted while streaming

    def reader(info: zipfile.ZipInfo, name: str) -> Callable[[], bytes]:
        def read() -> bytes:
            if unzipped[0] > limits.max_zip_uncompressed_bytes:
                raise Reject("zip_bomb", f"{name} was not read: {label} already unpacked to more than "
                              f"{mb(limits.max_zip_uncompressed_bytes)}.",
                              {"limit_mb": mb(limits.max_zip_uncompressed_bytes, unit=False)})
            if info.file_size > limits.max_file_bytes:
                raise Reject("file_too_large", f"{name} declares {mb(info.file_size)}, over the limit of "
                              f"{mb(limits.max_file_bytes)} per file.",
                              {"limit_mb": mb(limits.max_file_bytes, unit=False)})
            chunks, size = [], 0
            try:
                with zf.open(info) as fh:  # headers can lie: count real bytes as they stream
                    while chunk := fh.read(1 << 20):
                        size += len(chunk)
                        unzipped[0] += len(chunk)
                        if unzipped[0] > limits.max_zip_uncompressed_bytes:
                            raise Reject("zip_bomb", f"{name} unpacks {label} to more than "
                                          f"{mb(limits.max_zip_uncompressed_bytes)} (from {info.compress_size:,} "
                                          "compressed bytes): a zip bomb or a huge archive. Entries after it "
                                          "were not read; split the archive.",
                                          {"limit_mb": mb(limits.max_zip_uncompressed_bytes, unit=False)})
                        if size > limits.max_file_bytes:
                            raise Reject("file_too_large", f"{name} is over the limit of "
                                          f"{mb(limits.max_file_bytes)} per file. Downscale or re-compress it.",
                                          {"limit_mb": mb(limits.max_file_bytes, unit=False)})
                        chunks.append(chunk)
            except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, NotImplementedError) as exc:
                raise Reject("corrupt", f"{name} cannot be read from {label} ({exc}); "
                              "password-protected or damaged entries are not supported.") from None
            budget.take(size, name)
            return b"".join(chunks)

        return read

    for info in infos:
        name = f"{label}:{info.filename}"
        if stat.S_ISLNK(info.external_attr >> 16):
            rejected.append(Rejected(name, "symlink", f"{name} is a symbolic link; links are never followed. "
                                     "Put the real image in the archive."))
            continue
        why = _unsafe_zip_name(info.filename)
        if why:
            rejected.append(Rejected(name, "unsafe_path", f"{name} {why}; it was skipped so nothing lands "
                                     "outside the dataset folder. Re-create the zip from a plain folder."))
            continue
        if info.is_dir():
            continue
        if _is_junk(info.filename):
            rejected.append(Rejected(name, "junk", f"{name} is operating-system metadata, not a photo; "
                                     "skipped (nothing to do)."))
            continue
        base = info.filename.rsplit("/", 1)[-1]
        yield Entry(name, os.path.splitext(info.filename)[0], base, reader(info, name))


def _head(path: Path) -> str:
    with path.open("rb") as fh:
        return sniff(fh.read(64))


def collect(sources, limits: IngestLimits, budget: Budget, stack: ExitStack,
             rejected: list[Rejected]) -> Iterator[Entry]:
    for source in sources:
        path = Path(source)
        label = path.name
        if path.is_symlink():
            rejected.append(Rejected(label, "symlink", f"{label} is a symbolic link; upload the file itself."))
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
                dirnames.sort()
                for fname in sorted(filenames):
                    full = Path(dirpath, fname)
                    rel = full.relative_to(path).as_posix()
                    name = f"{label}/{rel}"
                    if full.is_symlink():
                        rejected.append(Rejected(name, "symlink", f"{name} is a symbolic link; links are "
                                                 "not followed. Copy the real file into the folder."))
                    elif _is_junk(rel):
                        rejected.append(Rejected(name, "junk", f"{name} is operating-system metadata; skipped."))
                    else:
                        yield Entry(name, os.path.splitext(rel)[0], fname,
                                     lambda full=full, name=name: _read_file(full, name, limits, budget))
        elif not path.is_file():
            rejected.append(Rejected(label, "not_an_image", f"{source} does not exist or is not a regular file."))
        elif _is_junk(label):
            rejected.append(Rejected(label, "junk", f"{label} is operating-system metadata; skipped."))
        elif path.suffix.lower() != CAPTION_EXT and _head(path) == "zip":
            if path.suffix.lower() in IMAGE_SUFFIXES:
                # The name says image, the bytes say archive: trust neither (HARDENING_NOTES §1).
                rejected.append(Rejected(label, "not_an_image", f"{label} is named like an image but is a zip "
                                         "archive; it was not opened. Rename it to .zip to import its contents."))
            else:
                yield from _zip_entries(path, label, limits, budget, stack, rejected)
        else:
            yield Entry(label, path.stem, label, lambda path=path, label=label: _read_file(path, label, limits, budget))
