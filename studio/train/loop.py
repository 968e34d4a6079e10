"""The training loop, top to bottom, and `train()`: the one place exceptions become exit codes.

build state → (resume) → start event → [step: micro-batches, optimiser, log, controls]* → finish.
The engine has no UI imports. It reports through `events.Reporter` and is steered by flag files
in `run_dir/control/` and by SIGTERM/SIGINT (checkpoint, then exit "interrupted").
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path

import torch

from ..config import ConfigError, TrainConfig
from ..diagnostics import StudioError, next_lower_tier
from ..events import EXIT_CANCELLED, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_OOM, Reporter
from ..hooks import TrainHooks
from . import checkpoint
from .control import Control, Stop
from .output import finish
from .sampling import make_samples
from .state import TrainState, build_state
from .step import block_norms, loss


def due(every: int, step: int) -> bool:
    return every > 0 and step % every == 0


def run(state: TrainState) -> list[str]:
    """Train from the state's step (or its checkpoint) to max_steps; returns the LoRA files."""
    cfg, acc, steps = state.cfg, state.accelerator, state.cfg.schedule.max_steps
    if state.resume:
        checkpoint.load(state)
    state.report.emit("start", max_steps=steps, start_step=state.step,
                      num_images=len({s.image for s in state.samples}), model=cfg.model.base,
                      device=str(state.device), family=state.info.family, licence=state.info.licence,
                      mode=state.mode, **state.caches.stats)
    if state.step == 0 and cfg.sample.at_start and cfg.sample.prompts:
        make_samples(state)
    accum = cfg.training.gradient_accumulation
    rate, last_time, pending = None, time.perf_counter(), []
    state.model.train()
    while state.step < steps:
        state.hooks.on_step(state.step)
        for micro in range(accum):
            with acc.accumulate(state.model):
                value = state.hooks.on_loss(state.step, loss(state, state.plan[state.step * accum + micro]))
                acc.backward(value)
                if acc.sync_gradients:
                    grad_norm = clip_gradients(state)
                norms = block_norms(state) if due(cfg.log.block_norms_every, state.step + 1) else None
                state.optimizer.step()
                state.optimizer.zero_grad(set_to_none=True)
            pending.append(value.detach())
        state.scheduler.step()
        if state.ema:
            state.ema.step(state.lora_params)
        state.step += 1
        now = time.perf_counter()
        rate = 1 / (now - last_time) if rate is None else 0.9 * rate + 0.1 / (now - last_time)
        last_time = now
        if due(cfg.log.every, state.step) or state.step == steps:
            log_step(state, pending, grad_norm, norms, rate)
            pending = []
        state.hooks.on_step_end(state.step)
        handle_controls(state)
    return finish(state)


def clip_gradients(state: TrainState) -> torch.Tensor:
    """The gradient norm of the LoRA weights, clipped to optimizer.max_grad_norm when it is set."""
    limit = state.cfg.optimizer.max_grad_norm
    if limit > 0:
        return state.accelerator.clip_grad_norm_(state.lora_params, limit)
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in state.lora_params if p.grad is not None]))


def log_step(state: TrainState, pending: list, grad_norm, norms, rate) -> None:
    """One host sync per logged step, not per micro-batch. Averaged over ranks, so every rank
    logs, and stops on NaN, at the same step."""
    steps = state.cfg.schedule.max_steps
    loss_value = float(state.accelerator.reduce(torch.stack(pending).mean(), reduction="mean"))
    lr = state.scheduler.get_last_lr()[0]
    if not math.isfinite(loss_value):
        raise StudioError("NAN_LOSS", f"The loss became {loss_value} at step {state.step} (learning rate {lr:.3g}).")
    state.report.emit("step", step=state.step, max_steps=steps, loss=loss_value, lr=lr, grad_norm=float(grad_norm),
                      block_grad_norms=norms, it_s=rate, eta_s=(steps - state.step) / rate if rate else None)


def handle_controls(state: TrainState) -> None:
    """Samples and checkpoints when due or asked for, then cancel and signals (checkpoint first)."""
    cfg, control, step = state.cfg, state.control, state.step
    final = step == cfg.schedule.max_steps
    if control.flag("sample") or (cfg.sample.every and step % cfg.sample.every == 0 and not final):
        make_samples(state)
    if control.flag("save") or (cfg.save.every and step % cfg.save.every == 0 and not final):
        checkpoint.save(state)
    if control.flag("cancel"):
        checkpoint.save(state)
        raise Stop("cancelled", EXIT_CANCELLED)
    if control.signalled and step > 0:
        checkpoint.save(state)
    control.stop_if_signalled()


def _fail(reporter: Reporter, exit_code: int, /, **error) -> int:
    reporter.emit("error", **error)
    reporter.emit("done", status="failed", files=[])
    return exit_code


def train(cfg: TrainConfig, run_dir: str | Path, reporter: Reporter, resume: bool = False,
          hooks: TrainHooks | None = None, data_dir: str | Path | None = None) -> int:
    """Run one training job to the end; returns the process exit code (see docs/architecture.md).
    `hooks` (studio.hooks) are called at each step, loss and checkpoint write; `data_dir` holds the
    caches and the demo model (default: $STUDIO_DATA, else ./studio_data)."""
    control, previous, state = Control(Path(run_dir)), {}, None

    def on_signal(signum, frame):
        control.signalled = signum

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread (e.g. called from a test thread)
            pass
    try:
        state = build_state(cfg, Path(run_dir), reporter, resume, hooks, control, data_dir)
        files = run(state)
        reporter.emit("done", status="succeeded", files=files)
        return EXIT_OK
    except Stop as stop:
        reporter.emit("done", status=stop.status, files=[])
        return stop.exit_code
    except ConfigError as err:
        return _fail(reporter, EXIT_CONFIG, **StudioError("CONFIG_INVALID", "; ".join(err.problems)).as_dict())
    except StudioError as err:
        return _fail(reporter, EXIT_FAILED, **err.as_dict())
    except torch.OutOfMemoryError:
        tier = next_lower_tier(cfg.memory.tier)
        hint = f"Try the {tier} memory tier" if tier else "Lower the resolution or batch size"
        err = StudioError("OUT_OF_MEMORY", f"Out of GPU memory at step {state.step if state else 0}. {hint}; "
                          "the job can resume from its last checkpoint.")
        return _fail(reporter, EXIT_OOM, **err.as_dict(), next_tier=tier)
    except Exception as exc:
        import traceback
        traceback.print_exc()  # full detail goes to train.log, the user sees the short form
        return _fail(reporter, EXIT_FAILED, code="INTERNAL", message=f"{exc.__class__.__name__}: {exc}",
                     advice=StudioError("INTERNAL", "").advice)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if state is not None:
            state.pipe = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
