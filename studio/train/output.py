"""The end of a run: the final samples, both LoRA files with their metadata, and their validation."""

from __future__ import annotations

from pathlib import Path

from ..diagnostics import StudioError
from .checkpoint import check_finite, lora_state
from .sampling import make_samples


def final_weights(state) -> tuple[dict, dict]:
    """(transformer, text encoder) LoRA weights to save: the EMA weights when EMA is on."""
    if state.ema:
        state.ema.copy_to(state.lora_params)
    weights = lora_state(state)
    transformer = {k[len("transformer."):]: v for k, v in weights.items() if k.startswith("transformer.")}
    text = {k[len("text_encoder."):]: v for k, v in weights.items() if k.startswith("text_encoder.")}
    return transformer, text


def metadata(state) -> dict:
    """What both LoRA files say about the run: names, never local paths (studio/sharing.py)."""
    import hashlib

    import yaml

    from ..sharing import base_identity, dataset_name, shareable_config
    cfg, samples = state.cfg, state.samples
    digest = hashlib.sha256("".join(sorted({s.digest for s in samples})).encode()).hexdigest()
    base = base_identity(cfg.model.base, state.info.path, state.info.family, state.info.family_name)
    config = yaml.safe_dump(shareable_config(cfg.to_dict()), sort_keys=False, allow_unicode=True)
    return {"base_model": base.name, "base_family": base.family, "model_variant": base.family,
            "model_family": state.info.family_name, "training_mode": state.mode, "licence": base.licence,
            "learning_rate": cfg.optimizer.lr, "seed": cfg.training.seed,
            "trigger_word": cfg.dataset.trigger_word, "rank": cfg.lora.rank, "alpha": cfg.lora.alpha,
            "steps": state.step, "resolution": cfg.dataset.resolution, "dataset": dataset_name(cfg.dataset.path),
            "dataset_size": len({s.image for s in samples}), "dataset_hash": digest,
            "config": config, "ss_num_train_images": len(samples),
            "ss_resolution": f"({cfg.dataset.resolution}, {cfg.dataset.resolution})",
            "ss_learning_rate": cfg.optimizer.lr, "ss_max_train_steps": cfg.schedule.max_steps,
            "ss_seed": cfg.training.seed, "ss_optimizer": cfg.optimizer.name}


def finish(state) -> list[str]:
    """Final samples, then both LoRA files, each read back and validated; returns their paths."""
    cfg, acc = state.cfg, state.accelerator
    acc.wait_for_everyone()
    if cfg.sample.prompts and acc.is_main_process:
        make_samples(state)
    if not acc.is_main_process:
        return []
    check_finite(state)
    transformer, text = final_weights(state)
    try:
        paths = state.family.write_lora(state.run_dir, cfg.save.run_name, transformer, cfg.lora.rank, cfg.lora.alpha,
                                        metadata(state), text_encoder_layers=text or None,
                                        te_rank=cfg.lora.text_encoder_rank, te_alpha=cfg.lora.text_encoder_alpha,
                                        save_comfyui=cfg.save.comfyui)
    except OSError as exc:
        raise StudioError("SAVE_FAILED", f"Writing the LoRA files failed: {exc.strerror or exc}.") from None
    files = [str(p) for p in paths.values()]
    for path in files:
        try:
            state.family.validate(path)
        except Exception as exc:
            raise StudioError("LORA_INVALID", f"{Path(path).name}: {exc}") from None
    return files
