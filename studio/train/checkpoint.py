"""Checkpoints: atomic writes of the LoRA and the full training state, and reading them back.

A checkpoint folder holds lora.safetensors (peft's own, unscaled state), state.pt (optimiser,
scheduler, random generators, EMA), the config.yaml it was trained with (studio.resume compares
against it) and meta.json; it is written into a temporary folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from ..diagnostics import StudioError

CHECKPOINT_PREFIX = "step"


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def write_checkpoint(checkpoints: Path, step: int, lora_state: dict, train_state: dict,
                     keep_last: int, before_commit: Callable[[Path], None] | None = None,
                     config_yaml: str = "", meta: dict | None = None) -> Path:
    """Write into a temp folder on the same filesystem, then rename: a crash or a full disk
    leaves the previous checkpoint untouched. Old checkpoints are pruned only afterwards.
    `before_commit(temp_folder)` runs when every file is written; if it raises, nothing is kept.
    `config_yaml`, the settings the state was trained with, is kept beside it (studio.resume), and
    `meta` (what else a resume checks, such as the run's mode) goes into meta.json."""
    from safetensors.torch import save_file

    checkpoints.mkdir(parents=True, exist_ok=True)
    final = checkpoints / f"{CHECKPOINT_PREFIX}{step:06d}"
    tmp = checkpoints / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in lora_state.items()}, str(tmp / "lora.safetensors"))
        torch.save(train_state, tmp / "state.pt")
        if config_yaml:
            (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps({**(meta or {}), "step": step, "complete": True}))
        _fsync_tree(tmp)
        if before_commit is not None:
            before_commit(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last > 0:  # 0 keeps every checkpoint (the report card compares them)
        for old in list_checkpoints(checkpoints)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints_size(checkpoints: Path) -> tuple[int, int]:
    """(how many complete checkpoints, their bytes on disk)."""
    kept = list_checkpoints(checkpoints)
    return len(kept), sum(f.stat().st_size for c in kept for f in c.iterdir() if f.is_file())


def list_checkpoints(checkpoints: Path) -> list[Path]:
    """Complete checkpoints, oldest first (half-written temp folders are ignored)."""
    if not checkpoints.is_dir():
        return []
    found = [p for p in checkpoints.iterdir()
             if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: p.name)


def read_checkpoint(path: Path) -> tuple[dict, dict]:
    """Only our own checkpoints are read, and only with weights_only loading: no pickled code."""
    from safetensors.torch import load_file

    lora = load_file(str(path / "lora.safetensors"))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    return lora, state


def latest_checkpoint(checkpoints: Path) -> tuple[Path, dict, dict] | None:
    for path in reversed(list_checkpoints(checkpoints)):
        try:
            lora, state = read_checkpoint(path)
            return path, lora, state
        except Exception:  # a damaged checkpoint: fall back to the one before
            continue
    return None


# --------------------------------------------------------------------------- a run's checkpoints


def lora_state(state) -> dict[str, torch.Tensor]:
    """The trained LoRA weights, keyed `transformer.<peft key>` and `text_encoder.<peft key>`."""
    from peft import get_peft_model_state_dict

    unwrap = state.accelerator.unwrap_model
    out = {f"transformer.{k}": v for k, v in get_peft_model_state_dict(unwrap(state.model)).items()}
    if state.text_encoder is not None:
        out.update({f"text_encoder.{k}": v for k, v in get_peft_model_state_dict(unwrap(state.text_encoder)).items()})
    return out


def training_state(state) -> dict:
    """Everything besides the LoRA that a resume needs to go on exactly as the run would have."""
    return {"step": state.step, "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generator": state.generator.get_state(), "host_generator": state.host_generator.get_state(),
            "ema": state.ema.state_dict() if state.ema else {}}


def check_finite(state) -> None:
    if not all(torch.isfinite(p).all() for p in state.lora_params):
        raise StudioError("NAN_LOSS", f"The LoRA weights became NaN or infinite by step {state.step}.")


def save(state) -> None:
    """Checkpoint the run at its current step (main process only; never a NaN checkpoint)."""
    state.accelerator.wait_for_everyone()
    if not state.accelerator.is_main_process:
        return
    check_finite(state)
    try:
        path = write_checkpoint(state.run_dir / "checkpoints", state.step, lora_state(state),
                                training_state(state), state.cfg.save.keep_last,
                                lambda folder: state.hooks.on_checkpoint_write(state.step, folder),
                                config_yaml=state.cfg.to_yaml(), meta={"mode": state.mode})
    except OSError as exc:
        raise StudioError("SAVE_FAILED", f"Saving the checkpoint at step {state.step} failed: "
                          f"{exc.strerror or exc}.") from None
    state.report.emit("checkpoint", step=state.step, path=str(path.relative_to(state.run_dir)))


def load(state) -> None:
    """Restore the newest readable checkpoint of the run folder into `state` (a warning if none)."""
    from peft import set_peft_model_state_dict

    found = latest_checkpoint(state.run_dir / "checkpoints")
    if found is None:
        state.report.emit("warning", code="NOTHING_TO_RESUME", message="No checkpoint to resume from; "
                          "starting from step 0.")
        return
    path, lora, saved = found
    split = {"transformer": {}, "text_encoder": {}}
    for key, value in lora.items():
        owner, rest = key.split(".", 1)
        split[owner][rest] = value
    set_peft_model_state_dict(state.accelerator.unwrap_model(state.model), split["transformer"])
    if state.text_encoder is not None:
        set_peft_model_state_dict(state.accelerator.unwrap_model(state.text_encoder), split["text_encoder"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    state.generator.set_state(saved["generator"])
    state.host_generator.set_state(saved["host_generator"])
    if state.ema and saved["ema"]:
        state.ema.load_state_dict(saved["ema"])
    state.step = saved["step"]
    changed = f" Changed since then: {'; '.join(state.resume_changes)}." if state.resume_changes else ""
    state.report.emit("warning", code="RESUMED", message=f"Resumed from {path.name} (step {state.step}).{changed}")
