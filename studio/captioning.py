"""Auto-captioning: Florence-2 (default), BLIP, or a model-free basic captioner.

Each captioner loads once, captions PIL images in batches with a `(done, total)` progress
callback, uses CUDA when there is one and frees it in `close()`. Loading never hangs offline:
the local folder / HF cache is tried first, then the hub is probed with a short timeout, and
anything missing becomes `CaptionerUnavailable` with a message that names the model, where we
looked, how to provide it, and that `--captioner basic` always works.

torch / transformers are imported inside functions: the UI imports this module at start-up.
"""

from __future__ import annotations

import gc
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol, runtime_checkable

from PIL import Image

Progress = Callable[[int, int], None]
Placement = Literal["start", "end", "none"]
FlorenceTask = Literal["<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"]

DEFAULT_FLORENCE = "florence-community/Florence-2-base"  # the transformers-native conversion
DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"
ALIASES = {"florence2": DEFAULT_FLORENCE, "florence": DEFAULT_FLORENCE, "blip": DEFAULT_BLIP}
HUB_PROBE_TIMEOUT_S = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 5)  # a dead network fails in seconds


class CaptionerUnavailable(RuntimeError):
    """The captioning model cannot be loaded here; the message says why and what to do."""


@runtime_checkable
class Captioner(Protocol):
    name: str

    def caption(self, images: list[Image.Image], progress: Progress | None = None) -> list[str]: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- finding model files


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in ("1", "true", "yes", "on") or constants.is_offline_mode()


def _unavailable(model: str, why: str) -> CaptionerUnavailable:
    from huggingface_hub import constants

    return CaptionerUnavailable(
        f"Captioning model '{model}' is not available: {why}\n"
        f"  Looked in: the folder '{model}' (if it is a path) and the Hugging Face cache {constants.HF_HUB_CACHE}.\n"
        f"  To provide it: on a machine with internet run `hf download {model}` (then copy the cache "
        "folder here, or point HF_HOME at it), or pass the path of a downloaded model folder.\n"
        "  Or caption without a model: use the basic captioner (`--captioner basic`: trigger word + "
        "class word + words from the file name)."
    )


def resolve_model_dir(model_id_or_path: str) -> Path:
    """A local folder holding the model: the path itself, the HF cache, or a fresh download."""
    path = Path(model_id_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise _unavailable(model_id_or_path, f"{path} exists but has no config.json, so it is not a "
                               "saved transformers model folder.")
        return path
    if model_id_or_path.startswith((".", "/", "~")) or model_id_or_path.count("/") > 1:
        raise _unavailable(model_id_or_path, "that path does not exist.")

    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    try:  # the cache first: no network at all
        return Path(snapshot_download(model_id_or_path, local_files_only=True))
    except Exception:
        pass
    if _offline():
        raise _unavailable(model_id_or_path, "it is not in the local cache and offline mode is on "
                           "(HF_HUB_OFFLINE=1).")
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:  # one short request decides whether the hub is reachable, instead of long retries later
        info = api.model_info(model_id_or_path, timeout=HUB_PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise _unavailable(model_id_or_path, "there is no such model on the Hugging Face hub "
                           "(check the spelling, or log in for a gated/private model).") from None
    except Exception as exc:
        raise _unavailable(model_id_or_path, f"it is not cached and the hub cannot be reached "
                           f"({type(exc).__name__}: {str(exc)[:200]}).") from None
    files = [s.rfilename for s in info.siblings or []]
    weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["*.bin"]
    try:
        return Path(api.snapshot_download(model_id_or_path, allow_patterns=["*.json", "*.txt", "*.model"] + weights,
                                          etag_timeout=HUB_PROBE_TIMEOUT_S))
    except Exception as exc:
        raise _unavailable(model_id_or_path, f"the download failed ({type(exc).__name__}: {str(exc)[:200]}).") from None


def model_type_of(model_dir: Path) -> str:
    try:
        return json.loads((Path(model_dir) / "config.json").read_text("utf-8")).get("model_type", "")
    except (OSError, ValueError):
        return ""


# ---------------------------------------------------------------- model captioners


class _TransformersCaptioner:
    """Shared load / batch / free logic; subclasses say which classes and how to prompt."""

    name = "transformers"
    default_max_new_tokens = 77

    def __init__(self, model_id_or_path: str, device: str | None = None, batch_size: int = 4,
                 max_new_tokens: int | None = None, num_beams: int = 3):
        import torch

        self.model_id = model_id_or_path
        self.model_dir = resolve_model_dir(model_id_or_path)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # fp16 halves GPU memory for these small models without visible caption changes; CPU needs fp32.
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self.batch_size, self.num_beams = batch_size, num_beams
        self.max_new_tokens = max_new_tokens or self.default_max_new_tokens
        try:
            self.processor, self.model = self._load(self.model_dir)
        except CaptionerUnavailable:
            raise
        except Exception as exc:
            raise _unavailable(model_id_or_path, f"loading {self.model_dir} failed ({type(exc).__name__}: "
                               f"{str(exc)[:300]}).") from None
        self.model.to(self.device, dtype=self.dtype).eval()

    def _load(self, model_dir: Path):
        raise NotImplementedError

    def _inputs(self, images: list[Image.Image]) -> dict:
        raise NotImplementedError

    def caption(self, images: list[Image.Image], progress: Progress | None = None) -> list[str]:
        import torch

        if self.model is None:
            raise RuntimeError(f"{self.name} captioner was closed; load it again")
        out: list[str] = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            inputs = self._inputs(batch).to(self.device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
            with torch.inference_mode():
                ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                          num_beams=self.num_beams, do_sample=False)
            out += [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
            if progress:
                progress(len(out), len(images))
        return out

    def close(self) -> None:
        """Drop the model and give its (GPU) memory back."""
        import torch

        self.model = self.processor = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FlorenceCaptioner(_TransformersCaptioner):
    """Florence-2 via transformers' native Florence2ForConditionalGeneration (no remote code)."""

    name = "florence2"
    default_max_new_tokens = 256  # <MORE_DETAILED_CAPTION> runs to a paragraph

    def __init__(self, model_id_or_path: str = DEFAULT_FLORENCE, task: FlorenceTask = "<CAPTION>", **kw):
        if task not in ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>"):
            raise ValueError(f"unknown Florence-2 task {task!r}; use <CAPTION>, <DETAILED_CAPTION> or "
                             "<MORE_DETAILED_CAPTION>")
        self.task = task
        super().__init__(model_id_or_path, **kw)

    def _load(self, model_dir: Path):
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        return (AutoProcessor.from_pretrained(model_dir, local_files_only=True),
                Florence2ForConditionalGeneration.from_pretrained(model_dir, local_files_only=True))

    def _inputs(self, images):
        # The processor inserts the image placeholder tokens that generate() needs.
        return self.processor(text=[self.task] * len(images), images=images, return_tensors="pt")


class BlipCaptioner(_TransformersCaptioner):
    """BLIP image captioning: lighter than Florence-2, short captions."""

    name = "blip"
    default_max_new_tokens = 40  # BLIP captions are one short sentence

    def __init__(self, model_id_or_path: str = DEFAULT_BLIP, **kw):
        super().__init__(model_id_or_path, **kw)

    def _load(self, model_dir: Path):
        from transformers import BlipForConditionalGeneration, BlipProcessor

        return (BlipProcessor.from_pretrained(model_dir, local_files_only=True),
                BlipForConditionalGeneration.from_pretrained(model_dir, local_files_only=True))

    def _inputs(self, images):
        return self.processor(images=images, return_tensors="pt")


# ---------------------------------------------------------------- the always-available captioner

_CAMERA_WORDS = {"img", "image", "dsc", "dscn", "dscf", "pxl", "photo", "pic", "screenshot", "whatsapp",
                 "mvimg", "copy", "edited", "final", "jpeg", "jpg", "png", "heic", "scan"}


def words_from_filename(name: str) -> list[str]:
    """'Dog_on-theBeach_003.jpg' -> ['dog', 'on', 'the', 'beach']; camera prefixes and numbers dropped."""
    stem = Path(name).stem
    stem = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem)
    words = [w.lower() for w in re.split(r"[^A-Za-z]+", stem) if w]
    return [w for w in words if w not in _CAMERA_WORDS and len(w) > 1 or w == "a"]


class BasicCaptioner:
    """Trigger word + class word + file-name words. No model, never unavailable."""

    name = "basic"

    def __init__(self, class_word: str = "", trigger_word: str | None = None):
        self.class_word, self.trigger_word = class_word.strip(), (trigger_word or "").strip()

    def caption(self, images: list[Image.Image], progress: Progress | None = None) -> list[str]:
        out = []
        for im in images:
            source = getattr(im, "filename", "") or im.info.get("filename", "")
            head = " ".join(w for w in (self.trigger_word, self.class_word) if w)
            tail = " ".join(words_from_filename(source)) if source else ""
            out.append(", ".join(p for p in (head, tail) if p))
            if progress:
                progress(len(out), len(images))
        return out

    def close(self) -> None:
        pass


def load_captioner(name_or_path: str, *, class_word: str = "", trigger_word: str | None = None,
                   task: FlorenceTask = "<CAPTION>", device: str | None = None, batch_size: int = 4,
                   max_new_tokens: int | None = None) -> Captioner:
    """'basic', 'florence2', 'blip', a hub id or a folder; the config's model_type picks the class."""
    if name_or_path == "basic":
        return BasicCaptioner(class_word, trigger_word)
    model = ALIASES.get(name_or_path.lower(), name_or_path)
    model_dir = resolve_model_dir(model)
    kind = model_type_of(model_dir)
    kw = dict(device=device, batch_size=batch_size, max_new_tokens=max_new_tokens)
    if kind == "florence2":
        return FlorenceCaptioner(str(model_dir), task=task, **kw)
    if kind == "blip":
        return BlipCaptioner(str(model_dir), **kw)
    raise _unavailable(model, f"its model_type is {kind or 'unknown'!r}; supported captioners are "
                       "Florence-2 (florence2) and BLIP (blip).")


# ---------------------------------------------------------------- caption styling

_BOILERPLATE = [
    r"(the|this) (image|picture|photo|photograph) (shows|depicts|features|displays|contains|captures|is of)",
    r"(this|it) is (an?|the) (image|picture|photo|photograph|close-up) (of|showing|that shows)",
    r"in (this|the) (image|picture|photo|photograph),?",
    r"(there is|there are)",
]
_BOILERPLATE_RE = re.compile(r"^\s*(?:" + "|".join(_BOILERPLATE) + r")\s*", re.IGNORECASE)
_BLIP_ARTIFACTS_RE = re.compile(r"\b(arafed|araffe|arafe|arrafed)\b\s*", re.IGNORECASE)


def style_caption(text: str, trigger_word: str | None = None, placement: Placement = "start", prefix: str = "",
                  suffix: str = "", strip_boilerplate: bool = True, max_chars: int | None = None) -> str:
    """Clean a model caption and place the trigger word / prefix / suffix around it."""
    body = " ".join(text.split())
    if strip_boilerplate:
        body = _BLIP_ARTIFACTS_RE.sub("", body)
        while (stripped := _BOILERPLATE_RE.sub("", body, count=1)) != body:
            body = stripped
        body = body.strip(" ,")
    trigger = (trigger_word or "").strip()
    add_trigger = bool(trigger) and placement != "none" and re.search(
        rf"(?<!\w){re.escape(trigger)}(?!\w)", body, re.IGNORECASE) is None
    if placement not in ("start", "end", "none"):
        raise ValueError(f"placement must be 'start', 'end' or 'none', got {placement!r}")
    head = " ".join(p for p in (prefix.strip(), trigger if add_trigger and placement == "start" else "") if p)
    tail = " ".join(p for p in (trigger if add_trigger and placement == "end" else "", suffix.strip()) if p)
    if max_chars is not None:  # cut the body, never the trigger word or the fixed parts
        room = max_chars - len(head) - len(tail) - 4
        if len(body) > room:
            body = body[: max(room, 0)].rsplit(" ", 1)[0].rstrip(" ,.;") if room > 0 else ""
    return ", ".join(p for p in (head, body, tail) if p)


def non_latin_warning(caption: str, name: str = "caption", threshold: float = 0.5) -> str | None:
    """A warning when most letters are not Latin script: FLUX's T5 and CLIP are English-trained."""
    letters = [c for c in caption if c.isalpha()]
    if not letters:
        return None
    other = sum(1 for c in letters if not unicodedata.name(c, "").startswith("LATIN"))
    if other / len(letters) <= threshold:
        return None
    return (f"{name}: {other / len(letters):.0%} of the letters are not Latin script. FLUX's text encoders "
            "were trained on English, so such captions teach little; translate them to English.")


# ---------------------------------------------------------------- captioning a dataset folder


@dataclass
class CaptionStyle:
    trigger_word: str | None = None
    placement: Placement = "start"
    prefix: str = ""
    suffix: str = ""
    strip_boilerplate: bool = True
    max_chars: int | None = None


@dataclass
class CaptionRun:
    written: list[str]  # stems whose .txt was written
    skipped: list[str]  # stems left alone because they already had a caption
    warnings: list[str]


def caption_dataset(dataset_dir: Path, captioner: Captioner, style: CaptionStyle = CaptionStyle(),
                    overwrite: bool = False, only_missing: bool = True, batch_size: int = 8,
                    progress: Progress | None = None) -> CaptionRun:
    """Caption dataset_dir/images/*.png into same-stem .txt files.

    Existing captions are never touched unless overwrite=True; with overwrite=True and
    only_missing=False every image is captioned again.
    """
    images_dir = Path(dataset_dir) / "images"
    pngs = sorted(images_dir.glob("*.png")) if images_dir.is_dir() else []
    has_caption = {p.stem for p in pngs if p.with_suffix(".txt").is_file()}
    redo_all = overwrite and not only_missing
    todo = [p for p in pngs if redo_all or p.stem not in has_caption]
    run = CaptionRun(written=[], skipped=sorted(has_caption - {p.stem for p in todo}), warnings=[])
    for start in range(0, len(todo), batch_size):
        paths = todo[start : start + batch_size]
        batch = []
        for p in paths:  # images are loaded one batch at a time so a large dataset fits in memory
            im = Image.open(p)
            im.load()
            batch.append(im)
        texts = captioner.caption(batch)
        for p, raw in zip(paths, texts):
            text = style_caption(raw, style.trigger_word, style.placement, style.prefix, style.suffix,
                                 style.strip_boilerplate, style.max_chars)
            if not text:
                run.warnings.append(f"{p.name}: the captioner returned an empty caption; nothing written.")
                continue
            if warning := non_latin_warning(text, p.with_suffix(".txt").name):
                run.warnings.append(warning)
            txt = p.with_suffix(".txt")
            try:
                with open(txt, "w" if overwrite else "x", encoding="utf-8") as fh:  # "x": never clobber
                    fh.write(text)
                run.written.append(p.stem)
            except FileExistsError:
                run.skipped.append(p.stem)
        for im in batch:
            im.close()
        if progress:
            progress(min(start + batch_size, len(todo)), len(todo))
    return run
