"""Dataset quality report: what will happen to these images in training, and what to fix first.

`quality_report()` returns a JSON-serialisable dict; `format_report()` renders it for people.
Every warning carries `code`, `message` (what and which files) and `advice` (what to do).
Only an empty / unreadable dataset is untrainable; everything else is advice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from studio.data.buckets import fit_to_bucket, make_buckets, nearest_bucket
from studio.data.ingest import list_dataset
from studio.data.pairs import find_pairs

# Thresholds, with why.
BLUR_THRESHOLD = 60.0  # variance of the Laplacian at a 512 px short side; sharp photos score in the hundreds
BLUR_SIDE = 512  # downscale first so the score does not depend on the camera's megapixels
PHASH_MAX_DISTANCE = 8  # of 64 bits; re-encodes / resizes / small edits land well below, distinct photos ~32
DHASH_MAX_DISTANCE = 12  # a second, gradient-based opinion so one hash alone cannot flag a pair
RESOLUTION_BINS = [0, 256, 512, 768, 1024, 1536, 2048, 4096]  # short-side edges in px
TRAINING_RESOLUTIONS = (512, 768, 1024)  # what FLUX LoRAs are commonly trained at
CLIP_MAX_TOKENS = 77  # informational: FLUX's CLIP-L sees only the first 77 tokens


# ---------------------------------------------------------------- per-image measurements


def _grey(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(im.convert("L").resize(size, Image.Resampling.LANCZOS), dtype=np.float64)


def dhash(im: Image.Image) -> int:
    """64-bit difference hash: is each pixel brighter than its right neighbour, on a 9x8 thumbnail."""
    g = _grey(im, (9, 8))
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


_DCT32 = _dct_matrix(32)


def phash(im: Image.Image) -> int:
    """64-bit perceptual hash: low 8x8 DCT frequencies of a 32x32 grey thumbnail vs their median."""
    low = (_DCT32 @ _grey(im, (32, 32)) @ _DCT32.T)[:8, :8].flatten()
    median = np.median(low[1:])  # the DC term is overall brightness; it would dominate the median
    return int("".join("1" if v > median else "0" for v in low), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def sharpness(im: Image.Image) -> float:
    """Variance of the 4-neighbour Laplacian on a grey copy with a BLUR_SIDE short side."""
    scale = BLUR_SIDE / min(im.size)
    size = (max(3, round(im.width * scale)), max(3, round(im.height * scale)))
    g = _grey(im, size)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


# ---------------------------------------------------------------- the measurement cache

MEASURES_NAME = ".measures.json"
_MEASURES_VERSION = 1


def _measure(path: Path) -> dict:
    with Image.open(path) as im:
        im.load()
        rgb = im.convert("RGB")
    return {"width": rgb.width, "height": rgb.height, "sharpness": round(sharpness(rgb), 2), "phash": phash(rgb),
            "dhash": dhash(rgb)}


def image_measures(dataset_dir: Path, items, remember: bool = True) -> dict[str, dict]:
    """stem -> size, sharpness and hashes of each item's image (or {"error": why}).

    Decoding and hashing every photo is most of a report's time (seconds for a few dozen photos,
    more while a job trains), yet photos rarely change: results are kept in the dataset folder,
    keyed by each PNG's size and modification time, and only new or changed images are measured.
    With `remember=False` nothing is read from or written to the folder.
    """
    cache_path = Path(dataset_dir) / MEASURES_NAME
    try:
        cache = json.loads(cache_path.read_text("utf-8")) if remember else {}
        entries = cache["images"] if cache.get("version") == _MEASURES_VERSION else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        entries = {}
    out, fresh, changed = {}, {}, False
    for item in items:
        try:
            st = item.image.stat()
        except OSError as exc:
            out[item.stem] = {"error": str(exc)}
            continue
        key = f"{st.st_size}:{st.st_mtime_ns}"
        entry = entries.get(item.stem)
        if not (isinstance(entry, dict) and entry.get("key") == key):
            try:
                entry = {"key": key, **_measure(item.image)}
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                out[item.stem] = {"error": str(exc)}  # not cached: a fixed file is measured next time
                continue
            changed = True
        out[item.stem] = fresh[item.stem] = entry
    if remember and (changed or set(fresh) != set(entries)):
        tmp = cache_path.with_name(f".{cache_path.name}.tmp")
        try:
            tmp.write_text(json.dumps({"version": _MEASURES_VERSION, "images": fresh}), encoding="utf-8")
            os.replace(tmp, cache_path)
        except OSError:
            pass  # a read-only dataset still gets its report, measured afresh next time
    return out


# ---------------------------------------------------------------- captions


def estimate_tokens(text: str) -> int:
    """Rough T5 sentence-piece count: common words are one piece, long/rare words split every ~6
    characters, punctuation is its own piece, plus the end-of-sequence token."""
    pieces = 1
    for word in re.findall(r"[A-Za-z]+|\d|[^\sA-Za-z\d]", text):
        pieces += max(1, math.ceil(len(word) / 6)) if word.isalpha() else 1
    return pieces


def _count_tokens(text: str, tokenizer) -> int:
    if tokenizer is None:
        return estimate_tokens(text)
    return len(tokenizer(text, truncation=False)["input_ids"])


def _has_trigger(caption: str, trigger: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", caption, re.IGNORECASE) is not None


def _near_duplicates(stems: list[str], ph: list[int], dh: list[int]) -> list[dict]:
    if len(stems) < 2:
        return []
    p = np.array(ph, dtype=np.uint64)
    d = np.array(dh, dtype=np.uint64)
    pairs = []
    for i in range(len(stems) - 1):  # row by row keeps memory linear for thousands of images
        pd = np.bitwise_count(p[i] ^ p[i + 1 :])
        dd = np.bitwise_count(d[i] ^ d[i + 1 :])
        for j in np.nonzero((pd <= PHASH_MAX_DISTANCE) & (dd <= DHASH_MAX_DISTANCE))[0]:
            pairs.append({"a": stems[i], "b": stems[i + 1 + j], "phash_distance": int(pd[j]),
                          "dhash_distance": int(dd[j])})
    return pairs


def _warn(code: str, message: str, advice: str, items: list | None = None, values: dict | None = None,
          advice_key: str = "advice") -> dict:
    """A warning: `message` and `advice` in English for the CLI; `values` (the real numbers) and
    `advice_key` let the UI say the same in its language (catalogue `report.<code>.<advice_key>`)."""
    return {"code": code, "message": message, "advice": advice, "items": items or [], "values": values or {},
            "advice_key": advice_key}


def _names(items: list, limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _upscale_warning(upscaled: list[dict], resolution: int) -> dict:
    """Images smaller than their bucket. The advice names a lower training resolution only when
    one exists below the current one at which these images need no upscaling."""
    stems = [im["stem"] for im in upscaled]
    smallest = min(min(im["width"], im["height"]) for im in upscaled)
    lower = [r for r in TRAINING_RESOLUTIONS if r < resolution and r <= smallest]
    values = {"resolution": resolution, "smallest": smallest, "count": len(stems)}
    message = (f"{len(stems)} image(s) are smaller than their {resolution} px bucket and will be upscaled: "
               f"{_names(stems)}.")
    if lower:
        values["suggest"] = max(lower)
        return _warn("below_resolution", message, f"Use originals whose short side is at least {resolution} px, "
                     f"or train at {max(lower)} px, where these images need no upscaling.", stems, values)
    return _warn("below_resolution", message, f"Use originals whose short side is at least {resolution} px "
                 f"(the smallest here is {smallest} px).", stems, values, advice_key="advice_larger")


_PAIR_ADVICE = {
    "unpaired_control": "Add the edited image under the control's name, or remove the control.",
    "unpaired_target": "Add its 'before' image to control/ under the same name; edit training skips it until then.",
    "aspect_mismatch": "Crop the control to its target's aspect ratio; training stretches it to the target's shape.",
    "size_mismatch": "Use a control and target of about the same size; scaling blurs the smaller one.",
    "identical": "Replace the control with the 'before' image, or remove the pair: it teaches no edit.",
    "unreadable": "Replace the file; it cannot be decoded.",
}


def pair_warnings(scan) -> list[dict]:
    """One warning per kind of pair problem (edit datasets), naming every file."""
    by_code: dict[str, list] = {}
    for p in scan.problems:
        by_code.setdefault(p.code, []).append(p)
    warnings = []
    for code, problems in by_code.items():
        files = [p.file for p in problems]
        detail = " ".join(p.message for p in problems[:3])
        warnings.append(_warn(f"pair_{code}", f"{len(files)} edit pair problem(s) ({code.replace('_', ' ')}): "
                              f"{_names(files)}. {detail}", _PAIR_ADVICE[code], files, {"count": len(files)}))
    return warnings


# ---------------------------------------------------------------- the report


def quality_report(dataset_dir: Path, resolution: int = 1024, guidance: dict | None = None,
                   trigger_word: str | None = None, t5_max_tokens: int = 512, tokenizer=None,
                   items: list | None = None) -> dict:
    """Measure a dataset folder (its images/ subfolder, or the DatasetItems in `items`, which the
    engine lists for a plain folder of images) against the training settings."""
    dataset_dir = Path(dataset_dir)
    guidance = guidance or {}
    buckets = make_buckets(resolution)
    warnings: list[dict] = []
    images, unreadable = [], []
    remember = items is None  # a plain folder the engine lists is the user's own: write nothing there
    items = list_dataset(dataset_dir) if items is None else items
    measured = image_measures(dataset_dir, items, remember=remember)
    for item in items:
        m = measured.get(item.stem)
        if "error" in m:
            unreadable.append(f"{item.stem} ({m['error']})")
            continue
        w, h = m["width"], m["height"]
        bucket = nearest_bucket(w, h, buckets)
        (new_w, _), _ = fit_to_bucket(w, h, bucket)
        images.append({
            "stem": item.stem, "width": w, "height": h, "bucket": f"{bucket[0]}x{bucket[1]}",
            "upscale": round(new_w / w, 3), "sharpness": m["sharpness"], "phash": m["phash"], "dhash": m["dhash"],
            "caption": item.caption,
        })
    n = len(images)

    if unreadable:
        warnings.append(_warn("unreadable", f"{len(unreadable)} file(s) in images/ cannot be decoded: "
                              f"{_names(unreadable)}.", "Remove them and import the originals again "
                              "through the studio, which checks every file.", unreadable))

    # Count against the preset's guidance.
    min_images, recommended = guidance.get("min_images"), guidance.get("recommended_images")
    if n == 0:
        warnings.append(_warn("no_images", f"No usable images in {dataset_dir / 'images'}.",
                              "Import photos first (python -m studio dataset import ...)."))
    elif min_images and n < min_images:
        warnings.append(_warn("too_few_images", f"{n} image(s); this preset needs at least {min_images}.",
                              f"Add {min_images - n} or more varied photos (different poses, light, "
                              "backgrounds); with too few the LoRA copies the photos instead of learning."))
    elif recommended and n < recommended:
        warnings.append(_warn("below_recommended", f"{n} image(s); {recommended} are recommended for this "
                              "preset.", "It will train; more varied photos usually generalise better."))

    # Resolution: histogram of short sides, images that must be upscaled to fill their bucket.
    hist = Counter()
    for im in images:
        short = min(im["width"], im["height"])
        lo = max(e for e in RESOLUTION_BINS if e <= short)
        hi = next((e for e in RESOLUTION_BINS if e > short), None)
        hist[f"{lo}-{hi - 1}" if hi else f"{lo}+"] += 1
    histogram = {k: hist[k] for k in sorted(hist, key=lambda k: int(k.split("-")[0].rstrip("+")))}
    upscaled = [im for im in images if im["upscale"] > 1.0]
    if upscaled:
        warnings.append(_upscale_warning(upscaled, resolution))
    min_res = guidance.get("min_resolution")
    small = [im["stem"] for im in images if min_res and min(im["width"], im["height"]) < min_res]
    if small:
        warnings.append(_warn("below_min_resolution", f"{len(small)} image(s) have a short side below the "
                              f"preset's minimum of {min_res} px: {_names(small)}.",
                              "Replace them with larger photos or remove them; they add blur.", small,
                              {"min_resolution": min_res, "count": len(small)}))

    bucket_counts = dict(sorted(Counter(im["bucket"] for im in images).items(), key=lambda kv: -kv[1]))
    lonely = [b for b, c in bucket_counts.items() if c == 1 and len(bucket_counts) > 1]
    if lonely:
        warnings.append(_warn("single_image_buckets", f"{len(lonely)} bucket(s) hold a single image "
                              f"({_names(lonely)}); with batch size > 1 those images train alone.",
                              "Fine at batch size 1; otherwise crop those images to a common aspect ratio.",
                              lonely))

    # Near-duplicates and blur.
    near = _near_duplicates([im["stem"] for im in images], [im["phash"] for im in images],
                            [im["dhash"] for im in images])
    if near:
        pairs = [f"{p['a']}~{p['b']}" for p in near]
        warnings.append(_warn("near_duplicates", f"{len(near)} near-duplicate pair(s): {_names(pairs)}.",
                              "Keep the best of each pair; duplicates weigh that photo double and push "
                              "the LoRA to memorise it.", near))
    blurry = [im["stem"] for im in images if im["sharpness"] < BLUR_THRESHOLD]
    if blurry:
        warnings.append(_warn("blurry", f"{len(blurry)} image(s) look blurry (sharpness below "
                              f"{BLUR_THRESHOLD:g}): {_names(blurry)}.",
                              "Remove or replace them: the LoRA learns blur as part of the subject.", blurry))

    # Captions: coverage, trigger word, token lengths.
    captioned = [im for im in images if im["caption"]]
    missing = [im["stem"] for im in images if not im["caption"]]
    if missing and n:
        warnings.append(_warn("missing_captions", f"{len(missing)} of {n} image(s) have no caption: "
                              f"{_names(missing)}.", "Caption them (python -m studio caption DIR), or they "
                              "train with the trigger word / class prompt alone.", missing))
    without_trigger = []
    if trigger_word:
        without_trigger = [im["stem"] for im in captioned if not _has_trigger(im["caption"], trigger_word)]
        if without_trigger:
            warnings.append(_warn("trigger_missing", f"The trigger word '{trigger_word}' is missing from "
                                  f"{len(without_trigger)} caption(s): {_names(without_trigger)}.",
                                  "Caption them again with the trigger word (python -m studio caption DIR "
                                  f"--trigger {trigger_word}), or add it to those captions.", without_trigger))
    tokens = {im["stem"]: _count_tokens(im["caption"], tokenizer) for im in captioned}
    too_long = sorted(s for s, t in tokens.items() if t > t5_max_tokens)
    if too_long:
        warnings.append(_warn("caption_truncated", f"{len(too_long)} caption(s) exceed the text encoder's limit of "
                              f"{t5_max_tokens} tokens and will be cut: {_names(too_long)}.",
                              "Shorten them (the end is silently dropped), or caption with a shorter "
                              "style.", too_long))
    values = list(tokens.values())
    scan = find_pairs(dataset_dir)
    warnings += pair_warnings(scan)

    report = {
        "dataset": str(dataset_dir),
        "resolution": resolution,
        "trainable": n > 0,
        "images": {"count": n, "min_images": min_images, "recommended_images": recommended,
                   "unreadable": len(unreadable)},
        "resolution_histogram": histogram,
        "below_resolution": [im["stem"] for im in upscaled],
        "buckets": bucket_counts,
        "near_duplicates": near,
        "blurry": blurry,
        "sharpness": {im["stem"]: im["sharpness"] for im in images},
        "captions": {
            "captioned": len(captioned), "coverage": round(len(captioned) / n, 3) if n else 0.0,
            "missing": missing, "trigger_word": trigger_word,
            "with_trigger": (len(captioned) - len(without_trigger)) if trigger_word else None,
            "without_trigger": without_trigger,
        },
        "tokens": {
            "t5_max_tokens": t5_max_tokens, "estimate": tokenizer is None,
            "max": max(values, default=0), "mean": round(sum(values) / len(values), 1) if values else 0.0,
            "over_limit": too_long, "over_clip_77": sum(v > CLIP_MAX_TOKENS for v in values),
            "per_image": tokens,
        },
        "pairs": {"count": len(scan.pairs), "problems": [dataclasses.asdict(p) for p in scan.problems]},
        "warnings": warnings,
    }
    return report


def format_report(report: dict) -> str:
    """A plain-text rendering of quality_report() for the CLI and logs."""
    img, cap, tok = report["images"], report["captions"], report["tokens"]
    count = f"{img['count']} image(s)"
    if img.get("recommended_images"):
        count += f" (preset: min {img['min_images']}, recommended {img['recommended_images']})"
    lines = [f"Dataset {report['dataset']} at {report['resolution']} px: "
             f"{'trainable' if report['trainable'] else 'NOT trainable'}", f"  {count}"]
    if report["resolution_histogram"]:
        lines.append("  short side: " + ", ".join(f"{k}px: {v}" for k, v in report["resolution_histogram"].items()))
    if report["buckets"]:
        lines.append("  buckets: " + ", ".join(f"{k} x{v}" for k, v in report["buckets"].items()))
    lines.append(f"  captions: {cap['captioned']}/{img['count']} ({cap['coverage']:.0%})"
                 + (f", trigger '{cap['trigger_word']}' in {cap['with_trigger']}" if cap["trigger_word"] else ""))
    lines.append(f"  caption tokens{' (estimated)' if tok['estimate'] else ''}: max {tok['max']}, "
                 f"mean {tok['mean']}, limit {tok['t5_max_tokens']}")
    if report["warnings"]:
        lines.append(f"  {len(report['warnings'])} warning(s):")
        for w in report["warnings"]:
            lines.append(f"  - [{w['code']}] {w['message']}")
            lines.append(f"      what to do: {w['advice']}")
    else:
        lines.append("  no warnings")
    return "\n".join(lines)
