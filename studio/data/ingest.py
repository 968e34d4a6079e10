"""Safe dataset ingestion: images, captions, zips and folders into a dataset folder.

Layout written (see docs/architecture.md):
    <dataset>/originals/<stem>.<ext>   uploads byte for byte, under sanitised names
    <dataset>/images/<stem>.png         normalised RGB copy that training reads
    <dataset>/images/<stem>.txt         caption (UTF-8) when one was given
    <dataset>/images/control/<stem>.png an edit pair's control ("before") image (pair_import.py)
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
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

# Re-exported: callers ask the ingestion module what it accepts and how a dataset's files are kept.
from .decode import decode_caption, decode_image, sniff, supported_formats  # noqa: F401
from .files import (CAPTION_EXT, REPORT_NAME, DatasetItem, inside, list_dataset, load_report,  # noqa: F401
                    remove_item, sanitise_name, save_report, set_caption, stem_path, write_atomic)
from .limits import CODES, IngestLimits, Reject, Rejected  # noqa: F401
from .pair_import import attach_controls, pair_roles
from .sources import Budget, Entry, collect


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
    control: str | None = None  # relative path of its control ("before") image in an edit dataset


@dataclass
class IngestResult:
    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    pairs: list[str] = field(default_factory=list)  # stems imported with their control image

    def codes(self) -> dict[str, str]:
        """name -> reason code, handy for tests and summaries."""
        return {r.name: r.code for r in self.rejected}

    def summary(self) -> str:
        pairs = f" ({len(self.pairs)} edit pair(s))" if self.pairs else ""
        lines = [f"{len(self.accepted)} image(s) imported{pairs}, {len(self.rejected)} item(s) rejected."]
        lines += [f"  rejected {r.name}: {r.message}" for r in self.rejected]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    report = load_report(dataset_dir)
    result = IngestResult()
    taken = {p.stem.lower() for p in images.iterdir()} | {p.stem.lower() for p in originals.iterdir()}
    seen_bytes = {v.get("sha256"): k for k, v in report["items"].items()}
    seen_pixels = {v.get("pixel_sha256"): k for k, v in report["items"].items()}
    preexisting = {p.stem for p in images.glob("*.png")}
    existing_count = len(preexisting)
    budget = Budget(limits)

    with ExitStack() as stack:
        entries = list(collect(sources if isinstance(sources, (list, tuple)) else [sources],
                                limits, budget, stack, result.rejected))
        captions: dict[str, Entry] = {}
        for e in entries:
            if e.basename.lower().endswith(CAPTION_EXT):
                if e.key in captions:
                    result.rejected.append(Rejected(e.name, "duplicate", f"{e.name}: a second caption with the "
                                                    f"same name as {captions[e.key].name}; the first one was used."))
                else:
                    captions[e.key] = e
        used_captions: set[str] = set()
        roles = pair_roles(entries)  # None: an ordinary upload
        pair_targets: dict[str, Accepted] = {}
        refused_targets: dict[str, str] = {}
        for entry in entries:
            if entry.basename.lower().endswith(CAPTION_EXT):
                continue
            role = roles.get(entry.key) if roles else None
            if role is not None and role.kind == "control":
                continue  # written with its target below
            cap_key = entry.key
            if role is not None and cap_key not in captions:
                cap_key = role.pair_key  # a sidecar beside the control/ and target/ folders
            try:
                accepted = _ingest_one(entry, dataset_dir, limits, background, taken, seen_bytes,
                                       seen_pixels, existing_count + len(result.accepted))
            except Reject as r:
                result.rejected.append(Rejected(entry.name, r.code, r.message, r.values))
                if role is not None:
                    refused_targets[role.pair_key] = r.code
                if cap_key in captions:  # its caption goes with it, said explicitly
                    used_captions.add(cap_key)
                    _caption_of_refused(captions[cap_key], entry, r, dataset_dir, limits, result)
                continue
            if role is not None:
                pair_targets[role.pair_key] = accepted
            cap_entry = captions.get(cap_key)
            if cap_entry is not None:
                used_captions.add(cap_key)
                try:
                    data = cap_entry.read()
                    write_atomic(inside(dataset_dir, f"originals/{accepted.stem}{CAPTION_EXT}"), data)
                    text, notes = decode_caption(data, cap_entry.name, limits.max_caption_chars)
                    write_atomic(inside(dataset_dir, f"images/{accepted.stem}{CAPTION_EXT}"), text.encode("utf-8"))
                    accepted.caption = text
                    accepted.warnings += notes
                    result.warnings += notes
                except Reject as r:
                    result.rejected.append(Rejected(cap_entry.name, r.code, r.message, r.values))
            result.accepted.append(accepted)
        if roles:
            attach_controls(entries, roles, pair_targets, refused_targets, dataset_dir, limits, background, result)
        for key, cap_entry in captions.items():
            if key not in used_captions:
                _attach_orphan_caption(cap_entry, dataset_dir, limits, result, preexisting)

    for a in result.accepted:
        report["items"][a.stem] = dataclasses.asdict(a)
    report["rejected"] += [dataclasses.asdict(r) for r in result.rejected]
    report["uploads"].append({"time": time.time(), "accepted": len(result.accepted),
                              "rejected": len(result.rejected), "limits": dataclasses.asdict(limits)})
    save_report(dataset_dir, report)
    return result


def _ingest_one(entry: Entry, dataset_dir: Path, limits: IngestLimits, background, taken: set[str],
                seen_bytes: dict, seen_pixels: dict, count: int) -> Accepted:
    if count >= limits.max_files:
        raise Reject("too_many_files", f"{entry.name} was not imported: the dataset already holds "
                      f"{limits.max_files:,} images, as many as a dataset may. Remove some first.",
                      {"limit": f"{limits.max_files:,}"})
    data = entry.read()
    if not data:
        raise Reject("empty_file", f"{entry.name} is empty (0 bytes): the upload or copy was interrupted. "
                      "Upload the file again.")
    sha = hashlib.sha256(data).hexdigest()
    if sha in seen_bytes:
        raise Reject("duplicate", f"{entry.name} is byte-identical to '{seen_bytes[sha]}' already in the "
                      "dataset; skipped (nothing to do).", {"kept": seen_bytes[sha]})
    rgb, fmt = decode_image(data, entry.name, limits, background)
    pixel_sha = hashlib.sha256(f"{rgb.width}x{rgb.height}".encode() + rgb.tobytes()).hexdigest()
    if pixel_sha in seen_pixels:
        raise Reject("duplicate", f"{entry.name} has exactly the same pixels as '{seen_pixels[pixel_sha]}' "
                      "already in the dataset; skipped (nothing to do).", {"kept": seen_pixels[pixel_sha]})
    stem = _unique_stem(sanitise_name(os.path.splitext(entry.basename)[0]), taken)
    ext = sanitise_name(os.path.splitext(entry.basename)[1].lower(), fallback="") or f".{fmt.lower()}"
    ext = ext if ext.startswith(".") else f".{ext}"
    original = f"originals/{stem}{ext if ext != CAPTION_EXT else '.' + fmt.lower()}"
    write_atomic(inside(dataset_dir, original), data)  # untouched bytes
    png = f"images/{stem}.png"
    buf = io.BytesIO()
    rgb.save(buf, "PNG")
    write_atomic(inside(dataset_dir, png), buf.getvalue())
    seen_bytes[sha] = stem
    seen_pixels[pixel_sha] = stem
    return Accepted(entry.name, stem, original, png, rgb.width, rgb.height, fmt, sha, pixel_sha)


def _caption_of_refused(cap: Entry, image: Entry, why: Reject, dataset_dir: Path, limits: IngestLimits,
                        result: IngestResult) -> None:
    """The caption of a refused image. A duplicate's caption goes to the copy that was kept, when
    that copy has none; otherwise it is skipped with its image, said explicitly."""
    kept = why.values.get("kept") if why.code == "duplicate" else None
    if kept and not stem_path(dataset_dir, kept, CAPTION_EXT).is_file():
        try:
            text, notes = decode_caption(cap.read(), cap.name, limits.max_caption_chars)
        except Reject as r:
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


def _attach_orphan_caption(entry: Entry, dataset_dir: Path, limits: IngestLimits, result: IngestResult,
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
    except Reject as r:
        result.rejected.append(Rejected(entry.name, r.code, r.message, r.values))
        return
    set_caption(dataset_dir, stem, text)
    result.warnings += notes + [f"{entry.name}: replaced the caption of existing image '{stem}'."]
