"""Safe dataset ingestion: images, captions, zips and folders into a dataset folder.

Layout written (see docs/architecture.md):
    <dataset>/originals/<stem>.<ext>   uploads byte for byte, under sanitised names
    <dataset>/images/<stem>.png         normalised RGB copy that training reads
    <dataset>/images/<stem>.txt         caption (UTF-8) when one was given
    <dataset>/report.json               accepted / rejected items, merged across uploads

Nothing about an upload is trusted: names are sanitised, content is sniffed (magic bytes,
then Pillow restricted to an allow-list of decoders), every image is fully decoded, and zip
archives are streamed under byte and entry caps instead of extracted. Every item that can't
be used becomes a `Rejected(name, code, message)`; the rest of the upload is still imported.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import stat
import time
import unicodedata
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from studio.core.paths import IMAGE_SUFFIXES

# supported_formats is re-exported: callers ask the ingestion module what it accepts.
from .decode import _Reject, decode_caption, decode_image, sniff, supported_formats  # noqa: F401

REPORT_NAME = "report.json"
CAPTION_EXT = ".txt"
JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}

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
    max_caption_chars: int = 2000  # ~500 T5 tokens, the FLUX.1-dev limit is 512

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


@dataclass
class Accepted:
    name: str
    stem: str
    original: str  # path relative to the dataset folder
    image: str  # relative path of the normalised PNG
    width: int
    height: int
    format: str
    sha256: str  # of the original bytes
    pixel_sha256: str  # of the decoded RGB pixels, catches re-encoded copies
    caption: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class IngestResult:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def codes(self) -> dict[str, str]:
        """name -> reason code, handy for tests and summaries."""
        return {r.name: r.code for r in self.rejected}

    def summary(self) -> str:
        lines = [f"{len(self.accepted)} image(s) imported, {len(self.rejected)} item(s) rejected."]
        lines += [f"  rejected {r.name}: {r.message}" for r in self.rejected]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class DatasetItem:
    stem: str
    image: Path
    caption: str | None


# ---------------------------------------------------------------- names and paths


def sanitise_name(name: str, fallback: str = "image") -> str:
    """A file-name component safe on every OS: ASCII letters, digits, '-', '_' and '.'."""
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    name = re.sub(r"_{2,}", "_", name).strip("._-")
    return name[:100] or fallback


def _inside(root: Path, relative: str) -> Path:
    """root/relative, refusing anything that resolves outside root."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise _Reject("unsafe_path", f"refusing to write {relative!r} outside the dataset folder")
    return target


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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


# ---------------------------------------------------------------- collecting entries


@dataclass
class _Entry:
    name: str  # shown to the user
    key: str  # relative path without extension: pairs "a.jpg" with "a.txt"
    basename: str
    read: Callable[[], bytes]


class _Budget:
    """Bytes read so far in this upload; enforces max_total_bytes across every source."""

    def __init__(self, limits: IngestLimits):
        self.limits, self.total = limits, 0

    def take(self, n: int, name: str) -> None:
        self.total += n
        if self.total > self.limits.max_total_bytes:
            raise _Reject("upload_too_large", f"{name} was not read: this upload passed its limit of "
                          f"{_mb(self.limits.max_total_bytes)}. Upload the rest separately.",
                          {"limit_mb": _mb(self.limits.max_total_bytes, unit=False)})


def _read_file(path: Path, name: str, limits: IngestLimits, budget: _Budget) -> bytes:
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise _Reject("file_too_large", f"{name} is {_mb(size)}, over the limit of {_mb(limits.max_file_bytes)} "
                      "per file. Downscale or re-compress it.", {"limit_mb": _mb(limits.max_file_bytes, unit=False)})
    budget.take(size, name)
    return path.read_bytes()


def _zip_entries(path: Path, label: str, limits: IngestLimits, budget: _Budget, stack: ExitStack,
                 rejected: list[Rejected]) -> Iterator[_Entry]:
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
                raise _Reject("zip_bomb", f"{name} was not read: {label} already unpacked to more than "
                              f"{_mb(limits.max_zip_uncompressed_bytes)}.",
                              {"limit_mb": _mb(limits.max_zip_uncompressed_bytes, unit=False)})
            if info.file_size > limits.max_file_bytes:
                raise _Reject("file_too_large", f"{name} declares {_mb(info.file_size)}, over the limit of "
                              f"{_mb(limits.max_file_bytes)} per file.",
                              {"limit_mb": _mb(limits.max_file_bytes, unit=False)})
            chunks, size = [], 0
            try:
                with zf.open(info) as fh:  # headers can lie: count real bytes as they stream
                    while chunk := fh.read(1 << 20):
                        size += len(chunk)
                        unzipped[0] += len(chunk)
                        if unzipped[0] > limits.max_zip_uncompressed_bytes:
                            raise _Reject("zip_bomb", f"{name} unpacks {label} to more than "
                                          f"{_mb(limits.max_zip_uncompressed_bytes)} (from {info.compress_size:,} "
                                          "compressed bytes): a zip bomb or a huge archive. Entries after it "
                                          "were not read; split the archive.",
                                          {"limit_mb": _mb(limits.max_zip_uncompressed_bytes, unit=False)})
                        if size > limits.max_file_bytes:
                            raise _Reject("file_too_large", f"{name} is over the limit of "
                                          f"{_mb(limits.max_file_bytes)} per file. Downscale or re-compress it.",
                                          {"limit_mb": _mb(limits.max_file_bytes, unit=False)})
                        chunks.append(chunk)
            except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, NotImplementedError) as exc:
                raise _Reject("corrupt", f"{name} cannot be read from {label} ({exc}); "
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
        yield _Entry(name, os.path.splitext(info.filename)[0], base, reader(info, name))


def _head(path: Path) -> str:
    with path.open("rb") as fh:
        return sniff(fh.read(64))


def _collect(sources, limits: IngestLimits, budget: _Budget, stack: ExitStack,
             rejected: list[Rejected]) -> Iterator[_Entry]:
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
                        yield _Entry(name, os.path.splitext(rel)[0], fname,
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
            yield _Entry(label, path.stem, label, lambda path=path, label=label: _read_file(path, label, limits, budget))


# ---------------------------------------------------------------- report.json


def _load_report(dataset_dir: Path) -> dict:
    path = dataset_dir / REPORT_NAME
    try:
        report = json.loads(path.read_text("utf-8"))
        if isinstance(report, dict):
            report.setdefault("items", {})
            report.setdefault("rejected", [])
            report.setdefault("uploads", [])
            return report
    except (OSError, ValueError):
        pass
    return {"version": 1, "items": {}, "rejected": [], "uploads": []}


def _save_report(dataset_dir: Path, report: dict) -> None:
    report["rejected"] = report["rejected"][-5000:]  # a history, not an unbounded log
    _write_atomic(dataset_dir / REPORT_NAME, json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8"))


# ---------------------------------------------------------------- the public API


def _mb(n: int, unit: bool = True) -> str:
    """Bytes as megabytes for people ('100 MB')."""
    text = f"{n / 1024**2:,.0f}" if n >= 1024**2 else f"{n / 1024**2:.2f}"
    return f"{text} MB" if unit else text


def _unique_stem(wanted: str, taken: set[str]) -> str:
    stem, n = wanted, 2
    while stem.lower() in taken:  # case-insensitive: macOS and Windows folders are
        stem, n = f"{wanted}_{n}", n + 1
    taken.add(stem.lower())
    return stem


def ingest(sources, dataset_dir: Path, limits: IngestLimits = IngestLimits(),
           background=(255, 255, 255)) -> IngestResult:
    """Import images / captions / zips / folders into dataset_dir; see the module docstring."""
    dataset_dir = Path(dataset_dir)
    originals, images = dataset_dir / "originals", dataset_dir / "images"
    originals.mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    report = _load_report(dataset_dir)
    result = IngestResult()
    taken = {p.stem.lower() for p in images.iterdir()} | {p.stem.lower() for p in originals.iterdir()}
    seen_bytes = {v.get("sha256"): k for k, v in report["items"].items()}
    seen_pixels = {v.get("pixel_sha256"): k for k, v in report["items"].items()}
    preexisting = {p.stem for p in images.glob("*.png")}
    existing_count = len(preexisting)
    budget = _Budget(limits)

    with ExitStack() as stack:
        entries = list(_collect(sources if isinstance(sources, (list, tuple)) else [sources],
                                limits, budget, stack, result.rejected))
        captions: dict[str, _Entry] = {}
        for e in entries:
            if e.basename.lower().endswith(CAPTION_EXT):
                if e.key in captions:
                    result.rejected.append(Rejected(e.name, "duplicate", f"{e.name}: a second caption with the "
                                                    f"same name as {captions[e.key].name}; the first one was used."))
                else:
                    captions[e.key] = e
        used_captions: set[str] = set()
        for entry in entries:
            if entry.basename.lower().endswith(CAPTION_EXT):
                continue
            try:
                accepted = _ingest_one(entry, dataset_dir, limits, background, taken, seen_bytes,
                                       seen_pixels, existing_count + len(result.accepted))
            except _Reject as r:
                result.rejected.append(Rejected(entry.name, r.code, r.message, r.values))
                if entry.key in captions:  # its caption goes with it, said explicitly
                    used_captions.add(entry.key)
                    _caption_of_refused(captions[entry.key], entry, r, dataset_dir, limits, result)
                continue
            cap_entry = captions.get(entry.key)
            if cap_entry is not None:
                used_captions.add(entry.key)
                try:
                    data = cap_entry.read()
                    _write_atomic(_inside(dataset_dir, f"originals/{accepted.stem}{CAPTION_EXT}"), data)
                    text, notes = decode_caption(data, cap_entry.name, limits.max_caption_chars)
                    _write_atomic(_inside(dataset_dir, f"images/{accepted.stem}{CAPTION_EXT}"), text.encode("utf-8"))
                    accepted.caption = text
                    accepted.warnings += notes
                    result.warnings += notes
                except _Reject as r:
                    result.rejected.append(Rejected(cap_entry.name, r.code, r.message, r.values))
            result.accepted.append(accepted)
        for key, cap_entry in captions.items():
            if key not in used_captions:
                _attach_orphan_caption(cap_entry, dataset_dir, limits, result, preexisting)

    for a in result.accepted:
        report["items"][a.stem] = dataclasses.asdict(a)
    report["rejected"] += [dataclasses.asdict(r) for r in result.rejected]
    report["uploads"].append({"time": time.time(), "accepted": len(result.accepted),
                              "rejected": len(result.rejected), "limits": dataclasses.asdict(limits)})
    _save_report(dataset_dir, report)
    return result


def _ingest_one(entry: _Entry, dataset_dir: Path, limits: IngestLimits, background, taken: set[str],
                seen_bytes: dict, seen_pixels: dict, count: int) -> Accepted:
    if count >= limits.max_files:
        raise _Reject("too_many_files", f"{entry.name} was not imported: the dataset already holds "
                      f"{limits.max_files:,} images, as many as a dataset may. Remove some first.",
                      {"limit": f"{limits.max_files:,}"})
    data = entry.read()
    if not data:
        raise _Reject("empty_file", f"{entry.name} is empty (0 bytes): the upload or copy was interrupted. "
                      "Upload the file again.")
    sha = hashlib.sha256(data).hexdigest()
    if sha in seen_bytes:
        raise _Reject("duplicate", f"{entry.name} is byte-identical to '{seen_bytes[sha]}' already in the "
                      "dataset; skipped (nothing to do).", {"kept": seen_bytes[sha]})
    rgb, fmt = decode_image(data, entry.name, limits, background)
    pixel_sha = hashlib.sha256(f"{rgb.width}x{rgb.height}".encode() + rgb.tobytes()).hexdigest()
    if pixel_sha in seen_pixels:
        raise _Reject("duplicate", f"{entry.name} has exactly the same pixels as '{seen_pixels[pixel_sha]}' "
                      "already in the dataset; skipped (nothing to do).", {"kept": seen_pixels[pixel_sha]})
    stem = _unique_stem(sanitise_name(os.path.splitext(entry.basename)[0]), taken)
    ext = sanitise_name(os.path.splitext(entry.basename)[1].lower(), fallback="") or f".{fmt.lower()}"
    ext = ext if ext.startswith(".") else f".{ext}"
    original = f"originals/{stem}{ext if ext != CAPTION_EXT else '.' + fmt.lower()}"
    _write_atomic(_inside(dataset_dir, original), data)  # untouched bytes
    png = f"images/{stem}.png"
    buf = io.BytesIO()
    rgb.save(buf, "PNG")
    _write_atomic(_inside(dataset_dir, png), buf.getvalue())
    seen_bytes[sha] = stem
    seen_pixels[pixel_sha] = stem
    return Accepted(entry.name, stem, original, png, rgb.width, rgb.height, fmt, sha, pixel_sha)


def _caption_of_refused(cap: _Entry, image: _Entry, why: _Reject, dataset_dir: Path, limits: IngestLimits,
                        result: IngestResult) -> None:
    """The caption of a refused image. A duplicate's caption goes to the copy that was kept, when
    that copy has none; otherwise it is skipped with its image, said explicitly."""
    kept = why.values.get("kept") if why.code == "duplicate" else None
    if kept and not _stem_path(dataset_dir, kept, CAPTION_EXT).is_file():
        try:
            text, notes = decode_caption(cap.read(), cap.name, limits.max_caption_chars)
        except _Reject as r:
            result.rejected.append(Rejected(cap.name, r.code, r.message, r.values))
            return
        if text:
            set_caption(dataset_dir, kept, text)
            for accepted in result.accepted:  # the kept copy may be from this very upload
                if accepted.stem == kept:
                    accepted.caption = text
            result.warnings += notes + [f"{cap.name}: its image duplicates '{kept}', which had no caption, "
                                        f"so '{kept}' now has this one."]
            return
    reason = (f"the copy already in the dataset ('{kept}') has its own caption" if kept
              else f"its image {image.name} was rejected ({why.code})")
    result.rejected.append(Rejected(cap.name, "orphan_caption", f"{cap.name} was skipped because {reason}.",
                                    {"kept": kept} if kept else {}))


def _attach_orphan_caption(entry: _Entry, dataset_dir: Path, limits: IngestLimits, result: IngestResult,
                           preexisting: set[str]) -> None:
    """A caption uploaded on its own updates the image with that stem, if the dataset already had one."""
    stem = sanitise_name(os.path.splitext(entry.basename)[0])
    if stem not in preexisting:
        result.rejected.append(Rejected(entry.name, "orphan_caption", f"{entry.name} has no image of the same "
                                        "name in this upload or the dataset. Name captions like their image "
                                        "(photo.jpg + photo.txt)."))
        return
    try:
        text, notes = decode_caption(entry.read(), entry.name, limits.max_caption_chars)
    except _Reject as r:
        result.rejected.append(Rejected(entry.name, r.code, r.message, r.values))
        return
    set_caption(dataset_dir, stem, text)
    result.warnings += notes + [f"{entry.name}: replaced the caption of existing image '{stem}'."]


def _stem_path(dataset_dir: Path, stem: str, suffix: str) -> Path:
    if stem != sanitise_name(stem):
        raise ValueError(f"{stem!r} is not a dataset item name (letters, digits, '.', '-', '_' only)")
    return _inside(Path(dataset_dir), f"images/{stem}{suffix}")


def list_dataset(dataset_dir: Path) -> list[DatasetItem]:
    """Training items in name order: normalised image and its caption (None when missing)."""
    images = Path(dataset_dir) / "images"
    items = []
    for png in sorted(images.glob("*.png")) if images.is_dir() else []:
        txt = png.with_suffix(CAPTION_EXT)
        # errors="replace": a hand-edited caption must not crash listing; ingest checks encodings
        caption = txt.read_text("utf-8-sig", errors="replace").strip() if txt.is_file() else None
        items.append(DatasetItem(png.stem, png, caption))
    return items


def remove_item(dataset_dir: Path, stem: str) -> bool:
    """Delete an item's image, caption and original(s); True if anything was removed."""
    dataset_dir = Path(dataset_dir)
    targets = [_stem_path(dataset_dir, stem, ".png"), _stem_path(dataset_dir, stem, CAPTION_EXT)]
    targets += [p for p in (dataset_dir / "originals").glob(f"{stem}.*") if p.stem == stem]
    removed = False
    for p in targets:
        if p.is_file():
            p.unlink()
            removed = True
    report = _load_report(dataset_dir)
    if report["items"].pop(stem, None) is not None:
        _save_report(dataset_dir, report)
    return removed


def set_caption(dataset_dir: Path, stem: str, text: str | None) -> None:
    """Write (or, for empty text, delete) an item's caption."""
    if not _stem_path(dataset_dir, stem, ".png").is_file():
        raise FileNotFoundError(f"no image '{stem}' in {dataset_dir}/images")
    txt = _stem_path(dataset_dir, stem, CAPTION_EXT)
    text = (text or "").strip()
    if text:
        _write_atomic(txt, text.encode("utf-8"))
    elif txt.is_file():
        txt.unlink()
