"""A plan before anything starts: what fits on this computer, how long it takes, what it costs.

`make_plan(dataset_dir, gpu)` reads the dataset (count and sizes; no torch) and the hardware (a
GPU name and memory from nvidia-smi or given by hand, or none) and proposes the model, memory
tier, resolution, steps and batch size, with predicted time per step, duration, peak memory and
disk use for every tier — each figure with where it comes from:

- memory: the peak the field publishes for each tier (HF's QLoRA blog, SimpleTuner, sd-scripts;
  see FLUX1_TIER_MEMORY), grown with the image tokens at higher resolutions;
- time: from FLUX.1's FLOPs per step (its 11.9 B transformer parameters, attention over image
  plus text tokens, a recomputed forward under gradient checkpointing) at ASSUMED_MFU of the
  GPU's published dense BF16 throughput — an estimate, said so — or, on a CPU with the demo
  model, the step time measured on a 2-core CPU (docs/benchmarks.md, "Demo run");
- disk: LoRA parameters counted from FLUX.1's layers (LORA_WIDTH), checkpoints with AdamW's two
  moments, cached latents and text embeddings.

`python -m studio plan DATASET [--gpu "RTX 4090"]` prints it; each run records its prediction
and, at the end, what really happened (`plan.json` in the run folder), so the estimates can be
checked against real runs and improved.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

FLUX1_PARAMS = 11_901_408_320  # transformer parameters at full size (meta device count)
FLUX1_WIDTH, FLUX1_BLOCKS = 3072, 57
# Sum of in + out features of the layers each target set trains (FLUX.1 full size); a LoRA of
# rank r has r times this many parameters. tests/test_plan.py recounts them on the meta device.
LORA_WIDTH = {"attention": 1_634_304, "diffusers_default": 2_801_664, "all_linear": 5_369_856}
ASSUMED_MFU = 0.5  # fits the published 4090 NF4 points (1.4 s/step at 512 px, 3.5 s at 1024 px)
# tier: (peak GiB at 512 px, GiB more per 1536 extra tokens, slowdown, what the figure rests on)
FLUX1_TIER_MEMORY = {
    "24gb": (27.0, 2.0, 1.0, "bf16 base: ~26-30 GB published (HF QLoRA blog, SimpleTuner)"),
    "16gb": (18.0, 1.5, 1.1, "int8/fp8 base: ~18 GB published (SimpleTuner, sd-scripts)"),
    "12gb": (9.2, 1.2, 1.0, "NF4 base: 9.1-9.5 GB floor published (HF QLoRA blog, SimpleTuner)"),
    "8gb": (7.5, 0.8, 2.5, "NF4 + offloaded blocks: 8 GB published with block swapping (sd-scripts); the 2.5x slower "
                           "steps are an estimate"),
}
# Published dense BF16 tensor TFLOP/s and memory (GiB); matched by name, longest first.
GPUS = {"H200": (141, 989), "H100 PCIe": (80, 756), "H100": (80, 989), "A100 80GB": (80, 312), "A100": (40, 312),
        "L40S": (48, 362), "L40": (48, 181), "RTX 6000 Ada": (48, 364), "A6000": (48, 155), "A10G": (24, 70),
        "L4": (24, 121), "RTX 5090": (32, 209), "RTX 4090": (24, 165), "RTX 4080": (16, 97),
        "RTX 4070 Ti": (12, 80), "RTX 4060 Ti": (16, 44), "RTX 3090": (24, 71), "RTX 3080": (10, 59),
        "RTX 3060": (12, 25), "T4": (16, 65)}
DEMO_CPU_SECONDS = (0.55, 20.0)  # per step at 256 px, and model load + samples (docs/benchmarks.md)
DEMO_CPU_PEAK_GIB = 1.5  # peak RSS of a CPU run, bench/train_speed.py (docs/benchmarks.md)
TEXT_TOKENS = {"dev": 512, "schnell": 256}


@dataclass
class TierRow:
    tier: str
    fits: bool
    peak_gib: float
    seconds_per_step: float
    minutes: float
    memory_source: str
    time_source: str
    memory_kind: str = "published"   # published | measured: how the page names the source
    time_kind: str = "estimated"     # estimated | measured | unknown


@dataclass
class Plan:
    dataset: str
    images: int
    median_short_side: int
    hardware: str
    gpu_gib: float | None
    model: str
    tier: str | None
    resolution: int
    steps: int
    batch_size: int
    rows: list[TierRow] = field(default_factory=list)
    disk_mib: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def chosen(self) -> TierRow | None:
        return next((r for r in self.rows if r.tier == self.tier), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def find_gpu(name: str | None) -> tuple[str, float, float] | None:
    """(name, GiB, TFLOP/s) for a GPU name such as 'NVIDIA GeForce RTX 4090'; None if unknown."""
    if not name:
        return None
    for known in sorted(GPUS, key=len, reverse=True):
        if known.lower() in name.lower():
            gib, tflops = GPUS[known]
            return known, float(gib), float(tflops)
    return None


def step_flops(resolution: int, variant: str = "dev", batch: int = 1, checkpointing: bool = True) -> float:
    """Training FLOPs of one FLUX.1 LoRA step: forward, the backward's input gradients (as much
    again; frozen weights need no weight gradients) and, with checkpointing, a second forward."""
    tokens = (resolution // 16) ** 2 + TEXT_TOKENS.get(variant, 512)
    forward = 2 * FLUX1_PARAMS * tokens + 4 * tokens ** 2 * FLUX1_WIDTH * FLUX1_BLOCKS
    return forward * (3 if checkpointing else 2) * batch


def dataset_facts(dataset_dir: Path) -> tuple[int, int]:
    """(images, median short side) of an imported dataset (images/) or a plain folder."""
    from studio.data.ingest import list_dataset
    from studio.data.report import image_measures

    dataset_dir = Path(dataset_dir)
    items = list_dataset(dataset_dir) if (dataset_dir / "images").is_dir() else []
    if not items and dataset_dir.is_dir():  # a plain folder of photos
        from studio.data.ingest import DatasetItem

        items = [DatasetItem(p.stem, p, None) for p in sorted(dataset_dir.iterdir())
                 if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"}]
    # An imported dataset keeps its measurements (the quality report's cache); a plain folder is the user's own.
    measures = image_measures(dataset_dir, items, remember=(dataset_dir / "images").is_dir())
    sides = [min(m["width"], m["height"]) for m in measures.values() if "error" not in m]
    return len(sides), int(statistics.median(sides)) if sides else 0


def propose_resolution(short_side: int) -> int:
    return 1024 if short_side >= 1024 else 768 if short_side >= 768 else 512


def propose_steps(images: int) -> int:
    """About 100 steps per image, within the field's usual 1,000-3,000."""
    return int(min(3000, max(1000, round(images * 100 / 50) * 50)))


def make_plan(dataset_dir: str | Path, gpu: str | None = None, gpu_gib: float | None = None,
              variant: str = "dev", rank: int = 16, targets: str = "attention",
              resolution: int | None = None, steps: int | None = None) -> Plan:
    images, short = dataset_facts(Path(dataset_dir))
    known = find_gpu(gpu)
    if gpu and gpu_gib is None and known:
        gpu_gib = known[1]
    name = Path(dataset_dir).name
    if not gpu:
        steps = steps or 150
        resolution = resolution or 256
        per_step, fixed = DEMO_CPU_SECONDS
        plan = Plan(name, images, short, "no GPU", None, "demo", "cpu", resolution, steps, 1,
                    notes=["No GPU: the built-in demo model trains on the CPU. A real FLUX.1 LoRA needs an NVIDIA "
                           "GPU with at least 8 GB."])
        plan.rows.append(TierRow("cpu", True, DEMO_CPU_PEAK_GIB, per_step, round((fixed + per_step * steps) / 60, 1),
                                 "measured: peak RSS of a CPU run, bench/train_speed.py (docs/benchmarks.md)",
                                 "measured: the demo run on a 2-core CPU, load and samples included "
                                 "(docs/benchmarks.md)", "measured", "measured"))
        plan.disk_mib = _disk(images, 256, rank, targets, steps, demo=True)
        return plan
    resolution = resolution or propose_resolution(short)
    steps = steps or propose_steps(images)
    rows = []
    for tier, (base, per_tokens, slowdown, source) in FLUX1_TIER_MEMORY.items():
        extra_tokens = max(0, (resolution // 16) ** 2 - (512 // 16) ** 2)
        peak = round(base + per_tokens * extra_tokens / 1536, 1)
        fits = gpu_gib is not None and peak <= gpu_gib * 0.95
        if known:
            seconds = step_flops(resolution, variant) / (known[2] * 1e12 * ASSUMED_MFU) * slowdown
            time_source = (f"estimated: FLOPs per step at {ASSUMED_MFU:.0%} of the {known[0]}'s published "
                           f"{known[2]:.0f} BF16 TFLOP/s")
        else:
            seconds, time_source = float("nan"), "unknown GPU: no throughput figure (give --gpu with a known name)"
        rows.append(TierRow(tier, fits, peak, round(seconds, 2), round(seconds * steps / 60, 1), source, time_source,
                            "published", "estimated" if known else "unknown"))
    tier = next((r.tier for r in rows if r.fits), None)
    plan = Plan(name, images, short, known[0] if known else gpu, gpu_gib, f"FLUX.1 [{variant}]", tier, resolution,
                steps, 1, rows)
    if tier is None:
        plan.notes.append(f"Nothing fits in {gpu_gib} GB: the smallest tier needs about {rows[-1].peak_gib} GB.")
    plan.notes.append("Batch size 1: the field's FLUX.1 default; a larger batch needs more memory than this table.")
    plan.notes.append("Minutes are training steps only: loading the model, caching and samples come on top.")
    plan.disk_mib = _disk(images, resolution, rank, targets, steps)
    return plan


def _disk(images: int, resolution: int, rank: int, targets: str, steps: int, demo: bool = False,
          keep_last: int = 3) -> dict[str, float]:
    lora_params = rank * LORA_WIDTH.get(targets, LORA_WIDTH["attention"]) * (0.002 if demo else 1)
    lora_file = lora_params * 4 / 2**20  # float32
    latents = images * 16 * (resolution // 8) ** 2 * 2 / 2**20
    text = images * (64 if demo else 512) * (64 if demo else 4096) * 2 / 2**20
    return {"lora files": round(lora_file * 2.5, 1),  # the ComfyUI file's fused blocks hold zero padding
            "checkpoints": round(lora_file * 3 * keep_last, 1),  # weights and AdamW's two moments
            "caches": round(latents + text, 1),
            "base model download": 0.0 if demo else 33_000.0}


def plan_text(plan: Plan) -> str:
    lines = [f"Dataset {plan.dataset}: {plan.images} image(s), median short side {plan.median_short_side} px",
             f"Hardware: {plan.hardware}" + (f" ({plan.gpu_gib:g} GB)" if plan.gpu_gib else ""),
             f"Proposal: {plan.model}, tier {plan.tier or 'none fits'}, {plan.resolution} px, {plan.steps} steps, "
             f"batch {plan.batch_size}", "",
             f"{'tier':6s} {'fits':4s} {'peak GB':>8s} {'s/step':>7s} {'minutes':>8s}"]
    for r in plan.rows:
        lines.append(f"{r.tier:6s} {'yes' if r.fits else 'no':4s} {r.peak_gib:8.1f} {r.seconds_per_step:7.2f} "
                     f"{r.minutes:8.1f}")
    row = plan.chosen() or (plan.rows[0] if plan.rows else None)
    if row:
        lines += ["", f"memory: {row.memory_source}", f"time: {row.time_source}"]
    lines += ["", "disk (MB): " + ", ".join(f"{k} {v:,.0f}" for k, v in plan.disk_mib.items())]
    return "\n".join(lines + [f"note: {n}" for n in plan.notes])


# ---------------------------------------------------------------------------------- prediction vs actual


def record_prediction(run_dir: Path, cfg) -> dict | None:
    """Before a run: this run's own predicted s/step and peak memory, kept in plan.json."""
    gpu = _visible_gpu()
    variant = "schnell" if "schnell" in str(cfg.model.base).lower() else "dev"
    try:
        plan = make_plan(Path(cfg.dataset.path).parent if Path(cfg.dataset.path).name == "images"
                         else cfg.dataset.path, gpu[0] if gpu else None, gpu[1] if gpu else None, variant,
                         cfg.lora.rank, cfg.lora.targets if cfg.lora.targets in LORA_WIDTH else "attention",
                         cfg.dataset.resolution, cfg.schedule.max_steps)
    except (OSError, ValueError):
        return None
    row = next((r for r in plan.rows if r.tier == cfg.memory.tier), plan.chosen())
    if row is None:
        return None
    predicted = {"tier": row.tier, "seconds_per_step": row.seconds_per_step, "peak_gib": row.peak_gib,
                 "minutes": row.minutes, "time_source": row.time_source, "memory_source": row.memory_source}
    _write(run_dir, {"predicted": predicted})
    return predicted


def record_actual(run_dir: Path, seconds_per_step: float | None, peak_gib: float | None) -> dict | None:
    """After a run: what happened, and the prediction's error in percent."""
    try:
        data = json.loads((run_dir / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    predicted = data.get("predicted") or {}
    actual = {"seconds_per_step": seconds_per_step, "peak_gib": peak_gib}
    error = {}
    for key in ("seconds_per_step", "peak_gib"):
        p, a = predicted.get(key), actual.get(key)
        if p and a and p == p:  # not NaN
            error[key] = round(100 * (p - a) / a, 1)
    data |= {"actual": actual, "error_percent": error}
    _write(run_dir, data)
    return data


def measured(run_dir: Path) -> tuple[float | None, float | None]:
    """(seconds per step from the run's step events, peak memory in GiB of this process: CUDA's
    peak allocation on a GPU, else the process's peak resident size)."""
    import resource

    times = []
    try:
        for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            if event.get("type") == "step":
                times.append((event["step"], event["time"]))
    except (OSError, ValueError, KeyError):
        pass
    per_step = None
    if len(times) >= 2 and times[-1][0] > times[0][0]:
        per_step = round((times[-1][1] - times[0][1]) / (times[-1][0] - times[0][0]), 3)
    peak = None
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
            peak = torch.cuda.max_memory_allocated() / 2**30
    except ImportError:
        pass
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return per_step, round(peak, 2)


def _write(run_dir: Path, data: dict) -> None:
    try:
        (run_dir / "plan.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    except OSError:
        pass


def _visible_gpu() -> tuple[str, float] | None:
    from studio.config.gpu import detect_gpu

    return detect_gpu()
