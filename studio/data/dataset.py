"""What the training loop reads: samples, the batch order, and the latent / text caches.

Every sample has a stable id (its position in the sorted file list), and caches are keyed by
content, never by loader order, so a cached latent can't drift away from its caption. The
batch order is a pure function of (seed, epoch): resuming at step N needs no loader state.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..config import TrainConfig
from ..diagnostics import StudioError
from .buckets import fit_to_bucket, make_buckets, nearest_bucket

from ..core.paths import IMAGE_SUFFIXES  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Sample:
    id: int
    image: Path
    caption: str
    bucket: tuple[int, int]    # (width, height) in pixels
    resolution: int
    digest: str                # sha256 of the image file's bytes
    control: Path | None = None  # an edit pair's control ("before") image (studio/data/pairs.py)
    control_digest: str = ""


def image_folder(path: str | Path) -> Path:
    """A dataset made by the studio keeps training images in images/; a plain folder is used as is."""
    folder = Path(path)
    return folder / "images" if (folder / "images").is_dir() else folder


def _caption_for(image: Path, cfg: TrainConfig) -> str:
    text_file = image.with_suffix(".txt")
    caption = ""
    if text_file.is_file():
        caption = text_file.read_text(encoding="utf-8", errors="replace").strip()
    caption = caption or cfg.dataset.default_caption or cfg.dataset.trigger_word
    return caption.replace("[trigger]", cfg.dataset.trigger_word)


def load_samples(cfg: TrainConfig, warn=lambda code, message: None, t5_max_tokens: int = 512,
                 edit: bool = False) -> list[Sample]:
    """The training samples, after the checks a dataset gets at import and in `dataset check`.

    A folder can reach training without being imported (a plain folder in dataset.path, files
    added by hand), so every image is checked here as import checks it: an image import would
    refuse is not trained on, with a NO_IMAGES warning saying why; when none is left the run
    stops. What `dataset check` only advises on (missing captions, blur, near-duplicates, …)
    becomes DATASET_CHECK warnings. `warn(code, message)` receives both. `edit` (an edit family):
    only targets with a control image are trained on (studio/data/pairs.py), each sample carrying it.
    """
    from PIL import Image

    folder = image_folder(cfg.dataset.path)
    if not cfg.dataset.path or not folder.is_dir():
        what = "is a file, not a folder" if folder.is_file() else "does not exist"
        raise StudioError("NO_IMAGES", f"dataset.path: {cfg.dataset.path or '(empty)'} {what}; give the "
                          "folder of training images (or a dataset's folder in the studio's data folder).")
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    resolutions = [cfg.dataset.resolution, *cfg.dataset.extra_resolutions]
    limits = import_limits(min(resolutions))
    controls = edit_controls(cfg, folder, warn) if edit else {}
    samples, kept = [], []
    for path in files:
        if edit and path.stem not in controls:
            continue
        problem = refused_by_import(path, limits)
        if problem:
            warn("NO_IMAGES", f"{path.name}: not trained on. {problem}")
            continue
        with Image.open(path) as im:
            size = im.size
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        caption = _caption_for(path, cfg)
        kept.append(path)
        for res in resolutions:
            if cfg.dataset.buckets:
                bucket = nearest_bucket(*size, make_buckets(res))
            else:
                bucket = (res, res)
            control = controls.get(path.stem)
            samples.append(Sample(len(samples), path, caption, bucket, res, digest, control,
                                  hashlib.sha256(control.read_bytes()).hexdigest() if control else ""))
    if not samples:
        raise StudioError("NO_IMAGES", f"{folder}: no usable images found (looked for "
                          f"{', '.join(sorted(IMAGE_SUFFIXES))}).")
    for code, message in quality_warnings(kept, cfg, t5_max_tokens):
        warn(code, message)
    return samples


def edit_controls(cfg: TrainConfig, folder: Path, warn) -> dict[str, Path]:
    """stem → control image of every pair (an edit family trains on pairs only); refuses a dataset
    without pairs, or with augmentations (they would change a target but not its control)."""
    from .pairs import CONTROL_DIR, UNPAIRED_TARGET, find_pairs

    scan = find_pairs(folder)
    if not scan.pairs:
        raise StudioError("NO_PAIRS", f"{folder}: this model trains edit LoRAs from before/after pairs, and the "
                          f"dataset has none. Put each target's 'before' image in {folder / CONTROL_DIR} under "
                          "the target's name (photo.png + control/photo.jpg), or import a folder or zip with "
                          "control/ and target/ subfolders.")
    if cfg.dataset.augmentations:
        raise StudioError("CONFIG_INVALID", "dataset.augmentations: not available for edit pairs (the control "
                          "image would not get the same change as its target); remove them.")
    skipped = [p.file for p in scan.problems if p.code == UNPAIRED_TARGET]
    if skipped:
        warn("NO_IMAGES", f"{len(skipped)} target(s) without a control image are not trained on: "
                          f"{', '.join(skipped[:8])}. Add their 'before' images to {CONTROL_DIR}/.")
    return {p.stem: p.control for p in scan.pairs}


def import_limits(resolution: int):
    """The import's limits. Its 256 px floor on the short side is half of FLUX's smallest usual
    training resolution (512); training below 512 px (the demo model, tests) halves its own."""
    from .limits import IngestLimits

    return IngestLimits(min_side=min(IngestLimits.min_side, resolution // 2))


def refused_by_import(path: Path, limits) -> str | None:
    """Why `dataset import` would refuse this image file, or None."""
    from .decode import decode_image
    from .limits import Reject

    try:
        data = path.read_bytes()
        if not data:
            return "The file is empty (0 bytes)."
        decode_image(data, path.name, limits)
    except Reject as reject:
        return str(reject)
    except OSError as exc:
        return f"It cannot be read ({exc.strerror or exc})."
    return None


# The quality report's advice that the engine gives itself, or that the refusals above cover.
_NOT_REPEATED = {"unreadable", "no_images", "caption_truncated"}


def quality_warnings(images: list[Path], cfg: TrainConfig, t5_max_tokens: int) -> list[tuple[str, str]]:
    """`dataset check`'s warnings for these images at the run's settings, as (code, message)."""
    from ..config import ConfigError, load_preset
    from .files import DatasetItem
    from .report import quality_report

    guidance = {}
    if cfg.preset:
        try:
            guidance = load_preset(cfg.preset).guidance
        except ConfigError:
            pass
    items = []
    for path in images:
        text = path.with_suffix(".txt")
        caption = text.read_text("utf-8-sig", errors="replace").strip() if text.is_file() else ""
        items.append(DatasetItem(path.stem, path, caption or None))
    report = quality_report(image_folder(cfg.dataset.path), resolution=cfg.dataset.resolution, guidance=guidance,
                            trigger_word=cfg.dataset.trigger_word or None, t5_max_tokens=t5_max_tokens, items=items)
    return [("DATASET_CHECK", f"{w['message']} {w['advice']}") for w in report["warnings"]
            if w["code"] not in _NOT_REPEATED]


def epoch_batches(samples: list[Sample], batch_size: int, seed: int, epoch: int, repeats: int = 1,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    """This rank's batches for one epoch: each batch from one bucket, order fixed by (seed, epoch)."""
    rng = random.Random(seed * 100_003 + epoch)
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for s in samples:
        by_bucket.setdefault(s.bucket, []).extend([s.id] * repeats)
    batches = []
    for bucket in sorted(by_bucket):
        ids = by_bucket[bucket]
        rng.shuffle(ids)
        batches += [ids[i:i + batch_size] for i in range(0, len(ids), batch_size)]
    rng.shuffle(batches)
    # Every rank must take the same number of batches, or the others wait forever at a sync.
    usable = len(batches) // world * world or world
    batches = (batches * world)[:usable] if len(batches) < world else batches[:usable]
    return batches[rank::world]


class BatchPlan:
    """The micro-batch at any index, epoch after epoch, without loader state."""

    def __init__(self, samples, batch_size, seed, repeats=1, rank=0, world=1):
        self.args = (samples, batch_size, seed)
        self.repeats, self.rank, self.world = repeats, rank, world
        self.epoch, self.batches, self.offset = -1, [], 0

    def __getitem__(self, index: int) -> list[int]:
        samples, batch_size, seed = self.args
        while index >= self.offset + len(self.batches) or index < self.offset:
            if index < self.offset:
                self.epoch, self.batches, self.offset = -1, [], 0
            self.offset += len(self.batches)
            self.epoch += 1
            self.batches = epoch_batches(samples, batch_size, seed, self.epoch, self.repeats,
                                         self.rank, self.world)
        return self.batches[index - self.offset]

    def epoch_of(self, index: int) -> int:
        self[index]
        return self.epoch


def load_pixels(sample: Sample, augment=None):
    """The image as a (3, H, W) tensor in [-1, 1], resized and centre-cropped to its bucket."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(sample.image) as im:
        image = im.convert("RGB")
    if augment is not None:
        image = augment(image)
    size, box = fit_to_bucket(*image.size, sample.bucket)
    image = image.resize(size, Image.Resampling.LANCZOS).crop(box)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_control_pixels(sample: Sample):
    """The sample's control image as a (3, H, W) tensor in [-1, 1], through its target's geometry:
    resized to the size the target is resized to (not its own aspect), then the target's crop."""
    import numpy as np
    import torch
    from PIL import Image

    from .pairs import paired_geometry

    with Image.open(sample.image) as target:
        target_size = target.size
    with Image.open(sample.control) as im:
        image = im.convert("RGB")
    size, box = paired_geometry(target_size, sample.bucket)
    image = image.resize(size, Image.Resampling.LANCZOS).crop(box)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


# --------------------------------------------------------------------------- caches


def component_fingerprint(model_path: str, *subfolders: str, extra: str = "") -> str:
    """Identity of model components: their config files and the size/mtime of their weights."""
    h = hashlib.sha256(f"{Path(model_path).resolve() if Path(model_path).exists() else model_path}|{extra}".encode())
    for sub in subfolders:
        folder = Path(model_path) / sub
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            st = f.stat()
            h.update(f"{sub}/{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


class TensorCache:
    """Content-addressed tensors on disk: key → one .safetensors file (written atomically)."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = 0

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def get(self, key: str):
        from safetensors.torch import load_file

        path = self.folder / f"{key}.safetensors"
        if path.is_file():
            try:
                tensors = load_file(str(path))
                self.hits += 1
                return tensors
            except Exception:
                path.unlink(missing_ok=True)  # a damaged entry is recomputed
        self.misses += 1
        return None

    def put(self, key: str, tensors: dict) -> None:
        import os

        from safetensors.torch import save_file

        path = self.folder / f"{key}.safetensors"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
