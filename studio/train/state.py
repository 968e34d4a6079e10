"""The built training state: everything a run holds, made in one function, in pipeline order.

check config → (resume check) → inspect model → dataset → accelerator → load → caches → LoRA →
optimiser → batch plan. Every check that needs no weights comes first, and the run folder is
written only after them. Nothing is added to a TrainState after `build_state` returns, except
the step counter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import TrainConfig, check, gpu_only_settings
from ..data.dataset import BatchPlan, load_samples
from ..diagnostics import StudioError
from ..events import Reporter
from ..families.base import EDIT, ModelError, ModelInfo, default_data_dir, inspect_model, run_mode
from ..families.choice import mismatch as family_mismatch
from ..hooks import TrainHooks
from ..models import require_file
from ..resume import check_resume, check_resume_mode
from .caches import Caches, build_caches
from .control import Control
from .lora import add_lora
from .optim import build_optimizer, build_scheduler, param_groups

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainState:
    cfg: TrainConfig
    run_dir: Path
    report: Reporter
    hooks: TrainHooks
    control: Control
    resume: bool
    resume_changes: list[str]      # settings changed since the checkpoint (allowed ones)
    data_dir: Path                 # where the caches live
    info: ModelInfo
    family: object                 # studio.families.base.Family
    mode: str                      # "edit" or "text-to-image" (studio.families.base.run_mode)
    samples: list                  # data.dataset samples (one per image × bucket)
    accelerator: object
    device: torch.device
    generator: torch.Generator     # noise, timesteps, latent draws (on the device)
    host_generator: torch.Generator  # caption dropout (on the host: no GPU sync)
    pipe: object                   # the family's pipeline; its transformer trains
    transformer: torch.nn.Module   # the LoRA-wrapped transformer (unprepared)
    text_encoder: torch.nn.Module | None  # the trainable text encoder (prepared), when its LoRA trains
    model: torch.nn.Module         # the transformer as accelerate prepared it
    caches: Caches
    sample_prompts: list[str]
    targets: list[str]
    optimizer: object
    scheduler: object
    lora_params: list[torch.Tensor]
    ema: object | None
    plan: BatchPlan
    step: int = 0
    sample_controls: list = field(default_factory=list)  # an edit family's input image per sample prompt

    @property
    def text(self) -> dict[str, dict]:
        return self.caches.text


def build_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    m = cfg.memory
    cpu = m.device == "cpu" or (m.device == "auto" and not torch.cuda.is_available())
    if not cpu and not torch.cuda.is_available():
        raise StudioError("GPU_REQUIRED", f"memory.tier {m.tier} needs a CUDA GPU and none was "
                          "found; choose the cpu tier.")
    needs_gpu = gpu_only_settings(cfg) if cpu else []
    if needs_gpu:
        raise StudioError("GPU_REQUIRED", "No CUDA GPU was found, and " + "; ".join(
            f"{setting} {value} needs one ({instead})" for setting, value, instead in needs_gpu) + ".")
    return Accelerator(cpu=cpu, mixed_precision=m.mixed_precision,
                       gradient_accumulation_steps=cfg.training.gradient_accumulation)


def base_dtype(cfg: TrainConfig) -> torch.dtype:
    m = cfg.memory
    if m.base_precision in ("int8", "fp8", "nf4"):
        return torch.bfloat16  # quantised layers compute in bf16 (models.quantization_config)
    if m.base_precision == "auto":
        return {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[m.mixed_precision]
    return DTYPES[m.base_precision]


def inspect(cfg: TrainConfig, data_dir: Path) -> ModelInfo:
    """The base model's family and sizes from its config files, checked against the settings."""
    try:
        info = inspect_model(cfg.model.base, cfg.model.revision, data_dir)
        require_file(cfg.model.transformer_file, "model.transformer_file")
    except ModelError as exc:
        raise StudioError("MODEL_MISSING", str(exc)) from None
    wrong_family = family_mismatch(cfg.model.family, info)
    if wrong_family:
        raise StudioError("FAMILY_MISMATCH", wrong_family)
    check_transformer_file(cfg.model.transformer_file, info)
    if cfg.lora.rank > info.inner_dim:  # every block layer is at least inner_dim wide
        raise StudioError("RANK_TOO_LARGE", f"lora.rank {cfg.lora.rank} is larger than this model's "
                          f"layers allow (hidden size {info.inner_dim}); use at most {info.inner_dim}.")
    title = info.model_family.variants[info.family].title
    if cfg.training.guidance is not None and not info.guidance_embeds:
        raise StudioError("GUIDANCE_UNSUPPORTED", f"training.guidance is {cfg.training.guidance}, but "
                          f"{cfg.model.base} has no guidance embeddings ({title}).")
    if cfg.sample.true_cfg > 1 and not info.model_family.true_cfg_args(cfg.sample.true_cfg):
        raise StudioError("CONFIG_INVALID", f"sample.true_cfg is {cfg.sample.true_cfg}, but {title} samples are "
                          "guided against the empty prompt by sample.guidance already; set sample.true_cfg to 1.")
    if cfg.lora.train_text_encoder and not info.model_family.text_encoder_targets:
        raise StudioError("CONFIG_INVALID", f"lora.train_text_encoder is on, but {title} has no text-encoder "
                          "LoRA in the studio; turn it off (the transformer's LoRA learns the subject).")
    if cfg.save.comfyui and not info.model_family.comfyui_layout:
        raise StudioError("CONFIG_INVALID", f"save.comfyui is on, but {title} LoRAs have no ComfyUI layout in the "
                          "studio; turn it off (the diffusers file is written, see the README's family notes).")
    return info


def check_transformer_file(path: str, info: ModelInfo) -> None:
    """A single-file transformer whose key names are not the model family's is refused before loading."""
    if not path:
        return
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            keys = list(f.keys())
    except Exception:  # not a safetensors file: the family's loader says what is wrong with it
        return
    if not info.model_family.detect_keys(keys):
        raise StudioError("MODEL_MISSING", f"model.transformer_file: {path} holds no "
                          f"{info.model_family.variants[info.family].title} transformer (its tensor names "
                          f"begin {', '.join(sorted(keys)[:3]) or 'nowhere: it is empty'}).")


def build_state(cfg: TrainConfig, run_dir: Path, reporter: Reporter, resume: bool = False,
                hooks: TrainHooks | None = None, control: Control | None = None,
                data_dir: str | Path | None = None) -> TrainState:
    cfg, run_dir = check(cfg), Path(run_dir)
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    control = control or Control(run_dir)
    resume_changes = check_resume(cfg, run_dir) if resume else []
    info = inspect(cfg, data_dir)
    family = info.model_family

    def warn(code: str, message: str) -> None:
        reporter.emit("warning", code=code, message=message)

    mode = run_mode(family, cfg.dataset.path)
    if resume:
        check_resume_mode(run_dir, mode)
    samples = load_samples(cfg, warn=warn, t5_max_tokens=info.token_limit, edit=mode == EDIT)
    accelerator = build_accelerator(cfg)
    for folder in (run_dir, run_dir / "samples", control.folder):
        folder.mkdir(parents=True, exist_ok=True)
    cfg.write(run_dir / "config.yaml")
    device, rank, seed = accelerator.device, accelerator.process_index, cfg.training.seed
    torch.manual_seed(seed)
    generator = torch.Generator(device).manual_seed(seed + rank)
    host_generator = torch.Generator().manual_seed(seed + 7919 + rank)

    try:
        pipe = family.load(info, cfg.model.transformer_file, base_dtype(cfg), cfg.model.revision,
                           cfg.memory.base_precision)
    except ModelError as exc:
        raise StudioError("MODEL_MISSING", str(exc)) from None
    prompts = [p.replace("[trigger]", cfg.dataset.trigger_word) for p in cfg.sample.prompts]
    caches = build_caches(cfg, family, info, pipe, samples, prompts, device, data_dir, warn, control.stop_if_signalled)
    transformer = pipe.transformer
    targets, text_encoder = add_lora(cfg, family, pipe, device)

    groups = param_groups(cfg, transformer, text_encoder, family.block_of)
    optimizer = build_optimizer(cfg, groups)
    scheduler = build_scheduler(cfg, optimizer)
    lora_params = [p for g in groups for p in g["params"]]
    ema = None
    if cfg.training.ema:
        from diffusers.training_utils import EMAModel
        ema = EMAModel(lora_params, decay=cfg.training.ema_decay, use_ema_warmup=False)
    prepared = accelerator.prepare(*[m for m in (transformer, text_encoder) if m is not None], optimizer)
    model, optimizer = prepared[0], prepared[-1]
    if text_encoder is not None:
        text_encoder = prepared[1]
    plan = BatchPlan(samples, cfg.training.batch_size, seed, cfg.dataset.repeats, rank, accelerator.num_processes)
    return TrainState(cfg=cfg, run_dir=run_dir, report=reporter, hooks=hooks or TrainHooks(), control=control,
                      resume=resume, resume_changes=resume_changes, data_dir=data_dir, info=info, family=family,
                      mode=mode, samples=samples, accelerator=accelerator, device=device, generator=generator,
                      host_generator=host_generator, pipe=pipe, transformer=transformer, text_encoder=text_encoder,
                      model=model, caches=caches, sample_prompts=prompts, targets=targets, optimizer=optimizer,
                      scheduler=scheduler, lora_params=lora_params, ema=ema, plan=plan,
                      sample_controls=sample_controls(samples, len(prompts)))


def sample_controls(samples, count: int) -> list:
    """Fixed input images for the sample prompts of an edit run: the controls of the first pairs,
    in dataset order (prompt k gets pair k, cycling when there are fewer pairs than prompts)."""
    controls = list(dict.fromkeys(s.control for s in samples if s.control is not None))
    return [controls[k % len(controls)] for k in range(count)] if controls else []
