"""Captions tab: caption a dataset, read, edit and bulk-edit captions, flag captions that are
too long or not in Latin script."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from studio.i18n import t
from studio.ui.handlers.common import UserError, dataset_dir



def caption_limit() -> tuple[int, str]:
    """(tokens, model title): captions are checked against the base model that reads the fewest
    text tokens (studio/families), since a dataset may be trained on any of them."""
    from studio.families.choice import shortest_token_limit

    return shortest_token_limit()


def caption_images(data_dir: Path, name: str, captioner: str, trigger: str, class_word: str, placement: str,
                   prefix: str, suffix: str, redo_all: bool, lang: str = "en",
                   progress: Callable[[int, int], None] | None = None) -> str:
    """Caption the dataset (only missing ones unless `redo_all`); returns a summary."""
    from studio.captioning import CaptionerUnavailable, CaptionStyle, caption_dataset, load_captioner

    folder = dataset_dir(data_dir, name, lang)
    try:
        model = load_captioner(captioner or "basic", class_word=class_word or "", trigger_word=trigger or None)
    except CaptionerUnavailable as exc:
        raise UserError(t("captions.unavailable", lang, detail=str(exc).splitlines()[0])) from None
    try:
        # BasicCaptioner already puts the trigger word first; style_caption only adds it if absent.
        style = CaptionStyle(trigger_word=trigger or None, placement=placement or "start", prefix=prefix or "",
                             suffix=suffix or "")
        run = caption_dataset(folder, model, style, overwrite=redo_all, only_missing=not redo_all,
                              progress=progress)
    finally:
        model.close()
    lines = [t("captions.done", lang, written=len(run.written), skipped=len(run.skipped))]
    return "\n".join(lines + caption_warnings(data_dir, name, lang))


def caption_warnings(data_dir: Path, name: str, lang: str = "en", limit: int | None = None) -> list[str]:
    from studio.data.ingest import list_dataset
    from studio.data.report import estimate_tokens

    limit = limit or caption_limit()[0]
    out = []
    for item in list_dataset(dataset_dir(data_dir, name, lang)):
        if not item.caption:
            continue
        note = caption_note(item.stem, item.caption, lang, limit, estimate_tokens(item.caption))
        if note:
            out.append("- ⚠️ " + note)
    return out


def caption_note(stem: str, caption: str, lang: str, limit: int, tokens: int) -> str:
    from studio.captioning import non_latin_warning

    if tokens > limit:
        shortest, model = caption_limit()
        return t("captions.too_long", lang, stem=stem, tokens=tokens, limit=limit,
                 model=model if limit == shortest else t("captions.the_model", lang))
    if non_latin_warning(caption):
        return t("captions.non_latin", lang, stem=stem)
    return ""


def caption_table(data_dir: Path, name: str | None, lang: str = "en") -> list[list[Any]]:
    """Rows of [stem, caption, ≈tokens, note] for the overview table."""
    from studio.data.ingest import list_dataset
    from studio.data.report import estimate_tokens

    if not name:
        return []
    rows, limit = [], caption_limit()[0]
    for item in list_dataset(dataset_dir(data_dir, name, lang)):
        caption = item.caption or ""
        tokens = estimate_tokens(caption) if caption else 0
        rows.append([item.stem, caption, tokens, caption_note(item.stem, caption, lang, limit, tokens)])
    return rows


def read_caption(data_dir: Path, name: str, stem: str) -> str:
    from studio.data.ingest import list_dataset

    for item in list_dataset(dataset_dir(data_dir, name)):
        if item.stem == stem:
            return item.caption or ""
    return ""


def save_caption(data_dir: Path, name: str, stem: str | None, text: str, lang: str = "en") -> str:
    from studio.data.ingest import set_caption

    if not stem:
        raise UserError(t("captions.pick_image", lang))
    set_caption(dataset_dir(data_dir, name, lang), stem, text)
    message = t("captions.saved" if (text or "").strip() else "captions.cleared", lang, stem=stem)
    from studio.data.report import estimate_tokens

    note = caption_note(stem, text or "", lang, caption_limit()[0], estimate_tokens(text or ""))
    return message + (f"\n\n⚠️ {note}" if note else "")


def bulk_edit(data_dir: Path, name: str, find: str = "", replace: str = "", prefix: str = "", suffix: str = "",
              lang: str = "en") -> str:
    """Find/replace in every caption, and/or add a prefix/suffix to every caption."""
    from studio.data.ingest import list_dataset, set_caption

    folder = dataset_dir(data_dir, name, lang)
    changed = 0
    for item in list_dataset(folder):
        old = item.caption or ""
        new = old.replace(find, replace) if find else old
        if prefix.strip() and not new.startswith(prefix.strip()):
            new = ", ".join(p for p in (prefix.strip(), new) if p)
        if suffix.strip() and not new.endswith(suffix.strip()):
            new = ", ".join(p for p in (new, suffix.strip()) if p)
        if new != old:
            set_caption(folder, item.stem, new)
            changed += 1
    return t("captions.bulk_done", lang, count=changed)
