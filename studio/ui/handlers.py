"""Plain functions behind the Dataset, Captions and Train tabs (monitor/results: runs.py).

Each takes explicit values (the data folder, the chosen dataset, the UI language) and returns
plain values the tab modules put into components. None of them imports gradio or torch, so
they are unit-tested directly; errors come back as readable messages through `UserError`,
which the tab wiring turns into a status line instead of a traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import yaml

from studio.config import (ConfigError, MEMORY_TIERS, TrainConfig, help_rows, list_presets, load_preset,
                           resolve, tier_for_memory, validate)
from studio.demo import studio_run
from studio.i18n import md_text, t, translate_problem

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
# FLUX.1 [schnell] reads 256 T5 tokens, [dev] 512: warn at the stricter limit (the message says both).
T5_LIMIT = 256
MODEL_CHOICES = ["demo", "black-forest-labs/FLUX.1-schnell", "black-forest-labs/FLUX.1-dev"]
# What the Train tab proposes on the built-in demo model instead of a preset's real-model run
# (2,500 steps at 768 px would take most of an hour on a CPU): a first LoRA in about two minutes
# on a 2-core CPU, at the demo model's own resolution and sampling steps (studio/demo).
# Everything else still comes from the preset and tier; real models keep the presets' values.
DEMO_RUN = studio_run()
# Settings shown up front on the Train tab; everything else is generated into "Advanced".
BASIC_KEYS = ("schedule.max_steps", "optimizer.lr", "lora.rank", "dataset.resolution", "sample.prompts",
              "sample.every")
# Chosen elsewhere in the UI (dataset picker, model/tier pickers, run name), or fixed by the worker.
NOT_IN_ADVANCED = set(BASIC_KEYS) | {"preset", "model.base", "dataset.path", "dataset.trigger_word",
                                     "memory.tier", "save.output_dir", "save.run_name"}


class UserError(Exception):
    """A problem the user can fix; the message is already in the user's language."""


def datasets_root(data_dir: Path) -> Path:
    return Path(data_dir) / "datasets"


def dataset_dir(data_dir: Path, name: str | None, lang: str = "en") -> Path:
    if not name or not NAME_RE.match(name):
        raise UserError(t("dataset.none_selected", lang))
    folder = datasets_root(data_dir) / name
    if not folder.is_dir():
        raise UserError(t("dataset.none_selected", lang))
    return folder


# ================================================================= Dataset tab


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


# ================================================================= Captions tab


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


def caption_warnings(data_dir: Path, name: str, lang: str = "en", limit: int = T5_LIMIT) -> list[str]:
    from studio.data.ingest import list_dataset
    from studio.data.report import estimate_tokens

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
        return t("captions.too_long", lang, stem=stem, tokens=tokens, limit=limit)
    if non_latin_warning(caption):
        return t("captions.non_latin", lang, stem=stem)
    return ""


def caption_table(data_dir: Path, name: str | None, lang: str = "en") -> list[list[Any]]:
    """Rows of [stem, caption, ≈tokens, note] for the overview table."""
    from studio.data.ingest import list_dataset
    from studio.data.report import estimate_tokens

    if not name:
        return []
    rows = []
    for item in list_dataset(dataset_dir(data_dir, name, lang)):
        caption = item.caption or ""
        tokens = estimate_tokens(caption) if caption else 0
        rows.append([item.stem, caption, tokens, caption_note(item.stem, caption, lang, T5_LIMIT, tokens)])
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

    note = caption_note(stem, text or "", lang, T5_LIMIT, estimate_tokens(text or ""))
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


# ================================================================= Train tab


@lru_cache(maxsize=1)
def detect_gpu() -> tuple[str, float] | None:
    """(name, GiB) of the first NVIDIA GPU via nvidia-smi: no torch import in the UI process.
    Asked once per process: every page load shows it."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        gpu_name, mib = out.splitlines()[0].rsplit(",", 1)
        return gpu_name.strip(), round(float(mib) / 1024, 1)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None




def gpu_message(lang: str = "en") -> tuple[str, str]:
    """(markdown, suggested tier)."""
    gpu = detect_gpu()
    if gpu is None:
        return t("train.gpu_none", lang), "cpu"
    tier = tier_for_memory(gpu[1])
    return t("train.gpu_detected", lang, name=gpu[0], gib=gpu[1], tier=tier), tier


def licence_text(base: str, lang: str = "en") -> str:
    """The licence of a base model, read from config files only (never the network)."""
    base = (base or "").strip()
    if base == "demo":
        return t("train.licence_demo", lang)
    folder = Path(base)
    if folder.is_dir():
        try:
            config = yaml.safe_load((folder / "transformer" / "config.json").read_text("utf-8"))
            return t("train.licence_dev" if config.get("guidance_embeds") else "train.licence_schnell", lang)
        except (OSError, yaml.YAMLError, AttributeError):
            return t("train.licence_unknown", lang)
    lowered = base.lower()
    if "schnell" in lowered:
        return t("train.licence_schnell", lang)
    if "dev" in lowered:
        return t("train.licence_dev", lang)
    return t("train.licence_unknown", lang)


def preset_text(preset: str, lang: str = "en") -> str:
    return f"**{t(f'preset.{preset}.title', lang)}** — {t(f'preset.{preset}.description', lang)}"


def tier_text(tier: str, lang: str = "en") -> str:
    return f"**{t(f'tier.{tier}.title', lang)}** — {t(f'tier.{tier}.description', lang)}"


def advanced_rows() -> list[tuple[str, str, Any, str]]:
    """help_rows() without sections and without what the Train tab shows elsewhere."""
    return [row for row in help_rows() if row[1] != "section" and row[0] not in NOT_IN_ADVANCED]


def widget_kind(type_name: str) -> str:
    """Which input a setting gets: number, integer, bool, choice, or yaml (lists, optionals)."""
    if type_name == "a whole number":
        return "integer"
    if type_name == "a number":
        return "number"
    if type_name == "true or false":
        return "bool"
    if type_name.startswith("one of "):
        return "choice"
    if type_name == "text":
        return "text"
    return "yaml"


def choices_of(type_name: str) -> list[str]:
    return [c.strip().strip("'") for c in type_name.removeprefix("one of ").split(",")]


def get_key(data: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        data = data[part]
    return data


def set_key(data: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data.setdefault(part, {})
    data[last] = value


def widget_value(kind: str, value: Any) -> Any:
    """A config value as its widget shows it (lists and nulls as one line of YAML)."""
    if kind == "yaml":
        if value is None:  # "not set" reads as an empty box, not as YAML's "null"
            return ""
        return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()
    return value


def parse_widget(kind: str, key: str, raw: Any, lang: str = "en") -> Any:
    """A widget's value back into a config value; raises UserError naming the setting."""
    try:
        if kind == "yaml":
            return yaml.safe_load(raw) if isinstance(raw, str) and raw.strip() else None
        if kind == "integer":
            if raw is None or float(raw) != int(float(raw)):
                raise ValueError("a whole number is needed")
            return int(float(raw))
        if kind == "number":
            return float(raw)
        if kind == "bool":
            return bool(raw)
        return raw if raw is not None else ""
    except (ValueError, TypeError, yaml.YAMLError) as exc:
        raise UserError(t("train.bad_value", lang, key=key, value=raw, error=exc)) from None


def proposed_config(preset: str | None, tier: str | None, base: str = "demo") -> TrainConfig:
    """What the Train tab proposes for a preset + tier: the presets' values, or DEMO_RUN's on the
    demo model."""
    from studio.config import deep_merge

    base = (base or "demo").strip() or "demo"
    user = {"model": {"base": base}}
    if base == "demo":
        user = deep_merge(user, DEMO_RUN)
    return resolve(user, preset=preset or None, tier=tier or "cpu")


def preset_values(preset: str, tier: str, base: str = "demo") -> tuple[list[Any], list[Any], str]:
    """(basic values, advanced values, yaml) for a preset + tier, to fill the Train tab."""
    cfg = proposed_config(preset, tier, base).to_dict()
    basic = [cfg["schedule"]["max_steps"], cfg["optimizer"]["lr"], cfg["lora"]["rank"],
             cfg["dataset"]["resolution"], "\n".join(cfg["sample"]["prompts"]), cfg["sample"]["every"]]
    advanced = [widget_value(widget_kind(tp), get_key(cfg, key)) for key, tp, _, _ in advanced_rows()]
    return basic, advanced, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def build_config(data_dir: Path, *, dataset: str | None, base: str, custom_base: str, preset: str, tier: str,
                 run_name: str, trigger: str, steps: Any, lr: Any, rank: Any, resolution: Any, prompts: str,
                 sample_every: Any, advanced: list[Any], lang: str = "en") -> TrainConfig:
    """The resolved config from the Train tab's fields. Raises UserError with every problem."""
    user: dict = {}
    problems: list[str] = []
    try:  # an advanced field still at the preset's value is not the user's choice (resolve may fit it)
        preset_cfg = resolve({}, preset=preset or None, tier=tier or "cpu").to_dict()
    except ConfigError:
        preset_cfg = {}
    for (key, tp, _, _), raw in zip(advanced_rows(), advanced):
        try:
            value = parse_widget(widget_kind(tp), key, raw, lang)
        except UserError as exc:
            problems.append(str(exc))
            continue
        if not preset_cfg or value != get_key(preset_cfg, key):
            set_key(user, key, value)
    basic = [("schedule.max_steps", "integer", steps), ("optimizer.lr", "number", lr),
             ("lora.rank", "integer", rank), ("dataset.resolution", "integer", resolution),
             ("sample.every", "integer", sample_every)]
    for key, kind, raw in basic:
        try:
            set_key(user, key, parse_widget(kind, key, raw, lang))
        except UserError as exc:
            problems.append(str(exc))
    set_key(user, "sample.prompts", [p.strip() for p in (prompts or "").splitlines() if p.strip()])
    set_key(user, "model.base", (custom_base or "").strip() or base or "demo")
    set_key(user, "dataset.trigger_word", (trigger or "").strip())
    set_key(user, "save.run_name", (run_name or "").strip() or "my-lora")
    if dataset:
        set_key(user, "dataset.path", str(dataset_dir(data_dir, dataset, lang) / "images"))
    if problems:
        raise UserError("\n".join(["**" + t("train.problems", lang) + "**"] + [f"- {p}" for p in problems]))
    try:
        return resolve(user, preset=preset or None, tier=tier or "cpu")
    except ConfigError as exc:
        raise UserError(problems_markdown(exc.problems, lang)) from None


def problems_markdown(problems: list[str], lang: str = "en") -> str:
    return "\n".join(["**" + t("train.problems", lang) + "**"] + [f"- {translate_problem(p, lang)}" for p in problems])


HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")


def source_problems(cfg: TrainConfig) -> list[str]:
    """Where the model comes from, checked before anything is queued: 'demo', a hub id
    (owner/name) or a local diffusers folder; never an arbitrary server path (HARDENING_NOTES §1)."""
    problems = []
    base = (cfg.model.base or "").strip()
    local = Path(base).expanduser()
    if base == "demo":
        pass
    elif HUB_ID_RE.match(base) and ".." not in base and not local.exists():
        pass
    elif not (local.is_dir() and (local / "model_index.json").is_file()):
        problems.append(f"model.base: {base!r} is not 'demo', a Hugging Face model id (owner/name) or a local "
                        "model folder in diffusers layout (with model_index.json).")
    single = (cfg.model.transformer_file or "").strip()
    if single and not (single.endswith(".safetensors") and Path(single).expanduser().is_file()):
        problems.append(f"model.transformer_file: {single!r} is not an existing .safetensors file.")
    return problems


def token_problems(cfg: TrainConfig) -> list[str]:
    """Settings that hold something shaped like an access token: refused, never stored."""
    from studio.jobs import redact

    found = []

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list):
            for item in value:
                walk(item, key)
        elif isinstance(value, str) and redact(value) != value and key not in found:
            found.append(key)

    walk(cfg.to_dict(), "")
    return [f"{key}: contains what looks like an access token; never type tokens into settings (set the "
            "HF_TOKEN environment variable instead)." for key in found]


def check_config(data_dir: Path, cfg: TrainConfig, lang: str = "en") -> None:
    """Validation plus what only the UI knows (a dataset with images); raises UserError."""
    problems = validate(cfg) + source_problems(cfg) + token_problems(cfg)
    if problems:
        raise UserError(problems_markdown(problems, lang))
    images = Path(cfg.dataset.path) if cfg.dataset.path else None
    if images is None or not images.is_dir():
        raise UserError(t("train.no_dataset", lang))
    if not any(images.glob("*.png")):
        raise UserError(t("train.empty_dataset", lang, name=images.parent.name))


def start_training(data_dir: Path, cfg: TrainConfig, lang: str = "en") -> tuple[int, str]:
    """Validate, then queue the job; returns (job id, message)."""
    from studio.jobs import JobStore

    refused = os.environ.get("STUDIO_TRAINING_REFUSED")  # set by app.py on a Space without a login
    if refused:
        raise UserError(refused)
    check_config(data_dir, cfg, lang)
    job_id = JobStore(data_dir).create_job(cfg.save.run_name, cfg.to_dict())
    return job_id, t("train.queued", lang, job_id=job_id)


def export_config(cfg: TrainConfig) -> str:
    """Write the config to a temp file for the download button (gradio serves the temp dir)."""
    folder = Path(tempfile.mkdtemp(prefix="studio-config-"))
    path = folder / f"{cfg.save.run_name or 'config'}.yaml"
    path.write_text(cfg.to_yaml(), encoding="utf-8")
    return str(path)


def import_config(path: str, lang: str = "en") -> TrainConfig:
    try:
        return TrainConfig.from_yaml(Path(path).read_text(encoding="utf-8"), Path(path).name)
    except ConfigError as exc:
        raise UserError(problems_markdown(exc.problems, lang)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(t("common.error", lang, error=exc)) from None


def fields_from_config(cfg: TrainConfig) -> dict[str, Any]:
    """Everything the Train tab shows, from a config (used after import)."""
    d = cfg.to_dict()
    base = d["model"]["base"]
    return {
        "base": base if base in MODEL_CHOICES else "demo", "custom_base": "" if base in MODEL_CHOICES else base,
        "preset": d["preset"] if d["preset"] in list_presets() else None,
        "tier": d["memory"]["tier"] if d["memory"]["tier"] in MEMORY_TIERS else "cpu",
        "run_name": d["save"]["run_name"], "trigger": d["dataset"]["trigger_word"],
        "basic": [d["schedule"]["max_steps"], d["optimizer"]["lr"], d["lora"]["rank"], d["dataset"]["resolution"],
                  "\n".join(d["sample"]["prompts"]), d["sample"]["every"]],
        "advanced": [widget_value(widget_kind(tp), get_key(d, key)) for key, tp, _, _ in advanced_rows()],
        "yaml": cfg.to_yaml(),
    }
