"""A first LoRA on the demo model, as the studio proposes it: how long it takes, and what it learnt.

Writes the demo dataset (hearts captioned with the trigger word zxq), resolves what the Train
tab proposes for the demo model (`studio_run()` in studio/demo/__init__.py over a preset and the
cpu tier), and runs `python -m studio train` on it in a child process: model load, caching,
samples and both LoRA files included. Prints wall and CPU seconds (user + sys of the child; CPU
seconds are what a busy machine inflates least), its peak memory (RSS) and the load average,
and, with `--sheet`, saves the run's samples in step order (one row per sample prompt: the base's
look at step 0, then the LoRA arriving).

    .venv/bin/python bench/demo_run.py                      # the proposal as the Train tab makes it
    .venv/bin/python bench/demo_run.py --steps 100 --sheet docs/demo-lora-samples.png
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from studio.demo.dataset import TRIGGER, write_dataset  # noqa: E402
from studio.ui.handlers import proposed_config  # noqa: E402


def sample_sheet(samples: Path, out: Path) -> None:
    from PIL import Image

    found = {}
    for png in samples.glob("step*_p*.png"):
        match = re.match(r"step(\d+)_p(\d+)", png.stem)
        found[(int(match[2]), int(match[1]))] = png
    prompts = sorted({p for p, _ in found})
    steps = sorted({s for _, s in found})
    size = Image.open(next(iter(found.values()))).size[0]
    sheet = Image.new("RGB", (size * len(steps), size * len(prompts)), "white")
    for (p, s), png in found.items():
        sheet.paste(Image.open(png).convert("RGB"), (steps.index(s) * size, prompts.index(p) * size))
    sheet.save(out)
    print(f"samples at steps {steps} (one row per prompt) -> {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="portrait", help="subject preset (the Train tab starts on portrait)")
    parser.add_argument("--steps", type=int, help="override the proposal's max_steps")
    parser.add_argument("--sheet", help="save the run's samples as one PNG")
    parser.add_argument("--keep", help="keep the run here instead of a temporary folder")
    args = parser.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="demo-run-"))
    data = write_dataset(work / "dataset")
    cfg = proposed_config(args.preset, "cpu", "demo").to_dict()
    cfg["dataset"].update(path=str(data), trigger_word=TRIGGER)
    cfg["save"].update(output_dir=str(work / "out"), run_name="demo-lora")
    if args.steps:
        cfg["schedule"]["max_steps"] = args.steps
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "STUDIO_DATA": str(work / "studio_data"), "HF_HUB_OFFLINE": "1"}

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "studio", "train", str(work / "config.yaml")], cwd=REPO,
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        return done.returncode
    steps = cfg["schedule"]["max_steps"]
    print(f"demo run, preset {args.preset}: {steps} steps at {cfg['dataset']['resolution']} px, LoRA rank "
          f"{cfg['lora']['rank']}, lr {cfg['optimizer']['lr']}, samples of {len(cfg['sample']['prompts'])} prompts x "
          f"{cfg['sample']['steps']} steps every {cfg['sample']['every']}: {wall:.0f} s wall, "
          f"{usage.ru_utime + usage.ru_stime:.0f} s CPU (user + sys), peak memory {usage.ru_maxrss / 2**20:.2f} GiB "
          f"(RSS), {os.cpu_count()} CPUs, "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    if args.sheet:
        sample_sheet(work / "out" / "demo-lora" / "samples", Path(args.sheet))
    return 0


if __name__ == "__main__":
    sys.exit(main())
