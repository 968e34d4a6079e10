"""What the Dataset and Captions tabs show of an edit dataset's pairs: each pair side by side
(before | after) with its instruction, the pair problems by file name in the page's language,
and one instruction written for every pair. Pairs are read only through
studio.data.pairs.find_pairs. No gradio or torch import."""

from __future__ import annotations

import os
from pathlib import Path

from studio.i18n import md_text, t
from studio.ui.handlers import UserError, dataset_dir
from studio.ui.thumbs import QUALITY, SIDE, THUMBS_DIR

PAIR_THUMBS = "pairs"


def side_by_side(pair, out_dir: Path) -> Path:
    """One picture of a pair, the before on the left and the after on the right, each fitted
    into SIDE x SIDE; made again only when either image changes."""
    from PIL import Image

    thumb = out_dir / f"{pair.stem}.jpg"
    newest = max(pair.control.stat().st_mtime_ns, pair.target.stat().st_mtime_ns)
    if thumb.is_file() and thumb.stat().st_mtime_ns >= newest:
        return thumb
    out_dir.mkdir(parents=True, exist_ok=True)
    canvas = Image.new("RGB", (2 * SIDE + 8, SIDE), "white")
    for slot, path in enumerate((pair.control, pair.target)):
        try:
            with Image.open(path) as im:
                im.draft("RGB", (SIDE, SIDE))
                small = im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError):
            continue  # an unreadable image stays a blank half; the problem list names it
        small.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
        canvas.paste(small, (slot * (SIDE + 8) + (SIDE - small.width) // 2, (SIDE - small.height) // 2))
    tmp = thumb.with_name(f".{thumb.name}.tmp")
    canvas.save(tmp, "JPEG", quality=QUALITY)
    os.replace(tmp, thumb)
    return thumb


def pair_view(data_dir: Path, name: str | None, lang: str = "en") -> dict:
    """{"edit": whether the dataset has a control/ folder, "items": [(picture, caption)],
    "problems": Markdown}."""
    from studio.data.pairs import find_pairs

    if not name:
        return {"edit": False, "items": [], "problems": ""}
    folder = dataset_dir(data_dir, name, lang)
    scan = find_pairs(folder)
    if not scan.is_edit_dataset:
        return {"edit": False, "items": [], "problems": ""}
    thumbs = folder / THUMBS_DIR / PAIR_THUMBS
    items = [(str(side_by_side(p, thumbs)), t("pairs.item", lang, stem=p.stem,
                                              instruction=p.caption or t("pairs.no_instruction", lang)))
             for p in scan.pairs]
    return {"edit": True, "items": items, "problems": problems_markdown(scan, lang)}


def problems_markdown(scan, lang: str = "en") -> str:
    lines = [t("pairs.summary", lang, pairs=len(scan.pairs), problems=len(scan.problems))]
    for problem in scan.problems:
        values = {k: md_text(str(v)) for k, v in problem.values.items()}
        lines.append(f"- `{problem.file}`: " + t(f"pairs.problem.{problem.code}", lang, **values))
    return "\n".join(lines)


def instruction_for_all(data_dir: Path, name: str | None, text: str, lang: str = "en") -> str:
    """Write `text` as the instruction (.txt) of every pair's target."""
    from studio.data.files import write_atomic
    from studio.data.pairs import find_pairs

    folder = dataset_dir(data_dir, name, lang)
    text = (text or "").strip()
    if not text:
        raise UserError(t("pairs.empty_instruction", lang))
    scan = find_pairs(folder)
    if not scan.pairs:
        raise UserError(t("pairs.none", lang))
    for pair in scan.pairs:
        write_atomic(pair.target.with_suffix(".txt"), text.encode("utf-8"))
    return t("pairs.written", lang, count=len(scan.pairs))
