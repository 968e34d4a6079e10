"""What the Dataset and Captions tabs show of a dataset: each image with its status words, and
the quality report with what to do about each warning, in the page's language with the real
values. No gradio or torch import.
"""

from __future__ import annotations

from pathlib import Path

from studio.i18n import md_text, t
from studio.ui.handlers import dataset_dir


def item_flags(report: dict | None) -> dict[str, list[tuple[str, dict]]]:
    """stem → (warning code, its values) for the warnings that name it (the per-image status)."""
    flags: dict[str, list[tuple[str, dict]]] = {}
    known = _flag_keys()
    for warning in (report or {}).get("warnings", []):
        if f"status.flag.{warning['code']}" not in known:
            continue
        values = {"resolution": (report or {}).get("resolution"), **warning.get("values", {})}
        for item in warning.get("items", []):
            stems = [item["a"], item["b"]] if isinstance(item, dict) else [str(item)]
            for stem in stems:
                flags.setdefault(stem, []).append((warning["code"], values))
    for stem, found in flags.items():  # "below the preset's minimum" already says "smaller"
        if any(code == "below_min_resolution" for code, _ in found):
            flags[stem] = [(code, v) for code, v in found if code != "below_resolution"]
    return flags


def _flag_keys() -> set[str]:
    from studio.i18n import catalogue

    return {k for k in catalogue("en") if k.startswith("status.flag.")}


def gallery_items(data_dir: Path, name: str | None, report: dict | None = None,
                  lang: str = "en") -> list[tuple[str, str]]:
    """(thumbnail path, 'stem · status') for every image; the status says what needs doing."""
    from studio.data.ingest import list_dataset
    from studio.ui.thumbs import thumbnail

    if not name:
        return []
    folder = dataset_dir(data_dir, name, lang)
    flags = item_flags(report)
    out = []
    for item in list_dataset(folder):
        parts = [t("status.captioned" if item.caption else "status.no_caption", lang)]
        parts += [t(f"status.flag.{code}", lang, **values) for code, values in flags.get(item.stem, [])]
        out.append((str(thumbnail(item.image)), f"{item.stem} · {', '.join(parts)}"))
    return out


def report_markdown(report: dict, lang: str = "en") -> str:
    """The quality report with, for each warning, what to do about it (with the real values)."""
    img, cap = report["images"], report["captions"]
    lines = [t("report.summary", lang, count=img["count"], resolution=report["resolution"],
               captioned=cap["captioned"], trainable=t("report.yes" if report["trainable"] else "report.no", lang))]
    if img.get("min_images"):
        lines.append(t("report.guidance", lang, min_images=img["min_images"],
                       recommended=img.get("recommended_images") or img["min_images"]))
    if report.get("buckets"):
        lines.append(t("report.buckets", lang, buckets=", ".join(f"{k} ×{v}" for k, v in report["buckets"].items())))
    if not report["warnings"]:
        lines.append(t("report.no_warnings", lang))
    keys = _report_keys()
    for w in report["warnings"]:
        code, values = w["code"], w.get("values", {})
        advice_key = f"report.{code}.{w.get('advice_key', 'advice')}"
        title = t(f"report.{code}", lang) if f"report.{code}" in keys and lang != "en" else w["message"]
        try:  # the UI's wording (the Captions tab, not the command line), with the real values
            advice = t(advice_key, lang, **values) if advice_key in keys else w["advice"]
        except KeyError:
            advice = w["advice"]
        lines.append(f"- ⚠️ **{md_text(title)}**\n  - {t('report.todo', lang)}: {md_text(advice)}")
        names = [f"{i['a']}~{i['b']}" if isinstance(i, dict) else str(i) for i in w.get("items", [])]
        if names and lang != "en":
            lines.append("  - " + t("report.affected", lang, items=md_text(", ".join(names[:12]))))
    return "\n\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:])


def _report_keys() -> set[str]:
    from studio.i18n import catalogue

    return set(catalogue("en"))
