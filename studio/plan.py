"""A plan before anything starts: which model, what fits on this computer, how long, what it costs.

`make_plan(dataset_dir, gpu)` reads the dataset (count, sizes, before/after pairs; no torch) and
the hardware (a GPU name and memory from nvidia-smi or given by hand, or none) and proposes the
model family and variant, memory tier, resolution, steps and batch size, with predicted time per
step, duration, peak memory and disk use for every tier of that model, and a table of every
family/variant: the tier it trains in on this card, or the card it would need. Each figure says
where it comes from. The model facts are the family's (`family.plan_facts`,
studio/families/plan_facts.py); this module only computes with them:

- memory: the peak the field publishes per tier (FLUX.1), or one estimated from the model's
  weights and FLUX.1's published overhead (the others), grown with the image tokens at higher
  resolutions and with an edit pair's reference tokens; never below the peak while captions are
  encoded when the text encoders fit on the GPU beside the tier's loaded weights (the engine's
  rule, studio/core/text_encoders.py); where they do not, captions are encoded on the CPU and the
  plan estimates how long that takes, once;
- time: from the model's FLOPs per step at ASSUMED_MFU of the GPU's published dense BF16
  throughput — an estimate, said so — or, on a CPU with the demo model, the step time measured
  on a 2-core CPU (docs/benchmarks.md, "Demo run");
- disk: the LoRA's parameters from the model's layers, checkpoints with AdamW's two moments,
  cached latents (and the pairs' control latents) and text embeddings, the base model download.

`python -m studio plan DATASET [--gpu "RTX 4090"] [--family NAME]` prints it; each run records its
prediction and what really happened (studio/plan_record.py, `plan.json` in the run folder).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from studio.core.host_memory import host_memory_gib

ASSUMED_MFU = 0.5  # fits the published 4090 NF4 points of FLUX.1 (1.4 s/step at 512 px, 3.5 s at 1024 px)
FIT_MARGIN = 0.95  # of the card's memory a peak may use (allocator fragmentation, the desktop)
# Published dense BF16 tensor TFLOP/s and memory (GiB); matched by name, longest first.
GPUS = {"H200": (141, 989), "H100 PCIe": (80, 756), "H100": (80, 989), "A100 80GB": (80, 312), "A100": (40, 312),
        "L40S": (48, 362), "L40": (48, 181), "RTX 6000 Ada": (48, 364), "A6000": (48, 155), "A10G": (24, 70),
        "L4": (24, 121), "RTX 5090": (32, 209), "RTX 4090": (24, 165), "RTX 4080": (16, 97),
        "RTX 4070 Ti": (12, 80), "RTX 4060 Ti": (16, 44), "RTX 3090": (24, 71), "RTX 3080": (10, 59),
        "RTX 3060": (12, 25), "T4": (16, 65)}
# Per step at the demo run's 128 px (samples every 50 steps included), and model load + files:
# bench/demo_run.py on a quiet 2-core CPU took 32 s for 200 steps and 54–56 s for 400, samples
# guided against the empty prompt (docs/benchmarks.md, 2026-12-07).
DEMO_CPU_SECONDS = (0.11, 10.0)
DEMO_CPU_PEAK_GIB = 1.0  # peak RSS of that run (bench/demo_run.py, docs/benchmarks.md)
DEMO_LORA_WIDTH = 12_672  # in + out features of the demo transformer's attention layers (counted)


@dataclass
class TierRow:
    tier: str
    fits: bool
    peak_gib: float
    seconds_per_step: float
    minutes: float
    memory_source: str
    time_source: str
    memory_kind: str = "published"   # published | estimated | measured: how the page names the source
    time_kind: str = "estimated"     # estimated | measured | unknown
    needs_gib: float = 0.0           # the smallest card (GB) this tier fits on
    caching_peak: bool = False       # the peak is while captions are encoded, not in the steps
    captions_on_cpu: bool = False    # the text encoders do not fit beside this tier: captions encode on the CPU
    caption_minutes: float = 0.0     # then: the estimated minutes for that, once (the embeddings are cached)
    caption_source: str = ""         # and where that figure comes from
    caption_ram_gib: float = 0.0     # the computer's memory (RAM) the encoders need while they run there


@dataclass
class ModelRow:
    """One family/variant in "what fits": the tier it trains in on this card, else the card it needs."""

    family: str
    variant: str
    title: str
    tier: str | None
    needs_gib: float
    minutes: float
    edit: bool                       # trains from before/after pairs
    suits: bool = True               # suits the dataset: an edit model for pairs, a text-to-image one otherwise
    note: str = ""                   # "needs pairs": an edit-only model on a dataset without; "targets only":
                                     # a text-to-image model on pairs (it learns the targets, not the edit)


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
    family: str = ""                 # the proposed family and variant ("" for the demo model)
    variant: str = ""
    pairs: int = 0                   # before/after pairs in the dataset
    edit: bool = False               # the proposed model trains on them (reference tokens ride along)
    models: list[ModelRow] = field(default_factory=list)

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


def dataset_facts(dataset_dir: Path) -> tuple[int, int, int]:
    """(images, median short side, before/after pairs) of an imported dataset (images/) or a plain folder."""
    from studio.data.ingest import list_dataset
    from studio.data.pairs import find_pairs
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
    pairs = len(find_pairs(dataset_dir).pairs) if sides else 0
    return len(sides), int(statistics.median(sides)) if sides else 0, pairs


def propose_resolution(short_side: int) -> int:
    return 1024 if short_side >= 1024 else 768 if short_side >= 768 else 512


def propose_steps(images: int) -> int:
    """About 100 steps per image, within the field's usual 1,000-3,000."""
    return int(min(3000, max(1000, round(images * 100 / 50) * 50)))


def trains_from_pairs(family) -> bool:
    """Whether a family trains edit LoRAs from before/after pairs: the one question the plan asks."""
    return family.trains_from_pairs()


def all_facts() -> list:
    """PlanFacts of every registered family's variants, in registration order (a family that does not
    state them is left out of the plan)."""
    from studio.families import families

    out = []
    for family in families():
        try:
            out += [family.plan_facts(v) for v in family.variants]
        except NotImplementedError:
            continue
    return out


def with_pairs(facts, pairs: int) -> bool:
    """Whether a run of this model carries reference images: one that trains from pairs, on pairs."""
    return facts.trains_from_pairs and pairs > 0


def tier_rows(facts, gpu_gib: float | None, known, resolution: int, steps: int, pairs: bool,
              captions: int = 1) -> list[TierRow]:
    """Every tier the model trains in: its peak memory, whether it fits this card, time per step,
    and where the `captions` (each caption and the empty prompt) are encoded."""
    from studio.core.text_encoders import CPU_TFLOPS, GIB, needed_bytes
    from studio.families.plan_facts import GROWTH_TOKENS, TIER_PRECISION

    tokens = facts.image_tokens(resolution) * (2 if pairs else 1)
    rows = []
    for tier, need in facts.offered_tiers():
        memory = facts.tier_memory[tier]
        training = memory.peak_gib + memory.growth_gib * max(0, tokens - facts.image_tokens(512)) / GROWTH_TOKENS
        on_gpu = facts.captions_on_gpu(tier, gpu_gib)
        loaded = facts.caching_peak_gib(tier, on_gpu=False)  # the weights placed at load, no encoders
        floor = max(training, loaded)
        caching = facts.caching_peak_gib(tier, on_gpu)
        peak = round(max(floor, caching), 1)
        beside = f"the {TIER_PRECISION[tier]} weights placed at load and " if facts.resident_gib(tier) else ""
        source = memory.source
        if caching > floor:
            source += (f"; the peak is while captions are encoded: the text encoders in bf16 "
                       f"({facts.text_encoder_gib:g} GiB), {beside}the CUDA context")
        elif loaded > training:
            source += f"; at least {beside}the CUDA context"
        # The encoders run on the GPU only where they fit (else on the CPU), so the card this tier
        # needs, and whether it fits, follow the steps and the loaded weights alone.
        needs = round(max(floor / FIT_MARGIN, need), 1)
        fits = gpu_gib is not None and floor <= gpu_gib * FIT_MARGIN and gpu_gib >= need
        if known:
            seconds = facts.step_flops(resolution, pairs=pairs) / (known[2] * 1e12 * ASSUMED_MFU) * memory.slowdown
            time_source = (f"estimated: {facts.title}'s FLOPs per step at {ASSUMED_MFU:.0%} of the {known[0]}'s "
                           f"published {known[2]:.0f} BF16 TFLOP/s")
        else:
            seconds, time_source = float("nan"), "unknown GPU: no throughput figure (give --gpu with a known name)"
        row = TierRow(tier, fits, peak, round(seconds, 2), round(seconds * steps / 60, 1), source, time_source,
                      memory.kind, "estimated" if known else "unknown", needs, caching > floor)
        if gpu_gib is not None and not on_gpu:
            row.captions_on_cpu = True
            row.caption_minutes = round(facts.cpu_caption_seconds(captions) / 60, 1)
            row.caption_ram_gib = round(needed_bytes(facts.text_encoder_gib * GIB) / GIB, 1)
            row.caption_source = (
                f"the text encoders ({facts.text_encoder_gib:g} GiB in bf16) do not fit beside what this tier holds "
                f"on a {gpu_gib:g} GB card, so the {captions} caption(s) are encoded on the CPU, once (they are "
                f"cached): about {row.caption_minutes:g} min, estimated from the encoders' parameters × "
                f"{facts.text_tokens} tokens at an assumed {CPU_TFLOPS:g} TFLOP/s of a CPU, with about "
                f"{row.caption_ram_gib:g} GB of the computer's memory (RAM) free for the encoders while they run")
        rows.append(row)
    return rows


def model_rows(gpu_gib: float | None, known, resolution: int, steps: int, pairs: int,
               captions: int = 1) -> list[tuple]:
    """(ModelRow, PlanFacts, tier rows) of every family/variant on this card."""
    out = []
    for facts in all_facts():
        rows = tier_rows(facts, gpu_gib, known, resolution, steps, with_pairs(facts, pairs), captions)
        best = next((r for r in rows if r.fits), None)
        suits = facts.trains_from_pairs if pairs else not facts.edit_only
        note = "" if suits else "targets only" if pairs else "needs pairs"
        out.append((ModelRow(facts.family, facts.variant, facts.title, best.tier if best else None,
                             min(r.needs_gib for r in rows), best.minutes if best else float("nan"),
                             facts.trains_from_pairs, suits, note), facts, rows))
    return out


def propose(candidates: list[tuple], family: str | None, variant: str | None) -> tuple:
    """The (ModelRow, facts, rows) to propose: the named family (and variant) when given, else the
    largest model that suits the dataset and fits the card, else the one that needs the smallest card."""
    if family or variant:
        from studio.families.choice import loose

        found = loose(family or variant)
        if found is None:
            raise ValueError(f"no model family or variant {family or variant!r}")
        name, wanted = found[0].name, variant or found[1]
        if wanted and wanted not in found[0].variants:
            raise ValueError(f"{found[0].title} has no variant {wanted!r}; it has {', '.join(found[0].variants)}")
        mine = [c for c in candidates if c[0].family == name and c[0].variant in ((wanted,) if wanted else
                                                                                  found[0].variants)]
        mine = mine if wanted else [c for c in mine if c[1].train_on] or mine
    else:
        mine = [c for c in candidates if c[0].suits and c[1].train_on]
    if not mine:
        raise ValueError(f"no plan figures for {family or variant!r}: its family does not state its sizes"
                         if family or variant else "no model family states its plan figures")
    fitting = [c for c in mine if c[0].tier is not None]
    if fitting:
        return max(fitting, key=lambda c: c[1].parameters)  # max keeps the first of equals: registration order
    return min(mine, key=lambda c: c[0].needs_gib)


def make_plan(dataset_dir: str | Path, gpu: str | None = None, gpu_gib: float | None = None,
              variant: str | None = None, rank: int | None = None, targets: str = "attention",
              resolution: int | None = None, steps: int | None = None, family: str | None = None) -> Plan:
    """The plan for a dataset on a GPU (None: the demo model on the CPU). `family`/`variant`: the
    model the user chose (a model.family name, a bare variant such as 'schnell'); None: proposed.
    `rank` (for the disk figures): None, the proposal's (the demo run's on the CPU, else 16)."""
    images, short, pairs = dataset_facts(Path(dataset_dir))
    known = find_gpu(gpu)
    if gpu and gpu_gib is None and known:
        gpu_gib = known[1]
    name = Path(dataset_dir).name
    if not gpu:  # the demo model; the table says what each real model would need
        from studio.demo import studio_run  # the Train tab's proposal on the demo model

        run = studio_run()
        plan = _demo_plan(name, images, short, pairs, rank or run["lora"]["rank"],
                          resolution or run["dataset"]["resolution"], steps or run["schedule"]["max_steps"])
        candidates = model_rows(None, None, propose_resolution(short), propose_steps(images), pairs)
        plan.models = [c[0] for c in candidates]
        if family or variant:  # a named model is checked here too, and told what it needs
            named = propose(candidates, family, variant)[0]
            plan.notes.insert(0, f"{named.title} needs an NVIDIA GPU of about {named.needs_gib:g} GB or more "
                                 f"(give --gpu NAME to plan it); without one, this is the demo model's plan.")
        return plan
    resolution = resolution or propose_resolution(short)
    steps = steps or propose_steps(images)
    candidates = model_rows(gpu_gib, known, resolution, steps, pairs, captions=images + 1)
    chosen, facts, rows = propose(candidates, family, variant)
    plan = Plan(name, images, short, known[0] if known else gpu, gpu_gib, facts.title, chosen.tier, resolution,
                steps, 1, rows, family=facts.family, variant=facts.variant, pairs=pairs,
                edit=with_pairs(facts, pairs), models=[c[0] for c in candidates])
    if chosen.tier is None:
        plan.notes.append(f"Nothing fits in {gpu_gib} GB: {facts.title} needs about {chosen.needs_gib} GB.")
    plan.notes += pair_notes(facts, pairs) + ram_notes(plan.chosen(), host_memory_gib())
    plan.notes.append("Batch size 1: the field's default for these models; a larger batch needs more memory than "
                      "this table.")
    plan.notes.append("Minutes are training steps only: loading the model, caching and samples come on top.")
    plan.disk_mib = disk(facts, images, resolution, rank or 16, targets, steps, with_pairs(facts, pairs))
    return plan


def ram_short(row: TierRow | None, ram_gib: float | None) -> bool:
    """Whether the captions would be encoded on the CPU and this computer has too little RAM for it."""
    return row is not None and row.captions_on_cpu and ram_gib is not None and ram_gib < row.caption_ram_gib


def ram_notes(row: TierRow | None, ram_gib: float | None) -> list[str]:
    if not ram_short(row, ram_gib):
        return []
    return [f"Encoding the captions on the CPU needs about {row.caption_ram_gib:g} GB of memory (RAM); this computer "
            f"has {ram_gib:.0f} GB. Use a computer with more RAM, or a GPU whose free memory holds the text encoders "
            "beside this tier's weights."]


def pair_notes(facts, pairs: int) -> list[str]:
    if pairs and facts.trains_from_pairs:
        return [f"The dataset has {pairs} before/after pair(s): {facts.title} trains on them; each step carries the "
                "reference image's tokens too (twice the image tokens for attention, FLOPs and activations), and the "
                "control images' latents are cached as well."]
    if pairs:
        return [f"The dataset has {pairs} before/after pair(s); {facts.title} trains text-to-image, so only the "
                "targets are used."]
    if facts.edit_only:
        return [f"{facts.title} trains from before/after pairs and this dataset has none: put each target's "
                "'before' image in control/ under the target's name."]
    return []


def _demo_plan(name: str, images: int, short: int, pairs: int, rank: int, resolution: int, steps: int) -> Plan:
    per_step, fixed = DEMO_CPU_SECONDS
    plan = Plan(name, images, short, "no GPU", None, "demo", "cpu", resolution, steps, 1, pairs=pairs,
                notes=["No GPU: the built-in demo model trains on the CPU. A real FLUX LoRA needs an NVIDIA GPU "
                       "(python -m studio plan DATASET --gpu NAME shows which)."])
    plan.rows.append(TierRow("cpu", True, DEMO_CPU_PEAK_GIB, per_step, round((fixed + per_step * steps) / 60, 1),
                             "measured: peak RSS of a CPU run, bench/train_speed.py (docs/benchmarks.md)",
                             "measured: the demo run on a 2-core CPU, load and samples included "
                             "(docs/benchmarks.md)", "measured", "measured", DEMO_CPU_PEAK_GIB))
    lora = rank * DEMO_LORA_WIDTH * 4 / 2**20
    plan.disk_mib = {"lora files": round(lora * 2.5, 1), "checkpoints": round(lora * 9, 1),
                     "caches": round(images * (64 * 64 * 2 + 8 * 32 * 32 * 4) / 2**20, 1), "base model download": 0.0}
    return plan


def disk(facts, images: int, resolution: int, rank: int, targets: str, steps: int, pairs: bool = False,
         keep_last: int = 3) -> dict[str, float]:
    """MiB on disk: LoRA files, checkpoints, caches (float32, as the caches keep them), the download."""
    width = facts.lora_width.get(targets, facts.lora_width["attention"])
    lora_file = rank * width * 4 / 2**20  # float32
    # The latent cache keeps the distribution (mean and log-variance) of every target, and of every control.
    latents = images * (2 if pairs else 1) * 2 * facts.latent_channels * (resolution // 8) ** 2 * 4 / 2**20
    text = (images + 1) * facts.text_tokens * facts.text_width * 4 / 2**20  # captions and the empty prompt
    return {"lora files": round(lora_file * 2.5, 1),  # the ComfyUI file's fused blocks hold zero padding
            "checkpoints": round(lora_file * 3 * keep_last, 1),  # weights and AdamW's two moments
            "caches": round(latents + text, 1),
            "base model download": round(facts.download_gib() * 1024, 0)}


def plan_text(plan: Plan) -> str:
    pairs = f", {plan.pairs} before/after pair(s)" if plan.pairs else ""
    lines = [f"Dataset {plan.dataset}: {plan.images} image(s){pairs}, median short side {plan.median_short_side} px",
             f"Hardware: {plan.hardware}" + (f" ({plan.gpu_gib:g} GB)" if plan.gpu_gib else ""),
             f"Proposal: {plan.model}" + (f" (--family {alias(plan.family, plan.variant)})" if plan.family else "")
             + f", tier {plan.tier or 'none fits'}, {plan.resolution} px, {plan.steps} steps, batch {plan.batch_size}",
             "", f"{'tier':6s} {'fits':4s} {'peak GB':>8s} {'s/step':>7s} {'minutes':>8s}"]
    for r in plan.rows:
        lines.append(f"{r.tier:6s} {'yes' if r.fits else 'no':4s} {r.peak_gib:8.1f} {r.seconds_per_step:7.2f} "
                     f"{r.minutes:8.1f}")
    row = plan.chosen() or (plan.rows[0] if plan.rows else None)
    if row:
        lines += ["", f"memory: {row.memory_source}", f"time: {row.time_source}"]
        if row.captions_on_cpu:
            lines.append(f"captions: {row.caption_source}")
    if plan.models:
        heading = f"What fits on {plan.hardware}:" if plan.gpu_gib else "What each real model needs:"
        lines += ["", heading, f"{'model':32s} {'family':20s} {'on this card':34s} {'minutes':>8s}"]
        for m in plan.models:
            where = (f"tier {m.tier}" if m.tier else f"needs >= {m.needs_gib:g} GB") + (f", {m.note}" if m.note else "")
            minutes = "-" if m.minutes != m.minutes else f"{m.minutes:.1f}"  # NaN: it does not fit
            lines.append(f"{m.title:32s} {alias(m.family, m.variant):20s} {where:34s} {minutes:>8s}")
    lines += ["", "disk (MB): " + ", ".join(f"{k} {v:,.0f}" for k, v in plan.disk_mib.items())]
    return "\n".join(lines + [f"note: {n}" for n in plan.notes])


def alias(family: str, variant: str) -> str:
    """The model.family name of a family and variant (what --family and the config accept)."""
    from studio.families import get_family
    from studio.families.choice import variant_alias

    return variant_alias(get_family(family), variant)
