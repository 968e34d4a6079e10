"""A dataset folder's files: safe names and paths inside it, its report.json, and the items
training reads (list, remove, caption). See docs/architecture.md for the layout."""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .limits import Reject

REPORT_NAME = "report.json"
CAPTION_EXT = ".txt"


@dataclass
class DatasetItem:
    stem: str
    image: Path
    caption: str | None


def sanitise_name(name: str, fallback: str = "image") -> str:
    """A file-name component safe on every OS: ASCII letters, digits, '-', '_' and '.'."""
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name)
    name = re.sub(r"_{2,}", "_", name).strip("._-")
    return name[:100] or fallback


def inside(root: Path, relative: str) -> Path:
    """root/relative, refusing anything that resolves outside root."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise Reject("unsafe_path", f"refusing to write {relative!r} outside the dataset folder")
    return target


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------- report.json


def load_report(dataset_dir: Path) -> dict:
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


def save_report(dataset_dir: Path, report: dict) -> None:
    report["rejected"] = report["rejected"][-5000:]  # a history, not an unbounded log
    write_atomic(dataset_dir / REPORT_NAME, json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8"))


def stem_path(dataset_dir: Path, stem: str, suffix: str) -> Path:
    if stem != sanitise_name(stem):
        raise ValueError(f"{stem!r} is not a dataset item name (letters, digits, '.', '-', '_' only)")
    return inside(Path(dataset_dir), f"images/{stem}{suffix}")


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
    targets = [stem_path(dataset_dir, stem, ".png"), stem_path(dataset_dir, stem, CAPTION_EXT)]
    targets += [p for p in (dataset_dir / "originals").glob(f"{stem}.*") if p.stem == stem]
    for folder in (dataset_dir / "images" / "control", dataset_dir / "originals" / "control"):  # its edit pair
        targets += [p for p in folder.glob(f"{stem}.*") if p.stem == stem] if folder.is_dir() else []
    removed = False
    for p in targets:
        if p.is_file():
            p.unlink()
            removed = True
    report = load_report(dataset_dir)
    if report["items"].pop(stem, None) is not None:
        save_report(dataset_dir, report)
    return removed


def set_caption(dataset_dir: Path, stem: str, text: str | None) -> None:
    """Write (or, for empty text, delete) an item's caption."""
    if not stem_path(dataset_dir, stem, ".png").is_file():
        raise FileNotFoundError(f"no image '{stem}' in {dataset_dir}/images")
    txt = stem_path(dataset_dir, stem, CAPTION_EXT)
    text = (text or "").strip()
    if text:
        write_atomic(txt, text.encode("utf-8"))
    elif txt.is_file():
        txt.unlink()
