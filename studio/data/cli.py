"""CLI commands for datasets: `dataset import`, `dataset check`, `caption`.

`studio/__main__.py` calls `add_dataset_commands(subparsers)`; each command sets `func`, which
returns the process exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from studio.core.paths import DATA_DIR_HELP, data_dir
from studio.core.vocab import EXIT_FAILED, EXIT_OK, EXIT_USAGE


def _data_dir(args) -> Path:
    return data_dir(args.data_dir)


def _dataset_path(value: str, args) -> Path:
    """A dataset folder given as a path, or as a name inside <data>/datasets/."""
    path = Path(value)
    if path.is_dir():
        return path
    named = _data_dir(args) / "datasets" / value
    return named if named.is_dir() else path


def _background(text: str) -> tuple[int, int, int]:
    text = text.strip().lstrip("#")
    try:
        if "," in text:
            rgb = tuple(int(v) for v in text.split(","))
        else:
            rgb = tuple(int(text[i : i + 2], 16) for i in (0, 2, 4)) if len(text) == 6 else ()
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return rgb
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"background {text!r} is not a colour: use '#ffffff' or '255,255,255'")


# ---------------------------------------------------------------- dataset import


def cmd_import(args) -> int:
    from studio.data.ingest import IngestLimits, ingest, sanitise_name

    name = sanitise_name(args.name or Path(args.sources[0]).stem, fallback="dataset")
    dataset_dir = _data_dir(args) / "datasets" / name
    try:
        limits = IngestLimits(**{k: v for k, v in {
            "max_files": args.max_files, "max_pixels": args.max_pixels, "min_side": args.min_side,
            "max_file_bytes": args.max_file_mb and args.max_file_mb * 1024**2,
            "max_total_bytes": args.max_total_mb and args.max_total_mb * 1024**2,
        }.items() if v is not None})
    except ValueError as exc:
        print(f"Invalid limit: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = ingest(args.sources, dataset_dir, limits, background=args.background)
    if args.json:
        print(json.dumps({"dataset": str(dataset_dir), **result.to_dict()}, indent=2))
    else:
        print(f"Dataset '{name}' in {dataset_dir}")
        print(result.summary())
    has_images = any((dataset_dir / "images").glob("*.png"))
    return EXIT_OK if has_images else EXIT_FAILED


# ---------------------------------------------------------------- dataset check


def cmd_check(args) -> int:
    from studio.data.report import format_report, quality_report

    dataset_dir = _dataset_path(args.dir, args)
    if not dataset_dir.is_dir():
        print(f"No dataset folder at {args.dir} (nor in {_data_dir(args) / 'datasets'}). "
              "Import photos first: python -m studio dataset import PHOTOS --name NAME", file=sys.stderr)
        return EXIT_FAILED
    guidance, resolution = {}, args.resolution
    if args.preset:
        from studio.config import ConfigError, load_preset

        try:
            preset = load_preset(args.preset)
        except ConfigError as exc:
            print(f"Invalid preset: {exc}", file=sys.stderr)
            return EXIT_USAGE
        guidance = dict(preset.guidance)
        resolution = resolution or preset.config.get("dataset", {}).get("resolution")
    for key in ("min_images", "recommended_images", "min_resolution"):
        if getattr(args, key) is not None:
            guidance[key] = getattr(args, key)
    from studio.families.choice import token_limit

    t5 = args.t5_max_tokens or token_limit(args.model)
    if t5 is None:
        from studio.families.choice import accepted_names

        print(f"--model {args.model!r} is not a model the studio knows; give one of "
              f"{', '.join(n for n in accepted_names() if n != 'auto')} (python -m studio families).", file=sys.stderr)
        return EXIT_USAGE
    report = quality_report(dataset_dir, resolution=resolution or 1024, guidance=guidance or None,
                            trigger_word=args.trigger, t5_max_tokens=t5)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    if args.save:
        _save_quality(dataset_dir, report)
    return EXIT_OK if report["trainable"] else EXIT_FAILED


def _save_quality(dataset_dir: Path, report: dict) -> None:
    """Store the quality report under "quality" in report.json, beside the ingestion results."""
    path = dataset_dir / "report.json"
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        data = {}
    data["quality"] = report
    tmp = path.with_name(".report.json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), "utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------- caption


def cmd_caption(args) -> int:
    from studio.captioning import CaptionerUnavailable, CaptionStyle, caption_dataset, load_captioner

    dataset_dir = _dataset_path(args.dataset_dir, args)
    if not (dataset_dir / "images").is_dir():
        print(f"No images/ folder in {dataset_dir}. Import photos first: python -m studio dataset import ...",
              file=sys.stderr)
        return EXIT_FAILED
    task = {"caption": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "more_detailed": "<MORE_DETAILED_CAPTION>"}
    try:
        captioner = load_captioner(args.captioner, class_word=args.class_word, trigger_word=args.trigger,
                                   task=task[args.task], batch_size=args.batch_size)
    except CaptionerUnavailable as exc:
        from studio.diagnostics import explain

        print(f"ERROR [CAPTIONER_UNAVAILABLE] {exc}\n  {explain('CAPTIONER_UNAVAILABLE').advice}", file=sys.stderr)
        return EXIT_FAILED
    style = CaptionStyle(trigger_word=args.trigger, placement=args.placement, prefix=args.prefix,
                         suffix=args.suffix, strip_boilerplate=not args.keep_boilerplate, max_chars=args.max_chars)

    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        # One updating line at a terminal; whole lines in a log file.
        end = "\n" if not tty or done == total else ""
        print(f"{chr(13) if tty else ''}captioned {done}/{total}", end=end, file=sys.stderr, flush=True)

    try:
        run = caption_dataset(dataset_dir, captioner, style, overwrite=args.overwrite,
                              only_missing=not args.all, batch_size=args.batch_size, progress=progress)
    finally:
        captioner.close()
    print(file=sys.stderr)
    print(f"Wrote {len(run.written)} caption(s); left {len(run.skipped)} existing caption(s) untouched"
          + ("" if args.overwrite else " (use --overwrite --all to redo them)") + ".")
    for w in run.warnings:
        print(f"warning: {w}")
    return EXIT_OK


# ---------------------------------------------------------------- wiring


def add_dataset_commands(subparsers) -> None:
    dataset = subparsers.add_parser("dataset", help="import and check training datasets")
    dsub = dataset.add_subparsers(dest="dataset_command", required=True)

    p = dsub.add_parser("import", help="import photos, captions, zips or folders into a dataset")
    p.add_argument("sources", nargs="+", metavar="DIR_OR_FILES", help="images, .txt captions, zips, folders")
    p.add_argument("--name", help="dataset name (default: the first source's name)")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--background", type=_background, default=(255, 255, 255),
                   help="colour transparent areas are flattened onto (default #ffffff)")
    p.add_argument("--max-files", type=int, help="most images in the dataset")
    p.add_argument("--max-pixels", type=int, help="most pixels per image")
    p.add_argument("--min-side", type=int, help="smallest accepted short side in px")
    p.add_argument("--max-file-mb", type=int, help="largest accepted file")
    p.add_argument("--max-total-mb", type=int, help="largest upload in total")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_import)

    p = dsub.add_parser("check", help="quality report; exits non-zero only when nothing is trainable")
    p.add_argument("dir", help="dataset folder, or a dataset name in the data folder")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--resolution", type=int, help="training resolution (default: the preset's, else 1024)")
    p.add_argument("--preset", help="subject preset whose guidance to check against (e.g. portrait)")
    p.add_argument("--min-images", type=int, dest="min_images")
    p.add_argument("--recommended-images", type=int, dest="recommended_images")
    p.add_argument("--min-resolution", type=int, dest="min_resolution")
    p.add_argument("--trigger", help="trigger word that captions should contain")
    p.add_argument("--model", default="dev", help="the base model whose text-token limit captions are checked "
                   "against: a model.family name such as flux1-schnell (python -m studio families), or a "
                   "variant name (dev, schnell); default dev")
    p.add_argument("--t5-max-tokens", type=int, help="override the text-token limit")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--save", action="store_true", help="also store it in the dataset's report.json")
    p.set_defaults(func=cmd_check)

    p = subparsers.add_parser("caption", help="write .txt captions beside a dataset's images")
    p.add_argument("dataset_dir", help="dataset folder, or a dataset name in the data folder")
    p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--captioner", default="florence2",
                   help="basic, florence2, blip, a hub model id or a model folder (default florence2)")
    p.add_argument("--task", choices=["caption", "detailed", "more_detailed"], default="detailed",
                   help="Florence-2 caption length")
    p.add_argument("--trigger", help="trigger word to place in every caption")
    p.add_argument("--placement", choices=["start", "end", "none"], default="start")
    p.add_argument("--class-word", default="", help="class word for the basic captioner (e.g. 'man', 'dog')")
    p.add_argument("--prefix", default="")
    p.add_argument("--suffix", default="")
    p.add_argument("--max-chars", type=int)
    p.add_argument("--keep-boilerplate", action="store_true", help="keep 'The image shows ...' openings")
    p.add_argument("--overwrite", action="store_true", help="allow replacing existing captions")
    p.add_argument("--all", action="store_true", help="with --overwrite: re-caption every image")
    p.add_argument("--batch-size", type=int, default=4)
    p.set_defaults(func=cmd_caption)
