"""The training engine: FLUX.1 LoRA training, top to bottom in pipeline order.

check config → inspect model → load → caches → free encoders → add LoRA → optimiser →
resume → loop (sample, checkpoint, controls) → save both LoRA files → validate.

The engine has no UI imports. It reports through `events.Reporter` and is steered by flag
files in `run_dir/control/` and by SIGTERM/SIGINT (checkpoint, then exit "interrupted").
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import torch

from . import training_utils as tu
from .config import ConfigError, TrainConfig, check, gpu_only_settings
from .data.dataset import BatchPlan, TensorCache, component_fingerprint, load_pixels, load_samples
from .diagnostics import StudioError, next_lower_tier
from .events import EXIT_CANCELLED, EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_OOM, Reporter
from .hooks import TrainHooks
from .models import ModelError, inspect_model, load_pipeline, require_file
from .resume import check_resume

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Stop(Exception):
    """Raised at a step boundary when the run must end early (cancel or signal)."""

    def __init__(self, status: str, exit_code: int):
        self.status, self.exit_code = status, exit_code


from .core.paths import data_dir  # noqa: E402  (the one default data folder)


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: Path, reporter: Reporter, resume: bool = False,
                 hooks: TrainHooks | None = None):
        self.cfg, self.run_dir, self.report, self.resume = cfg, Path(run_dir), reporter, resume
        self.hooks = hooks or TrainHooks()
        self.control = self.run_dir / "control"
        self.signalled = None
        self.step = 0
        self.cache_stats: dict[str, int] = {}

    # ------------------------------------------------------------------ set-up

    def setup(self) -> None:
        cfg = check(self.cfg)
        # Every check that needs no weights comes first, and the run folder is written only after them.
        self.resume_changes = check_resume(cfg, self.run_dir) if self.resume else []
        try:
            self.info = inspect_model(cfg.model.base, cfg.model.revision, data_dir())
            require_file(cfg.model.transformer_file, "model.transformer_file")
        except ModelError as exc:
            raise StudioError("MODEL_MISSING", str(exc)) from None
        if cfg.lora.rank > self.info.inner_dim:  # every block layer is at least inner_dim wide
            raise StudioError("RANK_TOO_LARGE", f"lora.rank {cfg.lora.rank} is larger than this model's "
                              f"layers allow (hidden size {self.info.inner_dim}); use at most {self.info.inner_dim}.")
        if cfg.training.guidance is not None and not self.info.guidance_embeds:
            raise StudioError("GUIDANCE_UNSUPPORTED", f"training.guidance is {cfg.training.guidance}, but "
                              f"{cfg.model.base} has no guidance embeddings (a schnell-type model).")
        self.samples = load_samples(cfg, warn=lambda code, msg: self.report.emit("warning", code=code, message=msg),
                                    t5_max_tokens=self.info.t5_max_length)
        self.accelerator = self._accelerator()
        for folder in (self.run_dir, self.run_dir / "samples", self.control):
            folder.mkdir(parents=True, exist_ok=True)
        cfg.write(self.run_dir / "config.yaml")
        self.device = self.accelerator.device
        torch.manual_seed(cfg.training.seed)
        self.generator = torch.Generator(self.device).manual_seed(cfg.training.seed + self.accelerator.process_index)
        # Caption dropout is decided on the host, so it costs no GPU sync.
        self.host_generator = torch.Generator().manual_seed(cfg.training.seed + 7919 + self.accelerator.process_index)

        try:
            self.pipe = load_pipeline(self.info, cfg.model.transformer_file, self._base_dtype(), cfg.model.revision,
                                      cfg.memory.base_precision)
        except ModelError as exc:
            raise StudioError("MODEL_MISSING", str(exc)) from None
        self.pipe.set_progress_bar_config(disable=True)
        self.transformer = self.pipe.transformer
        self.transformer.requires_grad_(False)
        self.pipe.vae.requires_grad_(False)
        self.pipe.text_encoder.requires_grad_(False)
        self.pipe.text_encoder_2.requires_grad_(False)
        self._build_caches()
        self._add_lora()
        self._optimiser()

    def _accelerator(self):
        from accelerate import Accelerator

        m = self.cfg.memory
        cpu = m.device == "cpu" or (m.device == "auto" and not torch.cuda.is_available())
        if not cpu and not torch.cuda.is_available():
            raise StudioError("GPU_REQUIRED", f"memory.tier {m.tier} needs a CUDA GPU and none was "
                              "found; choose the cpu tier.")
        needs_gpu = gpu_only_settings(self.cfg) if cpu else []
        if needs_gpu:
            raise StudioError("GPU_REQUIRED", "No CUDA GPU was found, and " + "; ".join(
                f"{setting} {value} needs one ({instead})" for setting, value, instead in needs_gpu) + ".")
        return Accelerator(cpu=cpu, mixed_precision=m.mixed_precision,
                           gradient_accumulation_steps=self.cfg.training.gradient_accumulation)

    def _base_dtype(self):
        m = self.cfg.memory
        if m.base_precision in ("int8", "fp8", "nf4"):
            return torch.bfloat16  # quantised layers compute in bf16 (models.quantization_config)
        if m.base_precision == "auto":
            return {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[m.mixed_precision]
        return DTYPES[m.base_precision]

    # ------------------------------------------------------------------ caches

    def _encode_text(self, captions: list[str]) -> dict[str, dict]:
        """Caption → {prompt_embeds, pooled}; cached on disk by caption and text-encoder identity."""
        cache = TensorCache(data_dir() / "cache" / "text") if self.cfg.dataset.cache_text_embeddings else None
        ident = component_fingerprint(self.info.path, "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
        out = {}
        pipe = self.pipe
        pipe.text_encoder.to(self.device)
        pipe.text_encoder_2.to(self.device)
        for caption in dict.fromkeys(captions):
            key = TensorCache.key("text", ident, self.info.t5_max_length, caption)
            hit = cache.get(key) if cache else None
            if hit is None:
                tokens = pipe.tokenizer_2(caption, truncation=False)["input_ids"]
                if len(tokens) > self.info.t5_max_length:
                    self.report.emit("warning", code="PROMPT_TRUNCATED", message=(
                        f"Caption {caption[:60]!r}… has {len(tokens)} T5 tokens; only the first "
                        f"{self.info.t5_max_length} are used."))
                with torch.no_grad():
                    embeds, pooled, _ = pipe.encode_prompt(caption, None, device=self.device,
                                                           max_sequence_length=self.info.t5_max_length)
                hit = {"prompt_embeds": embeds[0].float().cpu(), "pooled": pooled[0].float().cpu()}
                if cache:
                    cache.put(key, hit)
            out[caption] = hit
        if cache:
            self.cache_stats.update(text_hits=cache.hits, text_misses=cache.misses)
        return out

    def _build_caches(self) -> None:
        cfg = self.cfg
        self.augment = None
        if cfg.dataset.augmentations:
            from .data.augment import build_augmentations
            self.augment = build_augmentations([a.__dict__ for a in cfg.dataset.augmentations])
            self.report.emit("warning", code="CACHE_BYPASSED", message=(
                "Augmentation is on, so latents are encoded every step instead of cached "
                "(a cached latent would be the un-augmented image)."))
        prompts = [p.replace("[trigger]", cfg.dataset.trigger_word) for p in cfg.sample.prompts]
        self.text = self._encode_text([s.caption for s in self.samples] + [""] + prompts)
        self.sample_prompts = prompts

        self.latents: dict[int, torch.Tensor] = {}
        self.vae_ident = component_fingerprint(self.info.path, "vae")
        if cfg.dataset.cache_latents and self.augment is None:
            cache = TensorCache(data_dir() / "cache" / "latents")
            self.pipe.vae.to(self.device)
            for s in self.samples:
                key = TensorCache.key("latent", self.vae_ident, s.digest, s.bucket)
                hit = cache.get(key)
                if hit is None:
                    hit = {"parameters": self._encode_image(s)}
                    cache.put(key, hit)
                self.latents[s.id] = hit["parameters"]
                self._poll_signals()
            self.cache_stats.update(latent_hits=cache.hits, latent_misses=cache.misses)
        # The text encoders are not needed again unless their LoRA trains: free them now.
        self.pipe.text_encoder_2 = None
        if not cfg.lora.train_text_encoder:
            self.pipe.text_encoder = None
        if self.device.type == "cuda":
            self.pipe.vae.to("cpu")  # back on the GPU only to sample
            torch.cuda.empty_cache()

    def _encode_image(self, sample) -> torch.Tensor:
        pixels = load_pixels(sample, self.augment).unsqueeze(0).to(self.device, self.pipe.vae.dtype)
        with torch.no_grad():
            return self.pipe.vae.encode(pixels).latent_dist.parameters[0].float().cpu()

    # ------------------------------------------------------------------ LoRA and optimiser

    def _add_lora(self) -> None:
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        lo = self.cfg.lora
        self.targets = tu.target_modules(self.cfg, self.transformer)
        tu.check_model_fit(self.cfg, self.transformer, self.targets)
        self.transformer.add_adapter(LoraConfig(r=lo.rank, lora_alpha=lo.alpha, lora_dropout=lo.dropout,
                                                init_lora_weights="gaussian", target_modules=self.targets))
        self.text_encoder = None
        if lo.train_text_encoder:
            from peft import inject_adapter_in_model

            # transformers' own add_adapter wants a newer peft; peft's injection is the same layer.
            self.text_encoder = self.pipe.text_encoder.to(self.device)
            inject_adapter_in_model(LoraConfig(
                r=lo.text_encoder_rank, lora_alpha=lo.text_encoder_alpha, lora_dropout=lo.dropout,
                init_lora_weights="gaussian", target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]),
                self.text_encoder)
        trainable = [m for m in (self.transformer, self.text_encoder) if m is not None]
        cast_training_params(trainable, torch.float32)  # LoRA in fp32 even over a bf16 base
        if self.cfg.memory.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        if self.cfg.memory.block_offload and self.device.type == "cuda":
            # 8 GB tier: blocks live in CPU memory and stream to the GPU one at a time.
            # No CUDA streams: the stream path restores weights from a CPU copy made when offloading
            # starts, which would undo the optimiser's updates to the LoRA weights inside the blocks.
            self.transformer.enable_group_offload(self.device, torch.device("cpu"), offload_type="block_level",
                                                  num_blocks_per_group=1, use_stream=False)
        elif self.cfg.memory.base_precision not in ("int8", "nf4"):
            self.transformer.to(self.device)  # bitsandbytes weights are placed on the GPU at load
        if self.cfg.memory.compile:
            self.transformer.compile_repeated_blocks(fullgraph=False)

    def _optimiser(self) -> None:
        groups = tu.param_groups(self.cfg, self.transformer, self.text_encoder)
        self.optimizer = tu.build_optimizer(self.cfg, groups)
        self.scheduler = tu.build_scheduler(self.cfg, self.optimizer)
        self.lora_params = [p for g in groups for p in g["params"]]
        self.ema = None
        if self.cfg.training.ema:
            from diffusers.training_utils import EMAModel
            self.ema = EMAModel(self.lora_params, decay=self.cfg.training.ema_decay, use_ema_warmup=False)
        modules = [m for m in (self.transformer, self.text_encoder) if m is not None]
        prepared = self.accelerator.prepare(*modules, self.optimizer)
        self.model, self.optimizer = prepared[0], prepared[-1]
        if self.text_encoder is not None:
            self.text_encoder = prepared[1]
        world = self.accelerator.num_processes
        self.plan = BatchPlan(self.samples, self.cfg.training.batch_size, self.cfg.training.seed,
                              self.cfg.dataset.repeats, self.accelerator.process_index, world)

    # ------------------------------------------------------------------ state

    def lora_state(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        state = {f"transformer.{k}": v for k, v in
                 get_peft_model_state_dict(self.accelerator.unwrap_model(self.model)).items()}
        if self.text_encoder is not None:
            te = get_peft_model_state_dict(self.accelerator.unwrap_model(self.text_encoder))
            state.update({f"text_encoder.{k}": v for k, v in te.items()})
        return state

    def train_state(self) -> dict:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "generator": self.generator.get_state(), "host_generator": self.host_generator.get_state(),
                "ema": self.ema.state_dict() if self.ema else {}}

    def load_state(self) -> None:
        from peft import set_peft_model_state_dict

        found = tu.latest_checkpoint(self.run_dir / "checkpoints")
        if found is None:
            self.report.emit("warning", code="NOTHING_TO_RESUME", message="No checkpoint to resume from; "
                             "starting from step 0.")
            return
        path, lora, state = found
        split = {"transformer": {}, "text_encoder": {}}
        for key, value in lora.items():
            owner, rest = key.split(".", 1)
            split[owner][rest] = value
        set_peft_model_state_dict(self.accelerator.unwrap_model(self.model), split["transformer"])
        if self.text_encoder is not None:
            set_peft_model_state_dict(self.accelerator.unwrap_model(self.text_encoder), split["text_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.generator.set_state(state["generator"])
        self.host_generator.set_state(state["host_generator"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.step = state["step"]
        changed = f" Changed since then: {'; '.join(self.resume_changes)}." if self.resume_changes else ""
        self.report.emit("warning", code="RESUMED", message=f"Resumed from {path.name} (step {self.step}).{changed}")

    # ------------------------------------------------------------------ the step

    def text_batch(self, ids: list[int]):
        drop = self.cfg.dataset.caption_dropout
        dropped = torch.rand(len(ids), generator=self.host_generator).tolist() if drop > 0 else [1.0] * len(ids)
        captions = ["" if d < drop else self.samples[i].caption for d, i in zip(dropped, ids)]
        embeds = torch.stack([self.text[c]["prompt_embeds"] for c in captions]).to(self.device)
        if self.text_encoder is not None:
            tokens = self.pipe.tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                                         return_tensors="pt").input_ids.to(self.device)
            pooled = self.text_encoder(tokens, output_hidden_states=False).pooler_output.float()
        else:
            pooled = torch.stack([self.text[c]["pooled"] for c in captions]).to(self.device)
        return embeds, pooled

    def latent_batch(self, ids: list[int]) -> torch.Tensor:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        if self.latents:
            params = torch.stack([self.latents[i] for i in ids])
            if self.device.type == "cuda":  # pinned: the copy to the GPU overlaps with compute
                params = params.pin_memory()
            params = params.to(self.device, non_blocking=True)
        else:
            self.pipe.vae.to(self.device)
            params = torch.stack([self._encode_image(self.samples[i]) for i in ids]).to(self.device)
        dist = DiagonalGaussianDistribution(params)
        noise = torch.randn(dist.mean.shape, generator=self.generator, device=self.device)
        latents = dist.mean + dist.std * noise
        vae = self.pipe.vae.config
        return (latents - vae.shift_factor) * vae.scaling_factor

    def loss(self, ids: list[int]) -> torch.Tensor:
        """One flow-matching loss: noisy = (1−t)·x + t·ε, target ε − x, MSE on packed latents."""
        from diffusers import FluxPipeline

        latents = self.latent_batch(ids)
        embeds, pooled = self.text_batch(ids)
        b, c, h, w = latents.shape
        noise = torch.randn(latents.shape, generator=self.generator, device=self.device)
        t = tu.sample_timesteps(self.cfg, b, (h // 2) * (w // 2), self.generator, self.device)
        t_ = t.view(-1, 1, 1, 1)
        noisy = (1 - t_) * latents + t_ * noise
        dtype = self.accelerator.unwrap_model(self.model).dtype
        packed = FluxPipeline._pack_latents(noisy, b, c, h, w).to(dtype)
        target = FluxPipeline._pack_latents(noise - latents, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, self.device, dtype)
        txt_ids = torch.zeros(embeds.shape[1], 3, device=self.device, dtype=dtype)
        guidance = None
        if self.info.guidance_embeds:
            guidance = torch.full((b,), self.cfg.training.guidance or 1.0, device=self.device, dtype=torch.float32)
        pred = self.model(hidden_states=packed, timestep=t.to(dtype), guidance=guidance,
                          pooled_projections=pooled.to(dtype), encoder_hidden_states=embeds.to(dtype),
                          txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    def block_norms(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        for name, p in self.accelerator.unwrap_model(self.model).named_parameters():
            if p.grad is not None:
                block = tu.block_of(name)
                sums[block] = sums.get(block, 0.0) + float(p.grad.float().pow(2).sum())
        return {k: math.sqrt(v) for k, v in sums.items()}

    # ------------------------------------------------------------------ the loop

    def run(self) -> list[str]:
        cfg, acc = self.cfg, self.accelerator
        if self.resume:
            self.load_state()
        start = self.step
        self.report.emit("start", max_steps=cfg.schedule.max_steps, start_step=start,
                         num_images=len({s.image for s in self.samples}), model=cfg.model.base,
                         device=str(self.device), family=self.info.family, licence=self.info.licence,
                         **self.cache_stats)
        if start == 0 and cfg.sample.at_start and cfg.sample.prompts:
            self.make_samples()
        accum = cfg.training.gradient_accumulation
        rate, last_time, pending = None, time.perf_counter(), []
        self.model.train()
        while self.step < cfg.schedule.max_steps:
            self.hooks.on_step(self.step)
            for micro in range(accum):
                with acc.accumulate(self.model):
                    loss = self.hooks.on_loss(self.step, self.loss(self.plan[self.step * accum + micro]))
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.optimizer.max_grad_norm > 0:
                        grad_norm = acc.clip_grad_norm_(self.lora_params, cfg.optimizer.max_grad_norm)
                    elif acc.sync_gradients:
                        grad_norm = torch.linalg.vector_norm(
                            torch.stack([p.grad.norm() for p in self.lora_params if p.grad is not None]))
                    norms = self.block_norms() if self._due(cfg.log.block_norms_every, self.step + 1) else None
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                pending.append(loss.detach())
            self.scheduler.step()
            if self.ema:
                self.ema.step(self.lora_params)
            self.step += 1
            now = time.perf_counter()
            rate = 1 / (now - last_time) if rate is None else 0.9 * rate + 0.1 / (now - last_time)
            last_time = now
            if self._due(cfg.log.every, self.step) or self.step == cfg.schedule.max_steps:
                # One host sync per logged step, not per micro-batch.
                # Averaged over ranks, so every rank logs, and stops on NaN, at the same step.
                loss_value = float(acc.reduce(torch.stack(pending).mean(), reduction="mean"))
                pending = []
                if not math.isfinite(loss_value):
                    raise StudioError("NAN_LOSS", f"The loss became {loss_value} at step {self.step} "
                                      f"(learning rate {self.scheduler.get_last_lr()[0]:.3g}).")
                self.report.emit("step", step=self.step, max_steps=cfg.schedule.max_steps, loss=loss_value,
                                 lr=self.scheduler.get_last_lr()[0], grad_norm=float(grad_norm),
                                 block_grad_norms=norms, it_s=rate,
                                 eta_s=(cfg.schedule.max_steps - self.step) / rate if rate else None)
            self._controls()
        return self.finish()

    @staticmethod
    def _due(every: int, step: int) -> bool:
        return every > 0 and step % every == 0

    def _controls(self) -> None:
        cfg, final = self.cfg, self.step == self.cfg.schedule.max_steps
        if self._flag("sample") or (cfg.sample.every and self.step % cfg.sample.every == 0 and not final):
            self.make_samples()
        if self._flag("save") or (cfg.save.every and self.step % cfg.save.every == 0 and not final):
            self.checkpoint()
        if self._flag("cancel"):
            self.checkpoint()
            raise Stop("cancelled", EXIT_CANCELLED)
        self._poll_signals(save=True)

    def _flag(self, name: str) -> bool:
        path = self.control / name
        if path.exists():
            path.unlink(missing_ok=True)
            return True
        return False

    def _poll_signals(self, save: bool = False) -> None:
        if self.signalled:
            if save and self.step > 0:
                self.checkpoint()
            raise Stop("interrupted", EXIT_INTERRUPTED)

    # ------------------------------------------------------------------ samples, checkpoints, output

    def make_samples(self) -> None:
        if not self.accelerator.is_main_process or not self.sample_prompts:
            return
        cfg, pipe = self.cfg, self.pipe
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        if self.ema:
            self.ema.store(self.lora_params)
            self.ema.copy_to(self.lora_params)
        pipe.transformer = model
        pipe.vae.to(self.device)
        try:
            for k, prompt in enumerate(self.sample_prompts):
                seed = cfg.sample.seed + k
                cached = self.text[prompt]
                dtype = pipe.vae.dtype
                # Under mixed precision the prepared model returns fp32 (accelerate's output wrapper), so the
                # latents reach a bf16 VAE as fp32: sample under the training autocast, as the step runs.
                with torch.no_grad(), self.accelerator.autocast():
                    pooled = cached["pooled"][None]
                    if self.text_encoder is not None:  # the CLIP LoRA trains: its pooled vector moves
                        tokens = pipe.tokenizer([prompt], padding="max_length", max_length=77, truncation=True,
                                                return_tensors="pt").input_ids.to(self.device)
                        pooled = self.text_encoder(tokens).pooler_output
                    image = pipe(prompt_embeds=cached["prompt_embeds"][None].to(self.device, dtype),
                                 pooled_prompt_embeds=pooled.to(self.device, dtype),
                                 num_inference_steps=cfg.sample.steps, guidance_scale=cfg.sample.guidance,
                                 height=cfg.sample.height, width=cfg.sample.width,
                                 generator=torch.Generator(self.device).manual_seed(seed)).images[0]
                rel = f"samples/step{self.step:06d}_p{k}.png"
                from PIL.PngImagePlugin import PngInfo
                meta = PngInfo()
                meta.add_text("prompt", prompt)
                meta.add_text("step", str(self.step))
                meta.add_text("seed", str(seed))
                image.save(self.run_dir / rel, pnginfo=meta)
                self.report.emit("sample", step=self.step, path=rel, prompt=prompt, seed=seed)
        finally:
            if self.ema:
                self.ema.restore(self.lora_params)
            if self.device.type == "cuda":
                pipe.vae.to("cpu")
            model.train(was_training)

    def _check_finite(self) -> None:
        if not all(torch.isfinite(p).all() for p in self.lora_params):
            raise StudioError("NAN_LOSS", f"The LoRA weights became NaN or infinite by step {self.step}.")

    def checkpoint(self) -> None:
        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        self._check_finite()  # never save a NaN checkpoint
        try:
            path = tu.write_checkpoint(self.run_dir / "checkpoints", self.step, self.lora_state(),
                                       self.train_state(), self.cfg.save.keep_last,
                                       lambda folder: self.hooks.on_checkpoint_write(self.step, folder),
                                       config_yaml=self.cfg.to_yaml())
        except OSError as exc:
            raise StudioError("SAVE_FAILED", f"Saving the checkpoint at step {self.step} failed: "
                              f"{exc.strerror or exc}.") from None
        self.report.emit("checkpoint", step=self.step, path=str(path.relative_to(self.run_dir)))

    def final_weights(self) -> tuple[dict, dict]:
        if self.ema:
            self.ema.copy_to(self.lora_params)
        state = self.lora_state()
        transformer = {k[len("transformer."):]: v for k, v in state.items() if k.startswith("transformer.")}
        text = {k[len("text_encoder."):]: v for k, v in state.items() if k.startswith("text_encoder.")}
        return transformer, text

    def metadata(self) -> dict:
        """What both LoRA files say about the run: names, never local paths (studio/sharing.py)."""
        import hashlib

        import yaml

        from .sharing import base_identity, dataset_name, shareable_config
        cfg = self.cfg
        digest = hashlib.sha256("".join(sorted({s.digest for s in self.samples})).encode()).hexdigest()
        base = base_identity(cfg.model.base, self.info.path, self.info.family)
        config = yaml.safe_dump(shareable_config(cfg.to_dict()), sort_keys=False, allow_unicode=True)
        return {"base_model": base.name, "base_family": base.family, "model_variant": base.family,
                "licence": base.licence, "learning_rate": cfg.optimizer.lr, "seed": cfg.training.seed,
                "trigger_word": cfg.dataset.trigger_word, "rank": cfg.lora.rank, "alpha": cfg.lora.alpha,
                "steps": self.step, "resolution": cfg.dataset.resolution, "dataset": dataset_name(cfg.dataset.path),
                "dataset_size": len({s.image for s in self.samples}), "dataset_hash": digest,
                "config": config, "ss_num_train_images": len(self.samples),
                "ss_resolution": f"({cfg.dataset.resolution}, {cfg.dataset.resolution})",
                "ss_learning_rate": cfg.optimizer.lr, "ss_max_train_steps": cfg.schedule.max_steps,
                "ss_seed": cfg.training.seed, "ss_optimizer": cfg.optimizer.name}

    def finish(self) -> list[str]:
        from .lora_files import save_lora, validate_lora_file

        cfg = self.cfg
        self.accelerator.wait_for_everyone()
        if cfg.sample.prompts and self.accelerator.is_main_process:
            self.make_samples()
        if not self.accelerator.is_main_process:
            return []
        self._check_finite()
        transformer, text = self.final_weights()
        try:
            paths = save_lora(self.run_dir, cfg.save.run_name, transformer, cfg.lora.rank, cfg.lora.alpha,
                              self.metadata(), text_encoder_layers=text or None,
                              te_rank=cfg.lora.text_encoder_rank, te_alpha=cfg.lora.text_encoder_alpha,
                              save_comfyui=cfg.save.comfyui)
        except OSError as exc:
            raise StudioError("SAVE_FAILED", f"Writing the LoRA files failed: {exc.strerror or exc}.") from None
        files = [str(p) for p in paths.values()]
        for path in files:
            try:
                validate_lora_file(path)
            except Exception as exc:
                raise StudioError("LORA_INVALID", f"{Path(path).name}: {exc}") from None
        return files


def train(cfg: TrainConfig, run_dir: str | Path, reporter: Reporter, resume: bool = False,
          hooks: TrainHooks | None = None) -> int:
    """Run one training job to the end; returns the process exit code (see docs/architecture.md).
    `hooks` (studio.hooks) are called at each step, loss and checkpoint write."""
    trainer = Trainer(cfg, Path(run_dir), reporter, resume, hooks)
    previous = {}

    def on_signal(signum, frame):
        trainer.signalled = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (e.g. called from a test thread)
            pass
    try:
        trainer.setup()
        files = trainer.run()
        reporter.emit("done", status="succeeded", files=files)
        return EXIT_OK
    except Stop as stop:
        reporter.emit("done", status=stop.status, files=[])
        return stop.exit_code
    except ConfigError as err:
        reporter.emit("error", **StudioError("CONFIG_INVALID", "; ".join(err.problems)).as_dict())
        reporter.emit("done", status="failed", files=[])
        return EXIT_CONFIG
    except StudioError as err:
        reporter.emit("error", **err.as_dict())
        reporter.emit("done", status="failed", files=[])
        return EXIT_FAILED
    except torch.OutOfMemoryError:
        tier = next_lower_tier(cfg.memory.tier)
        hint = f"Try the {tier} memory tier" if tier else "Lower the resolution or batch size"
        err = StudioError("OUT_OF_MEMORY", f"Out of GPU memory at step {trainer.step}. {hint}; the job "
                          "can resume from its last checkpoint.")
        reporter.emit("error", **err.as_dict(), next_tier=tier)
        reporter.emit("done", status="failed", files=[])
        return EXIT_OOM
    except Exception as exc:
        import traceback
        traceback.print_exc()  # full detail goes to train.log, the user sees the short form
        reporter.emit("error", code="INTERNAL", message=f"{exc.__class__.__name__}: {exc}",
                      advice=StudioError("INTERNAL", "").advice)
        reporter.emit("done", status="failed", files=[])
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        trainer.__dict__.pop("pipe", None)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
