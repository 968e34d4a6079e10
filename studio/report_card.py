"""The report card: which checkpoint, at which strength? One grid per sample prompt answers it.

Rows are the run's kept checkpoints and its final LoRA; columns are LoRA strengths
(STRENGTHS), the first being 0 — the base model alone, the reference every row is read against
(drawn once, since strength 0 is the same for every row). Every cell uses the prompt's own fixed
seed, so the only thing that changes across a row is the strength and down a column the step.
`build_report_card(run_dir)` runs where torch lives (the worker's job, or `python -m studio
report-card RUN_DIR`), writes `report/grid_pN.png` and `report/report.json`, and reports
progress per cell. `promote(run_dir, step)` makes a checkpoint the run's final LoRA: both files
rewritten from it, proven (studio/verify.py), the previous final kept in `previous-final/`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

STRENGTHS = (0.0, 0.5, 0.75, 1.0, 1.25)
REPORT_DIR = "report"
CELL_LABEL_HEIGHT = 22
Progress = Callable[[int, int, str], None]


class ReportCardError(RuntimeError):
    """A run that cannot have a report card (or a checkpoint that cannot be promoted), and why."""


def step_of(checkpoint: Path) -> int:
    from studio.training_utils import CHECKPOINT_PREFIX

    return int(checkpoint.name[len(CHECKPOINT_PREFIX):])


def _config(run_dir: Path):
    from studio.config import ConfigError, TrainConfig

    try:
        return TrainConfig.from_yaml((run_dir / "config.yaml").read_text(encoding="utf-8"), "config.yaml")
    except (OSError, ConfigError) as exc:
        raise ReportCardError(f"{run_dir} is not a finished run: its config.yaml cannot be read ({exc}).") from None


def rows(run_dir: Path) -> list[dict]:
    """The report card's rows: every kept checkpoint (oldest first), then the final LoRA."""
    from studio.training_utils import list_checkpoints
    from studio.verify import run_files

    out = [{"label": f"step {step_of(p)}", "step": step_of(p), "checkpoint": str(p)}
           for p in list_checkpoints(run_dir / "checkpoints")]
    try:
        final, _ = run_files(run_dir)
        out.append({"label": "final", "step": None, "file": str(final)})
    except FileNotFoundError:
        pass
    if not out:
        raise ReportCardError(f"{run_dir} has no checkpoints and no final LoRA: nothing to compare.")
    return out


def _metadata(run_dir: Path, step: int | None) -> dict:
    """The final file's own metadata (names, never paths), with the checkpoint's step."""
    from studio.lora_files import RESERVED_METADATA_KEYS, read_metadata
    from studio.verify import run_files

    try:
        meta = read_metadata(run_files(run_dir)[0])
    except (FileNotFoundError, ValueError):
        meta = {}
    meta = {k: v for k, v in meta.items() if k not in RESERVED_METADATA_KEYS
            and k not in ("ss_max_train_steps", "modelspec.date")}
    if step is not None:
        meta["steps"] = str(step)
    return meta


def run_family(cfg):
    """The model family of a run's base model, which writes its LoRA files: from the config's
    model section without the network where it can (studio/families/choice.py), else from the
    model's config files."""
    from studio.families.base import inspect_model
    from studio.families.choice import chosen

    found = chosen({"base": cfg.model.base, "family": cfg.model.family})
    return found[0] if found else inspect_model(cfg.model.base, cfg.model.revision).model_family


def checkpoint_lora(run_dir: Path, checkpoint: Path, out_dir: Path, name: str, comfyui: bool = False) -> dict:
    """Write a checkpoint's LoRA as LoRA files (the run's rank, alpha and metadata), in the
    layouts of the run's model family."""
    from studio.training_utils import read_checkpoint

    cfg = _config(run_dir)
    lora, _ = read_checkpoint(Path(checkpoint))
    transformer = {k.removeprefix("transformer."): v for k, v in lora.items() if k.startswith("transformer.")}
    text = {k.removeprefix("text_encoder."): v for k, v in lora.items() if k.startswith("text_encoder.")}
    step = step_of(Path(checkpoint))
    return run_family(cfg).write_lora(out_dir, name, transformer, cfg.lora.rank, cfg.lora.alpha,
                                      _metadata(run_dir, step), text_encoder_layers=text or None,
                                      te_rank=cfg.lora.text_encoder_rank, te_alpha=cfg.lora.text_encoder_alpha,
                                      save_comfyui=comfyui)


def _prompts(cfg) -> list[str]:
    return list(cfg.sample.prompts) or [f"a photo of {cfg.dataset.trigger_word}"]


def _edit_inputs(cfg, family, mode: str, count: int) -> list[dict]:
    """Per prompt, the pipeline's input-image arguments: for an edit run the "before" images of
    the run's first pairs, cropped to the sample size (prompt k edits pair k, as the training
    samples do); nothing for a text-to-image run."""
    from studio.families.base import EDIT

    if mode != EDIT:
        return [{} for _ in range(count)]
    from studio.data.pairs import find_pairs, fitted_input

    pairs = find_pairs(cfg.dataset.path).pairs if cfg.dataset.path and Path(cfg.dataset.path).is_dir() else []
    if not pairs:
        raise ValueError(f"{cfg.dataset.path or 'the run'}: no before/after pairs left to draw the edit report "
                         "card from; restore the dataset's control/ folder.")
    size = (cfg.sample.width, cfg.sample.height)
    return [family.sample_image_args(fitted_input(pairs[k % len(pairs)].control, size), size) for k in range(count)]


def cell_count(run_dir: str | Path, strengths: tuple[float, ...] = STRENGTHS) -> int:
    """How many pictures the run's report card draws: the base once per prompt, then every row at
    every strength above 0 (the worker's progress total, known before the model loads)."""
    run_dir = Path(run_dir)
    return len(_prompts(_config(run_dir))) * (1 + len(rows(run_dir)) * (len(strengths) - 1))


def build_report_card(run_dir: str | Path, progress: Progress | None = None,
                      strengths: tuple[float, ...] = STRENGTHS, data_dir: str | Path | None = None) -> dict:
    import torch

    from studio.model_card import trained_mode
    from studio.models import inspect_model, load_pipeline

    run_dir = Path(run_dir)
    report = progress or (lambda done, total, message: None)
    cfg = _config(run_dir)
    prompts = _prompts(cfg)
    table = rows(run_dir)
    total = cell_count(run_dir, strengths)
    out = run_dir / REPORT_DIR
    shutil.rmtree(out, ignore_errors=True)
    (out / "cells").mkdir(parents=True)
    info = inspect_model(cfg.model.base, cfg.model.revision, data_dir)
    pipe = load_pipeline(info, cfg.model.transformer_file)
    pipe.to("cuda" if torch.cuda.is_available() else "cpu")
    done, started = 0, time.time()
    mode = trained_mode({"model_family": info.model_family.name, **_metadata(run_dir, None)})
    inputs = _edit_inputs(cfg, info.model_family, mode, len(prompts))

    def draw(prompt_index: int) -> "object":
        kwargs = dict(prompt=prompts[prompt_index], num_inference_steps=cfg.sample.steps, width=cfg.sample.width,
                      height=cfg.sample.height,
                      generator=torch.Generator(pipe.device).manual_seed(cfg.sample.seed + prompt_index),
                      **inputs[prompt_index])
        if info.guidance_embeds:
            kwargs["guidance_scale"] = cfg.sample.guidance
        kwargs.update(info.model_family.true_cfg_args(cfg.sample.true_cfg))
        return pipe(**kwargs).images[0]

    cells: dict[tuple[int, int, int], Path] = {}

    def keep(image, p: int, r: int, c: int) -> None:
        nonlocal done
        path = out / "cells" / f"p{p}_r{r}_s{c}.png"
        image.save(path)
        cells[p, r, c] = path
        done += 1
        report(done, total, f"{done}/{total} pictures")

    for p in range(len(prompts)):  # strength 0: the base alone, one picture per prompt
        base = draw(p)
        for r in range(len(table)):
            cells[p, r, 0] = out / "cells" / f"p{p}_base.png"
        base.save(cells[p, 0, 0])
        done += 1
        report(done, total, f"{done}/{total} pictures")
    with _row_files(run_dir, table) as files:
        for r, lora in enumerate(files):
            pipe.load_lora_weights(str(lora), adapter_name=f"row{r}")
            for c, strength in enumerate(strengths[1:], start=1):
                pipe.set_adapters([f"row{r}"], adapter_weights=[strength])
                for p in range(len(prompts)):
                    keep(draw(p), p, r, c)
            pipe.delete_adapters([f"row{r}"])
    grids = [_grid(out / f"grid_p{p}.png", [[cells[p, r, c] for c in range(len(strengths))] for r in range(len(table))],
                   [row["label"] for row in table], strengths) for p in range(len(prompts))]
    result = {"rows": table, "strengths": list(strengths), "prompts": prompts,
              "seeds": [cfg.sample.seed + p for p in range(len(prompts))], "grids": [g.name for g in grids],
              "seconds": round(time.time() - started, 1), "made": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out / "report.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


class _row_files:
    """LoRA files for each row (checkpoints written to a scratch folder, removed afterwards)."""

    def __init__(self, run_dir: Path, table: list[dict]):
        self.run_dir, self.table = run_dir, table
        self.scratch = run_dir / REPORT_DIR / ".rows"

    def __enter__(self) -> list[Path]:
        self.scratch.mkdir(parents=True, exist_ok=True)
        files = []
        for row in self.table:
            if "file" in row:
                files.append(Path(row["file"]))
            else:
                files.append(checkpoint_lora(self.run_dir, Path(row["checkpoint"]), self.scratch,
                                             f"step{row['step']:06d}")["diffusers"])
        return files

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def _grid(path: Path, cells: list[list[Path]], row_labels: list[str], strengths) -> Path:
    from PIL import Image, ImageDraw

    with Image.open(cells[0][0]) as first:
        w, h = first.size
    label_w, top = 90, CELL_LABEL_HEIGHT
    grid = Image.new("RGB", (label_w + w * len(strengths), top + h * len(cells)), "white")
    ink = ImageDraw.Draw(grid)
    for c, strength in enumerate(strengths):
        ink.text((label_w + c * w + 6, 5), "base (0)" if c == 0 else f"strength {strength:g}", fill="black")
    for r, row in enumerate(cells):
        ink.text((6, top + r * h + h // 2 - 6), row_labels[r], fill="black")
        for c, cell in enumerate(row):
            with Image.open(cell) as im:
                grid.paste(im.convert("RGB"), (label_w + c * w, top + r * h))
    grid.save(path)
    return path


def stored(run_dir: str | Path) -> dict | None:
    """report.json of the run's last report card (no torch needed)."""
    try:
        return json.loads((Path(run_dir) / REPORT_DIR / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def promote(run_dir: str | Path, step: int) -> list[str]:
    """Make checkpoint `step` the run's final LoRA; returns the new files. The previous final
    files go to previous-final/; the new ones must pass every verify check, else the previous
    ones are put back and ReportCardError says why."""
    from studio.training_utils import list_checkpoints
    from studio.verify import failures, run_files, verify_run

    run_dir = Path(run_dir)
    cfg = _config(run_dir)
    found = {step_of(p): p for p in list_checkpoints(run_dir / "checkpoints")}
    if step not in found:
        raise ReportCardError(f"No checkpoint of step {step} in {run_dir.name}; kept: "
                              f"{', '.join(map(str, sorted(found))) or 'none'}.")
    previous = run_dir / "previous-final"
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir()
    try:
        old = tuple(path for path in run_files(run_dir) if path)  # one file for a family without ComfyUI's
    except FileNotFoundError:
        old = ()
    for path in old:
        shutil.copy2(path, previous / path.name)
    paths = checkpoint_lora(run_dir, found[step], run_dir, cfg.save.run_name, comfyui=cfg.save.comfyui)
    failed = failures(verify_run(run_dir))
    if failed:
        for path in old:
            shutil.copy2(previous / path.name, path)
        verify_run(run_dir)
        raise ReportCardError("The checkpoint's files failed verification and were not kept: " + " ".join(failed))
    (run_dir / "README.md").unlink(missing_ok=True)  # the card is written again for the new files
    (run_dir / "promoted.json").write_text(json.dumps({"step": step, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}),
                                           encoding="utf-8")
    return [str(p) for p in paths.values()]
