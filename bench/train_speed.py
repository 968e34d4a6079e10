"""CPU training-speed benchmark: the studio engine against a bare reference loop.

On the FLUX-shaped "small" demo model (real FLUX latent geometry: 16 latent channels, 8x VAE,
64-channel packed input) at 512 px, LoRA rank 16, batch 1, it measures in one run:

  (a) steady-state s/step: the studio (caches on) vs the bare loop's step *without* its image
      load, VAE encode and text encode (the same math per step; goal: studio within 3%);
  (b) whole-run wall time: the studio (caches on, model load and caching included) vs the bare
      loop, which loads and encodes every step (goal: studio at least 1.3x faster);
  (c) the studio with caches off vs caches on;
  (d) peak RSS (VmHWM) of each variant.

Each variant runs in its own subprocess (so peak RSS is per variant and no state leaks between
them); the variants run in alternating order over --repeats rounds, because the CPU may be
shared and timings are noisy. The studio runs in-process in its child through the real
`studio.engine.train`, with a reporter that timestamps the `step` events; every studio run gets
a fresh, empty cache folder, so caching is part of its measured wall time.

    python bench/train_speed.py                  # 60 steps, 512 px, 2 rounds
    python bench/train_speed.py --steps 20 --repeats 1 --json /tmp/speed.json
    python bench/train_speed.py --photos ~/my-photos   # your own photos instead of generated ones

The bare loop (bench/bare_loop.py) is written from the formulas, not from the engine.
The images are generated here unless --photos names a folder of your own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script from anywhere: the studio and bench/ import from the repository

from bench.bare_loop import (IMAGE_SUFFIXES, LR, MAX_GRAD_NORM, SEED, SHIFT, TRIGGER, WARMUP,  # noqa: E402
                              WEIGHT_DECAY, BareLoop, steady)

VARIANTS = ("studio", "bare", "studio_nocache")
CHILDREN = VARIANTS + ("paired",)


# --------------------------------------------------------------------------- helpers


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def dataset_folder(work: Path, photos: str | None = None) -> tuple[Path, str]:
    """The images to train on: `--photos FOLDER` when given, else 8 images drawn here (shapes over
    gradients, two aspect ratios), so the benchmark runs from the repository alone."""
    if photos:
        folder = Path(photos).expanduser()
        if not folder.is_dir() or not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir()):
            raise SystemExit(f"--photos {photos}: not a folder of images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                             "leave --photos out to use generated images.")
        return folder, str(folder)
    import numpy as np
    from PIL import Image, ImageDraw

    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        w, h = (768, 512) if i % 2 else (512, 640)
        y, x = np.mgrid[0:h, 0:w]
        im = Image.fromarray(np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 30 * i)], -1).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            cx, cy, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.integers(20, 120))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
        im.save(folder / f"generated_{i}.png")
    return folder, "8 generated images"


def ensure_model(model_dir: Path) -> Path:
    if (model_dir / "model_index.json").is_file():
        return model_dir
    sys.path.insert(0, str(REPO))
    from studio.models import build_demo_model
    print(f"building the 'small' demo model in {model_dir} …", flush=True)
    return build_demo_model(model_dir, size="small", dev=False)


# --------------------------------------------------------------------------- children


def child_studio(args, cache: bool, on_step=None) -> dict:
    """The real engine, in-process: `studio.engine.train` with a timing reporter."""
    work = Path(args.work)
    data = Path(tempfile.mkdtemp(prefix="studio_data_", dir=work))  # empty cache: caching is timed
    os.environ["STUDIO_DATA"] = str(data)
    sys.path.insert(0, str(REPO))
    import torch  # noqa: F401  (imports are not part of the measured run, for either loop)
    from diffusers import FluxPipeline  # noqa: F401
    from studio.config import resolve
    from studio.engine import train

    cfg = resolve({
        "model": {"base": args.model_dir},
        "dataset": {"path": args.images, "trigger_word": TRIGGER, "resolution": args.resolution,
                    "buckets": False, "repeats": 1, "cache_latents": cache, "cache_text_embeddings": cache},
        "lora": {"rank": 16, "alpha": 16.0, "targets": "diffusers_default"},
        "optimizer": {"name": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY, "max_grad_norm": MAX_GRAD_NORM},
        "schedule": {"max_steps": args.steps, "scheduler": "constant", "warmup_steps": 0},
        "training": {"batch_size": 1, "seed": SEED, "timestep_sampling": "shift", "shift": SHIFT},
        "sample": {"every": 0, "at_start": False, "prompts": []},
        "save": {"every": 0, "output_dir": str(data / "output"), "run_name": "bench"},
        "memory": {"tier": "cpu"},
    }, tier="cpu")

    marks: dict[str, float] = {}
    step_times: list[float] = []
    events: list[dict] = []

    class Timer:
        def emit(self, type: str, **fields) -> None:
            now = time.perf_counter()
            if type == "step":
                step_times.append(now)
                if on_step is not None:  # paired mode: one bare step now, outside the studio's time
                    last = step_times[-2] if len(step_times) > 1 else marks["start"]
                    on_step(now - last, len(step_times) - 1)
                    step_times[-1] = time.perf_counter()
            else:
                marks.setdefault(type, now)
                events.append({"type": type, **{k: v for k, v in fields.items() if k in ("code", "message", "status")}})

    t0 = time.perf_counter()
    code = train(cfg, data / "output" / "bench", Timer())
    t1 = time.perf_counter()
    if code != 0:
        raise SystemExit(f"studio run failed with exit code {code}: {events}")
    start = marks["start"]
    intervals = [b - a for a, b in zip([start] + step_times[:-1], step_times)]
    shutil.rmtree(data, ignore_errors=True)
    return {"wall_s": t1 - t0, "setup_s": start - t0, "loop_s": step_times[-1] - start,
            "finish_s": t1 - step_times[-1], "step_s": steady(intervals), "intervals": intervals,
            "peak_rss_mb": peak_rss_mb()}


def child_bare(args) -> dict:
    t0 = time.perf_counter()
    loop = BareLoop(args)
    t_loop = time.perf_counter()
    steps = [loop.step(i) for i in range(args.steps)]
    t1 = time.perf_counter()
    col = {k: [s[k] for s in steps] for k in steps[0]}
    return {"wall_s": t1 - t0, "setup_s": t_loop - t0, "loop_s": t1 - t_loop, "step_s": steady(col["total"]),
            "compute_step_s": steady(col["compute"]),
            "compute_plus_load_step_s": steady([c + l for c, l in zip(col["compute"], col["load"])]),
            **{f"{k}_s": steady(col[k]) for k in ("load", "vae", "text")},
            "intervals": col["total"], "compute_intervals": col["compute"], "peak_rss_mb": peak_rss_mb()}


def child_paired(args) -> dict:
    """Per-step comparison, interleaved step by step in one process: the studio runs for real,
    and at each of its `step` events the reporter runs one bare-loop step (its time is taken out
    of the studio's interval). Both see the same machine load at the same moments."""
    bare = BareLoop(args)
    pairs: list[tuple[float, dict]] = []

    def on_step(studio_interval: float, index: int) -> None:
        pairs.append((studio_interval, bare.step(index)))

    child_studio(args, cache=True, on_step=on_step)
    studio = [p[0] for p in pairs][WARMUP:]
    compute = [p[1]["compute"] for p in pairs][WARMUP:]
    ratios = [s / c for s, c in zip(studio, compute)]
    return {"studio_step_s": statistics.median(studio), "bare_compute_step_s": statistics.median(compute),
            "bare_step_s": statistics.median(p[1]["total"] for p in pairs[WARMUP:]),
            "ratio_of_medians": statistics.median(studio) / statistics.median(compute),
            "median_pair_ratio": statistics.median(ratios), "studio_intervals": [p[0] for p in pairs],
            "bare_compute_intervals": [p[1]["compute"] for p in pairs]}


# --------------------------------------------------------------------------- parent


def run_child(variant: str, args, work: Path) -> dict:
    out = work / f"result_{variant}_{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", variant, "--_out", str(out),
           "--_work", str(work), "--_images", args.images, "--model-dir", str(args.model_dir),
           "--steps", str(args.steps), "--resolution", str(args.resolution)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               TOKENIZERS_PARALLELISM="false")
    begun = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=str(REPO), capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{variant} failed (exit code {proc.returncode})")
    result = json.loads(out.read_text())
    result["process_s"] = time.perf_counter() - begun  # including interpreter start and imports
    return result


def med(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="training steps per run (default 60)")
    p.add_argument("--resolution", type=int, default=512, help="square training size in px (default 512)")
    p.add_argument("--repeats", type=int, default=2, help="rounds of all variants, order alternating (default 2)")
    p.add_argument("--model-dir", default=str(Path(tempfile.gettempdir()) / "flux-lora-studio-bench" / "small"),
                   help="where the 'small' demo model is cached (built once)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--photos", help="a folder of photos to train on (default: 8 images generated here)")
    p.add_argument("--_child", choices=CHILDREN, help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    p.add_argument("--_work", help=argparse.SUPPRESS)
    p.add_argument("--_images", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args._child:
        args.work, args.images = args._work, args._images
        if args._child == "bare":
            result = child_bare(args)
        elif args._child == "paired":
            result = child_paired(args)
        else:
            result = child_studio(args, cache=args._child == "studio")
        Path(args._out).write_text(json.dumps(result))
        return

    if args.steps <= WARMUP + 1:
        p.error(f"--steps must be more than {WARMUP + 1} (the first {WARMUP} steps are warm-up)")
    import torch

    model_dir = ensure_model(Path(args.model_dir))
    args.model_dir = str(model_dir)
    work = Path(tempfile.mkdtemp(prefix="train_speed_"))
    folder, data_desc = dataset_folder(work, args.photos)
    args.images = str(folder)
    n_images = sum(1 for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    try:
        import diffusers
        import peft
        machine.update(diffusers=diffusers.__version__, peft=peft.__version__)
    except ImportError:
        pass
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"train_speed: {args.steps} steps at {args.resolution} px, rank 16, batch 1, {args.repeats} round(s); "
          f"data: {data_desc} ({n_images} images)", flush=True)

    results: dict[str, list[dict]] = {v: [] for v in CHILDREN}
    try:
        for r in range(args.repeats):
            order = CHILDREN if r % 2 == 0 else tuple(reversed(CHILDREN))
            for variant in order:
                res = run_child(variant, args, work)
                results[variant].append(res)
                if variant == "paired":
                    print(f"  round {r + 1} {variant:<15} studio {res['studio_step_s']:.4f} s/step  bare "
                          f"(without load+VAE+text) {res['bare_compute_step_s']:.4f} s/step  median pair ratio "
                          f"{res['median_pair_ratio']:.3f}", flush=True)
                    continue
                print(f"  round {r + 1} {variant:<15} wall {res['wall_s']:7.2f} s  step {res['step_s']:.4f} s  "
                      f"peak RSS {res['peak_rss_mb']:7.0f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    s, b, n, pr = results["studio"], results["bare"], results["studio_nocache"], results["paired"]
    # (a) from the step-by-step interleaved runs: median over steps of studio/bare per pair,
    # then the median over rounds. The separate-process figure is kept as a cross-check.
    per_step = [x["median_pair_ratio"] for x in pr]
    separate = [x["step_s"] / y["compute_step_s"] for x, y in zip(s, b)]
    # Whole-run ratios per round (same round = closest in time), then the median over rounds.
    whole = [y["wall_s"] / x["wall_s"] for x, y in zip(s, b)]
    cache_wall = [y["wall_s"] / x["wall_s"] for x, y in zip(s, n)]
    cache_step = [y["step_s"] / x["step_s"] for x, y in zip(s, n)]
    fig = {
        "paired_studio_step_s": med(pr, "studio_step_s"), "paired_bare_compute_step_s": med(pr, "bare_compute_step_s"),
        "paired_ratio_of_medians": med(pr, "ratio_of_medians"), "separate_process_step_ratio": statistics.median(separate),
        "studio_step_s": med(s, "step_s"), "bare_compute_step_s": med(b, "compute_step_s"),
        "bare_compute_plus_load_step_s": med(b, "compute_plus_load_step_s"),
        "bare_full_step_s": med(b, "step_s"), "bare_load_s": med(b, "load_s"), "bare_vae_s": med(b, "vae_s"),
        "bare_text_s": med(b, "text_s"), "studio_nocache_step_s": med(n, "step_s"),
        "studio_wall_s": med(s, "wall_s"), "studio_setup_s": med(s, "setup_s"), "studio_finish_s": med(s, "finish_s"),
        "bare_wall_s": med(b, "wall_s"), "bare_setup_s": med(b, "setup_s"),
        "studio_nocache_wall_s": med(n, "wall_s"),
        "studio_peak_rss_mb": max(x["peak_rss_mb"] for x in s), "bare_peak_rss_mb": max(x["peak_rss_mb"] for x in b),
        "studio_nocache_peak_rss_mb": max(x["peak_rss_mb"] for x in n),
        "per_step_ratio": statistics.median(per_step), "per_step_ratios": per_step,
        "whole_run_speedup": statistics.median(whole), "whole_run_speedups": whole,
        "cache_wall_speedup": statistics.median(cache_wall), "cache_step_speedup": statistics.median(cache_step),
    }
    overhead = (fig["per_step_ratio"] - 1) * 100
    ok_step, ok_whole = overhead <= 3.0, fig["whole_run_speedup"] >= 1.3

    rows = [
        ("", "studio (caches on)", "bare loop", "studio (caches off)"),
        ("s/step, interleaved step by step", f"{fig['paired_studio_step_s']:.4f}",
         f"{fig['paired_bare_compute_step_s']:.4f} w/o load+VAE+text", ""),
        ("s/step, separate runs (median after 5)", f"{fig['studio_step_s']:.4f}",
         f"{fig['bare_full_step_s']:.4f} full", f"{fig['studio_nocache_step_s']:.4f}"),
        ("  bare: without load+VAE+text", "", f"{fig['bare_compute_step_s']:.4f}", ""),
        ("  bare: image load+resize / VAE / text", "",
         f"{fig['bare_load_s']:.4f} / {fig['bare_vae_s']:.4f} / {fig['bare_text_s']:.4f}", ""),
        ("whole run wall time, s", f"{fig['studio_wall_s']:.2f}", f"{fig['bare_wall_s']:.2f}",
         f"{fig['studio_nocache_wall_s']:.2f}"),
        ("  of which set-up (load, caches, LoRA)", f"{fig['studio_setup_s']:.2f}", f"{fig['bare_setup_s']:.2f}",
         f"{med(n, 'setup_s'):.2f}"),
        ("peak RSS, MiB", f"{fig['studio_peak_rss_mb']:.0f}", f"{fig['bare_peak_rss_mb']:.0f}",
         f"{fig['studio_nocache_peak_rss_mb']:.0f}"),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print()
    print(f"date     {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine  {machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch threads), "
          f"torch {machine['torch']}, diffusers {machine.get('diffusers', '?')}, peft {machine.get('peft', '?')}")
    print(f"setup    'small' FLUX-shaped model, {args.resolution} px, rank 16, batch 1, {args.steps} steps, "
          f"{args.repeats} round(s), {n_images} images")
    print()
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    print()
    print(f"(a) per step, interleaved: studio / bare(without load+VAE+text) = {fig['per_step_ratio']:.3f} "
          f"({overhead:+.1f}%; median of per-step pairs, rounds {', '.join(f'{x:.3f}' for x in per_step)}; "
          f"ratio of medians {fig['paired_ratio_of_medians']:.3f})  goal <= +3%: {'MET' if ok_step else 'NOT MET'}")
    print(f"    cross-check from the separate runs: {fig['separate_process_step_ratio']:.3f}")
    print(f"(b) whole run: bare / studio = {fig['whole_run_speedup']:.2f}x "
          f"(rounds {', '.join(f'{x:.2f}' for x in whole)})  goal >= 1.3x: {'MET' if ok_whole else 'NOT MET'}")
    print(f"(c) caches: off / on = {fig['cache_wall_speedup']:.2f}x whole run, "
          f"{fig['cache_step_speedup']:.2f}x per step")
    print(f"(d) peak RSS: studio {fig['studio_peak_rss_mb']:.0f} MiB, bare {fig['bare_peak_rss_mb']:.0f} MiB, "
          f"studio caches off {fig['studio_nocache_peak_rss_mb']:.0f} MiB")

    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": started.isoformat(timespec="seconds"), "machine": machine, "data": data_desc,
            "images": n_images, "steps": args.steps, "resolution": args.resolution, "rank": 16, "batch": 1,
            "repeats": args.repeats, "warmup_steps": WARMUP, "figures": fig,
            "goals": {"per_step_overhead_pct_max": 3.0, "per_step_met": ok_step,
                      "whole_run_speedup_min": 1.3, "whole_run_met": ok_whole},
            "runs": results}, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
