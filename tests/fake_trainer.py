"""A stand-in for `python -m studio train` that honours docs/architecture.md without torch.

    fake_trainer.py --behaviours DIR CONFIG.yaml --run-dir RUN_DIR [--data-dir DATA] [--resume]

It writes start/step/sample/checkpoint/error/done events to RUN_DIR/metrics.jsonl, polls
RUN_DIR/control/{cancel,sample,save}, checkpoints and exits 4 on SIGTERM, and writes two tiny
safetensors files with `lora` keys. The config is a real studio config (the job store accepts
nothing else); how the stand-in behaves is not a setting of the studio, so it comes from
DIR/<save.run_name>.json (`behaviour()` below writes one and names the run after it):

    steps: 20            total steps
    step_time: 0.02      seconds per step
    checkpoint_every: 5  0 = only on request/cancel/SIGTERM
    fail_at_step: null   at this step write an error event and exit with `exit_code`
    fail_on_tier: null   fail only when memory.tier is this (an OOM that a lower tier avoids)
    exit_code: 1         exit status at fail_at_step (a normal end always exits 0)
    error_message: ...   message of the error event; `no_error_event: true` prints it instead
    skip_files: false    exit 0 without writing the LoRA files
    bad_files: false     write files without any `lora` key
    ignore_cancel: false / ignore_sigterm: false   for testing forced stops

The final weights depend on every step's contribution, so a resumed run must end with
exactly the same files as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import yaml
from safetensors.numpy import save_file

terminate_requested = False


def behaviour(folder: Path, **fake) -> str:
    """Write `fake` into `folder` and return the run name that selects it (same settings, same name)."""
    text = json.dumps(fake, sort_keys=True)
    name = "fake-" + hashlib.sha256(text.encode()).hexdigest()[:12]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(text)
    return name


def command(folder: Path) -> list[str]:
    """The worker's train command for runs whose behaviour `folder` holds."""
    return [sys.executable, str(Path(__file__).resolve()), "--behaviours", str(folder)]


def on_sigterm(signum, frame):
    global terminate_requested
    terminate_requested = True


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--behaviours", required=True)
    parser.add_argument("--data-dir")
    args = parser.parse_args()

    config = yaml.safe_load(Path(args.config).read_text()) or {}
    run_name = (config.get("save") or {}).get("run_name", "")
    fake = json.loads((Path(args.behaviours) / f"{run_name}.json").read_text())
    run_dir = Path(args.run_dir)
    control = run_dir / "control"
    control.mkdir(parents=True, exist_ok=True)
    checkpoints = run_dir / "checkpoints"
    metrics = open(run_dir / "metrics.jsonl", "a")

    def emit(kind: str, **data) -> None:
        metrics.write(json.dumps({"type": kind, "time": time.time(), **data}) + "\n")
        metrics.flush()

    def save_checkpoint(step: int, acc: float) -> None:
        final = checkpoints / f"step{step:06d}"
        tmp = checkpoints / f".tmp-step{step:06d}"
        tmp.mkdir(parents=True, exist_ok=True)
        (tmp / "state.json").write_text(json.dumps({"step": step, "acc": acc}))
        if not final.exists():
            os.replace(tmp, final)
        emit("checkpoint", step=step, path=str(final.relative_to(run_dir)))

    signal.signal(signal.SIGTERM, signal.SIG_IGN if fake.get("ignore_sigterm") else on_sigterm)

    max_steps = int(fake.get("steps", 20))
    step, acc = 0, 0.0
    if args.resume:
        done = sorted(p for p in checkpoints.glob("step*") if (p / "state.json").exists())
        if done:
            state = json.loads((done[-1] / "state.json").read_text())
            step, acc = state["step"], state["acc"]
    emit("start", max_steps=max_steps, start_step=step, num_images=4, model="fake", device="cpu")
    print(f"fake trainer: token from env present={bool(os.environ.get('HF_TOKEN'))}", flush=True)
    print(f"fake trainer: argv={sys.argv}", flush=True)  # lets tests check what the command line held

    while step < max_steps:
        time.sleep(float(fake.get("step_time", 0.02)))
        step += 1
        acc += step * 0.001  # deterministic: a resumed run must reproduce it exactly
        emit("step", step=step, max_steps=max_steps, loss=1.0 / step, lr=1e-4, grad_norm=0.5,
             it_s=50.0, eta_s=(max_steps - step) * 0.02)
        tier = (config.get("memory") or {}).get("tier")
        if fake.get("fail_at_step") == step and fake.get("fail_on_tier", tier) == tier:
            message = fake.get("error_message", "fake failure")
            if fake.get("no_error_event"):
                print(f"Traceback (most recent call last):\nRuntimeError: {message}", flush=True)
            else:
                emit("error", code=fake.get("error_code", "fake_error"), message=message,
                     advice=fake.get("advice", "fix the config"))
            emit("done", status="failed", files=[])
            return int(fake.get("exit_code", 1))
        every = int(fake.get("checkpoint_every", 5))
        if every and step % every == 0:
            save_checkpoint(step, acc)
        if (control / "sample").exists():
            emit("sample", step=step, path=f"samples/step{step:06d}_p0.png", prompt="a photo", seed=0)
            (control / "sample").unlink()
        if (control / "save").exists():
            save_checkpoint(step, acc)
            (control / "save").unlink()
        if (control / "cancel").exists() and not fake.get("ignore_cancel"):
            save_checkpoint(step, acc)
            (control / "cancel").unlink()
            emit("done", status="cancelled", files=[])
            return 3
        if terminate_requested:
            save_checkpoint(step, acc)
            emit("done", status="interrupted", files=[])
            return 4

    files = []
    if not fake.get("skip_files"):
        down = np.full((4, 8), acc, dtype=np.float32)
        up = np.full((8, 4), 0.5, dtype=np.float32)
        # One module in each layout, enough for studio.lora_files.validate_lora_file.
        diffusers = {"transformer.single_transformer_blocks.0.proj_out.lora_A.weight": down,
                     "transformer.single_transformer_blocks.0.proj_out.lora_B.weight": up}
        kohya = {"lora_unet_single_blocks_0_linear2.lora_down.weight": down,
                 "lora_unet_single_blocks_0_linear2.lora_up.weight": up,
                 "lora_unet_single_blocks_0_linear2.alpha": np.array(4.0, dtype=np.float32)}
        if fake.get("bad_files"):
            diffusers = kohya = {"unet.weight": down}
        for name, tensors in (("fake.safetensors", diffusers), ("fake-comfyui.safetensors", kohya)):
            save_file(tensors, str(run_dir / name))
            files.append(name)
    emit("done", status="succeeded", files=files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
