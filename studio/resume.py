"""Which settings may change when a run resumes from its checkpoint.

A checkpoint holds the LoRA weights, the optimiser and scheduler state and the random
generators of its run. It goes on exactly as the run would have only if nothing that fixes a
tensor's shape, the optimiser's state or the order of the data changes. So a resume compares
the new settings with those the checkpoint was trained with (kept in the checkpoint folder as
config.yaml) and refuses any other change with one message, before anything in the run folder
is written. The changes it allows are returned, so the run can record them.
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError, TrainConfig, parse_yaml, read_text

# How long to train, what to sample and save, how to log, and how to fit in memory: none of
# them changes the LoRA's shapes, the optimiser's state or the data order. (A memory tier
# retry after out-of-memory resumes with another tier.) Everything else is fixed for the run.
MAY_CHANGE = ("schedule.max_steps", "schedule.warmup_steps", "sample.", "save.", "log.", "memory.",
              "dataset.cache_latents", "dataset.cache_text_embeddings", "preset")
FIXED = ("memory.num_gpus", "memory.device")  # the data's split across processes; the generators' device


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "params":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def may_change(key: str) -> bool:
    return key not in FIXED and any(key == p or (p.endswith(".") and key.startswith(p)) for p in MAY_CHANGE)


def newest_checkpoint(run_dir: Path) -> Path | None:
    from .training_utils import list_checkpoints

    checkpoints = list_checkpoints(Path(run_dir) / "checkpoints")
    return checkpoints[-1] if checkpoints else None


def trained_with(run_dir: Path) -> tuple[str, dict] | None:
    """(where from, settings) of the newest checkpoint: its own config.yaml, or for a checkpoint
    written without one, the run folder's. None when the run has no checkpoint."""
    newest = newest_checkpoint(run_dir)
    if newest is None:
        return None
    for path in (newest / "config.yaml", Path(run_dir) / "config.yaml"):
        if path.is_file():
            return f"checkpoint {newest.name}", parse_yaml(read_text(path), str(path))
    return None


def check_resume(cfg: TrainConfig, run_dir: Path) -> list[str]:
    """The allowed changes ("key: old → new"); raises ConfigError naming every refused one."""
    found = trained_with(run_dir)
    if found is None:
        return []
    where, old = found
    before, now = _flat(old), _flat(cfg.to_dict())
    changed = [k for k in now if k in before and before[k] != now[k]]
    refused = [k for k in changed if not may_change(k)]
    if refused:
        listed = "; ".join(f"{k} {before[k]!r} in the checkpoint, {now[k]!r} now" for k in refused)
        raise ConfigError(
            f"Cannot resume {run_dir}: its {where} was trained with other values of settings that fix the "
            f"LoRA's shape, the optimiser's state or the data order: {listed}. Resume with the "
            "checkpoint's values, or start a new run (another run folder, or without --resume). Settings "
            "that may change on resume: schedule.max_steps and warmup_steps, sample.*, save.*, log.*, "
            "memory.* (but not num_gpus or device) and the dataset cache switches.")
    return [f"{k}: {before[k]!r} → {now[k]!r}" for k in changed]


def check_resume_mode(run_dir: Path, mode: str) -> None:
    """A run's mode (text-to-image or edit, decided by the dataset: a control/ folder of "before"
    pictures makes an edit run for a family that takes them) fixes its objective; a resume whose
    dataset now decides otherwise is refused. Checkpoints written before the mode was recorded
    are not checked."""
    import json

    newest = newest_checkpoint(run_dir)
    if newest is None:
        return
    try:
        saved = json.loads((newest / "meta.json").read_text(encoding="utf-8")).get("mode")
    except (OSError, ValueError, AttributeError):
        return
    if saved and saved != mode:
        why = ("the dataset now has a control/ folder of before-pictures" if mode == "edit"
               else "the dataset's control/ folder of before-pictures is gone")
        raise ConfigError(
            f"Cannot resume {run_dir}: its checkpoint {newest.name} was trained in {saved} mode, and this "
            f"run would train in {mode} mode ({why}). Put the dataset back as it was and resume, or start a "
            "new run (another run folder, or without --resume).")
