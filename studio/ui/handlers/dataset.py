"""Dataset tab: create a dataset, import photos, remove some, run the quality report."""

from __future__ import annotations

from pathlib import Path

from studio.config import load_preset
from studio.i18n import md_text, t
from studio.ui.handlers.common import NAME_RE, UserError, dataset_dir, datasets_root


def list_datasets(data_dir: Path) -> list[str]:
    root = datasets_root(data_dir)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name)) if root.is_dir() else []


def newest_dataset(data_dir: Path, names: list[str]) -> str | None:
    """The dataset worked on last (its images folder changed most recently)."""
    def changed(name: str) -> float:
        folder = datasets_root(data_dir) / name
        try:
            return max((folder / "images").stat().st_mtime, folder.stat().st_mtime)
        except OSError:
            return 0.0
    return max(names, key=changed) if names else None


def create_dataset(data_dir: Path, name: str, lang: str = "en") -> tuple[str, str]:
    """Returns (dataset name, message)."""
    name = (name or "").strip().replace(" ", "-")
    if not NAME_RE.match(name):
        raise UserError(t("dataset.bad_name", lang))
    folder = datasets_root(data_dir) / name
    if folder.is_dir():
        return name, t("dataset.exists", lang, name=name)
    (folder / "images").mkdir(parents=True)
    (folder / "originals").mkdir()
    return name, t("dataset.created", lang, name=name)


def upload_files(data_dir: Path, name: str, files: list[str] | None, max_total_mb: int | None = None,
                 lang: str = "en") -> str:
    """Ingest uploaded files (paths in gradio's upload cache); returns a summary message."""
    from studio.data.ingest import IngestLimits, ingest

    folder = dataset_dir(data_dir, name, lang)
    paths = [Path(f) for f in (files or []) if f]
    if not paths:
        raise UserError(t("dataset.no_files", lang))
    total = sum(p.stat().st_size for p in paths if p.is_file())
    limits = IngestLimits()
    if max_total_mb:
        # gradio's max_file_size is per file; many files under it still need a total cap.
        if total > max_total_mb * 1024**2:
            raise UserError(t("dataset.total_too_large", lang, size_mb=round(total / 1024**2),
                              limit_mb=max_total_mb))
        limits = IngestLimits(max_total_bytes=max_total_mb * 1024**2)
    # The upload cache names files by content hash folders; ingest names items by basename.
    result = ingest(paths, folder, limits)
    lines = [t("dataset.imported", lang, accepted=len(result.accepted), rejected=len(result.rejected))]
    shown = 20  # enough to act on; the report lists every item
    for r in result.rejected[:shown]:
        lines.append("- " + t("dataset.rejected_item", lang, name=md_text(r.name), reason=md_text(_reason(r, lang))))
    if len(result.rejected) > shown:
        lines.append(t("dataset.rejected_more", lang, count=len(result.rejected) - shown))
    return "\n".join(lines)


def _reason(rejected, lang: str) -> str:
    """Why an item was refused, with its real values: the ingest message in English, the
    catalogue's `ingest.<code>` elsewhere (its English message if a value it needs is missing)."""
    if lang == "en":
        return rejected.message
    template = t(f"ingest.{rejected.code}", lang)
    try:
        return template.format(**rejected.values)
    except (KeyError, IndexError, ValueError):
        return rejected.message


def remove_images(data_dir: Path, name: str, stems: list[str] | None, lang: str = "en") -> str:
    from studio.data.ingest import remove_item
    from studio.ui.thumbs import remove_thumbnail

    folder = dataset_dir(data_dir, name, lang)
    removed = 0
    for stem in stems or []:
        removed += bool(remove_item(folder, stem))
        remove_thumbnail(folder, stem)
    return t("dataset.removed", lang, count=removed)


def run_report(data_dir: Path, name: str, preset: str | None, resolution: int, trigger: str | None) -> dict:
    from studio.data.report import quality_report

    guidance = load_preset(preset).guidance if preset else {}
    return quality_report(dataset_dir(data_dir, name), resolution=int(resolution or 512), guidance=guidance,
                          trigger_word=(trigger or "").strip() or None)
