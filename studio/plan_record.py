"""Each run's plan checked against what happened: the prediction before the run and the measured
seconds per step and peak memory after it, with the error in percent, in `plan.json` of the run
folder (the plan itself: studio/plan.py)."""

from __future__ import annotations

import json
from pathlib import Path

from .plan import make_plan


def run_model(cfg) -> tuple[str | None, str | None]:
    """(family, variant) a config trains, as far as its config files or published name tell without
    weights or the network; (None, None) when they do not (the plan then proposes one)."""
    from .families.choice import chosen, from_name

    model = {"base": cfg.model.base, "family": cfg.model.family}
    found = chosen(model) or from_name(str(cfg.model.base))
    if found is None:
        return None, None
    return found[0].name, found[1] or None


def record_prediction(run_dir: Path, cfg) -> dict | None:
    """Before a run: this run's own predicted s/step and peak memory, kept in plan.json."""
    demo = str(cfg.model.base).strip() in ("", "demo")
    gpu = None if demo else _visible_gpu()
    family, variant = (None, None) if demo else run_model(cfg)
    folder = Path(cfg.dataset.path)
    try:
        plan = make_plan(folder.parent if folder.name == "images" else folder, gpu[0] if gpu else None,
                         gpu[1] if gpu else None, variant, cfg.lora.rank, cfg.lora.targets, cfg.dataset.resolution,
                         cfg.schedule.max_steps, family=family)
    except (OSError, ValueError):
        return None
    row = next((r for r in plan.rows if r.tier == cfg.memory.tier), plan.chosen())
    if row is None:
        return None
    predicted = {"model": plan.model, "tier": row.tier, "seconds_per_step": row.seconds_per_step,
                 "peak_gib": row.peak_gib, "minutes": row.minutes, "time_source": row.time_source,
                 "memory_source": row.memory_source}
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
