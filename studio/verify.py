"""Proof that a run's LoRA files work, before they are downloaded or published.

`verify_run(run_dir)` returns a checklist; `python -m studio verify RUN_DIR`, the Results tab and
publishing show it, and publishing refuses a run that fails it. Each line checks one thing a
loader would otherwise find out the hard way:

1. both files are readable LoRA files (pairs of down/up tensors, finite values, an alpha per
   ComfyUI module);
2. the diffusers file's modules are exactly the base transformer's linear layers that the run
   trained (no unexpected key, none missing), with their shapes — from the model's own
   architecture, built on the meta device (no weights, any size);
3. the ComfyUI file's keys and shapes are those ComfyUI maps for a transformer of that
   architecture (BFL module names: double_blocks.N.img_attn.qkv, single_blocks.N.linear1, …), at
   the published size of the file's variant when the base model cannot be read here; each family
   answers these questions through its Family methods (full_config, meta_transformer, comfy_shapes,
   lora_factors);
4. both files give the same ΔW for every module, alpha and scale applied as each loader applies
   them (checked on random probe vectors, so full-size files need no 3072x3072 matrices).

Each family's ComfyUI map (FLUX.1's in studio/families/flux1_shapes.py) is written from the
published architecture, not from the writer's key tables, so a wrong entry there is caught here.

Each run keeps its checklist in `verify.json`, keyed by the files' sizes and times, so the Results
tab (which never imports torch) reads it, and re-verifies in a child process only when the files
change.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


PROBES = 3
TOLERANCE = 1e-3  # relative difference of ΔW·x between the two files


STORE_NAME = "verify.json"


@dataclass
class Check:
    id: str  # readable_diffusers, readable_comfyui, diffusers_keys, comfyui_keys, same_delta, files
    title: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    note: str = ""

    def line(self) -> str:
        head = f"{'PASS' if self.ok else 'FAIL'}  {self.title}" + (f" ({self.note})" if self.note else "")
        return "\n".join([head] + [f"      - {p}" for p in self.problems[:12]]
                         + ([f"      - … and {len(self.problems) - 12} more"] if len(self.problems) > 12 else []))


# ---------------------------------------------------------------------------------- architecture


def architecture(run_dir: Path, metadata: dict[str, str]) -> tuple[dict, str, object]:
    """(transformer config, where it came from, its model family): the run's base model if it can be
    read here without a download, else the file's family and variant (its metadata) at full size."""
    from studio.families.base import ModelError as FamilyError, get_family
    from studio.models import ModelError, inspect_model

    base = str((_run_config(run_dir).get("model") or {}).get("base") or "")
    if base:
        try:
            info = inspect_model(base)
            return info.transformer, f"the base model's own config ({Path(base).name or base})", info.model_family
        except (ModelError, OSError, ValueError):
            pass
    try:
        family = get_family(metadata.get("model_family") or "flux1")
    except FamilyError:
        family = get_family("flux1")
    variant = metadata.get("model_variant", "")
    variant = variant if variant in family.variants else family.guess_variant(metadata.get("base_model", ""))
    config = family.full_config(variant)
    return config, (f"{family.variants[variant].title} at full size: {config['num_layers']} double, "
                    f"{config['num_single_layers']} single blocks"), family


def _run_config(run_dir: Path) -> dict:
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------------- the checks


def verify_files(diffusers_path: Path, comfy_path: Path | None, config: dict, where: str,
                 targets: list[str] | None = None, family=None) -> list[Check]:
    """The checklist for one pair of files against a transformer `config` (see module doc).
    `targets`: the modules the run trained (diffusers names), for the missing-keys check.
    `family`: the model family (studio/families) whose architecture and ComfyUI names apply (FLUX.1 if None)."""
    from studio.families.base import get_family
    from studio.lora_files import LoraFileError, read_modules

    family = family or get_family("flux1")

    checks, read = [], {}
    pairs = (("diffusers", diffusers_path), ("ComfyUI", comfy_path)) if comfy_path else (("diffusers", diffusers_path),)
    for label, path in pairs:
        check_id = f"readable_{label.lower()}"
        try:
            read[label] = read_modules(path)
            checks.append(Check(check_id, f"{label} file {path.name} is a readable LoRA file", True,
                                note=f"{len(read[label][1])} modules"))
        except (LoraFileError, OSError) as exc:
            checks.append(Check(check_id, f"{label} file {path.name} is a readable LoRA file", False, [str(exc)]))
    if "diffusers" in read:
        checks.append(_diffusers_keys(read["diffusers"][1], config, where, targets, family))
    if "ComfyUI" in read:
        checks.append(_comfy_keys(read["ComfyUI"][1], config, where, family))
    if len(read) == 2:
        checks.append(_same_delta(family, diffusers_path, comfy_path))
    return checks


def _shape_problems(name: str, module, out_in: tuple[int, int]) -> list[str]:
    out_features, in_features = out_in
    problems = []
    if module.down.shape[1] != in_features:
        problems.append(f"{name}: down/A takes {module.down.shape[1]} inputs, the layer has {in_features}")
    if module.up.shape[0] != out_features:
        problems.append(f"{name}: up/B gives {module.up.shape[0]} outputs, the layer has {out_features}")
    return problems


def _diffusers_keys(modules: dict, config: dict, where: str, targets: list[str] | None, family) -> Check:
    import torch

    model = family.meta_transformer(config)
    linears = {n: (m.out_features, m.in_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    problems = []
    present = set()
    for name, module in modules.items():
        if name.startswith("text_encoder."):
            continue  # CLIP modules: checked by peft when diffusers loads them
        bare = name.removeprefix("transformer.")
        if bare not in linears:
            problems.append(f"{name}: unexpected key, the transformer has no linear layer by that name")
            continue
        present.add(bare)
        problems += _shape_problems(name, module, linears[bare])
    missing = sorted(set(targets or []) - present)
    problems += [f"transformer.{m}: trained but missing from the file" for m in missing]
    return Check("diffusers_keys", "diffusers file matches the model's layers (no unexpected or missing keys, right shapes)",
                 not problems, problems, where)


def _comfy_keys(modules: dict, config: dict, where: str, family) -> Check:
    expected = family.comfy_shapes(config)
    what = family.title or family.name
    problems = []
    for name, module in modules.items():
        if name.startswith("lora_te1_"):
            continue
        if name not in expected:
            problems.append(f"{name}: ComfyUI has no {what} layer by that name (the key would not be loaded)")
            continue
        problems += _shape_problems(name, module, expected[name])
    return Check("comfyui_keys", f"ComfyUI file's keys and shapes are those ComfyUI maps for {what}", not problems,
                 problems, where)


def _same_delta(family, diffusers_path: Path, comfy_path: Path) -> Check:
    """ΔW·x of every module, from the family's reading of both files, on the same random probes x."""
    import torch

    from studio.lora_files import LoraFileError

    generator = torch.Generator().manual_seed(0)
    probes: dict = {}

    def apply(up, down, scale):
        if down.shape[1] not in probes:
            probes[down.shape[1]] = torch.randn(down.shape[1], PROBES, generator=generator)
        return scale * (up @ (down @ probes[down.shape[1]]))

    try:
        ours = {name: apply(*f) for name, f in family.lora_factors(diffusers_path).items()}
        theirs = {name: apply(*f) for name, f in family.lora_factors(comfy_path).items()}
    except (LoraFileError, ValueError) as exc:
        return Check("same_delta", "both files give the same ΔW for every module (alpha and scale applied)", False,
                     [str(exc)])
    problems = [f"{name}: in the ComfyUI file but not in the diffusers file" for name in sorted(set(theirs) - set(ours))]
    problems += [f"{name}: in the diffusers file but not in the ComfyUI file" for name in sorted(set(ours) - set(theirs))]
    compared = 0
    for name in sorted(set(ours) & set(theirs)):
        compared += 1
        problem = _compare(name, ours[name], theirs[name])
        if problem:
            problems.append(problem)
    return Check("same_delta", "both files give the same ΔW for every module (alpha and scale applied)", not problems,
                 problems, f"{compared} modules compared")


def _compare(name: str, reference, other) -> str | None:
    if reference.shape != other.shape:
        return f"{name}: ΔW shapes differ ({tuple(reference.shape)} vs {tuple(other.shape)})"
    norm = float(reference.norm())
    difference = float((reference - other).norm())
    if difference <= TOLERANCE * max(norm, 1e-12):
        return None
    ratio = float((reference * other).sum()) / max(norm ** 2, 1e-24)
    if norm > 0 and float((other - ratio * reference).norm()) <= TOLERANCE * norm:
        return f"{name}: the ComfyUI file's ΔW is {ratio:.3g}x the diffusers file's (alpha or scale is wrong)"
    return (f"{name}: the two files' ΔW differ (relative difference {difference / max(norm, 1e-12):.3g}; "
            "rows in another order, e.g. q and k swapped, or different weights)")


# ---------------------------------------------------------------------------------- a run


def run_files(run_dir: Path) -> tuple[Path, Path | None]:
    """(diffusers file, ComfyUI file) of a run folder, (diffusers file, None) for a family that writes no
    ComfyUI layout (FLUX.3); FileNotFoundError naming what is missing."""
    run_dir = Path(run_dir)
    name = str((_run_config(run_dir).get("save") or {}).get("run_name") or "")
    stems = [name] if name else [p.name[: -len("-comfyui.safetensors")] for p in run_dir.glob("*-comfyui.safetensors")]
    for stem in stems:
        pair = run_dir / f"{stem}.safetensors", run_dir / f"{stem}-comfyui.safetensors"
        if pair[0].is_file() and pair[1].is_file():
            return pair
    single = _diffusers_only(run_dir)
    if single is not None:
        return single, None
    raise FileNotFoundError(f"{run_dir} has no finished LoRA (<name>.safetensors and <name>-comfyui.safetensors); "
                            "verify a run that succeeded")


def _diffusers_only(run_dir: Path) -> Path | None:
    """The diffusers file of a run whose family writes no ComfyUI layout (FLUX.3), else None."""
    from studio.families.base import ModelError, get_family
    from studio.lora_files import LoraFileError, read_metadata

    name = str((_run_config(run_dir).get("save") or {}).get("run_name") or "")
    path = Path(run_dir) / f"{name}.safetensors"
    if not name or not path.is_file():
        return None
    try:
        return None if get_family(read_metadata(path).get("model_family", "flux1")).comfyui_layout else path
    except (ModelError, LoraFileError, OSError):
        return None


def run_targets(run_dir: Path, config: dict, family=None) -> list[str] | None:
    """The modules the run's settings train on a transformer of `config` (None if unreadable)."""
    from studio.config import ConfigError, TrainConfig
    from studio.families.base import get_family

    family = family or get_family("flux1")
    try:
        cfg = TrainConfig.from_yaml((Path(run_dir) / "config.yaml").read_text(encoding="utf-8"), "config.yaml")
    except (ConfigError, OSError):
        return None
    return family.target_modules(cfg.lora, family.meta_transformer(config))


def verify_run(run_dir: str | Path) -> list[Check]:
    from studio.lora_files import LoraFileError, read_metadata

    run_dir = Path(run_dir)
    try:
        diffusers_path, comfy_path = run_files(run_dir)
    except FileNotFoundError as exc:
        return [Check("files", "the run has both LoRA files", False, [str(exc)])]
    try:
        metadata = read_metadata(diffusers_path)
    except LoraFileError:
        metadata = {}
    config, where, family = architecture(run_dir, metadata)
    checks = verify_files(diffusers_path, comfy_path, config, where, run_targets(run_dir, config, family), family)
    save_checks(run_dir, checks)
    return checks


def failures(checks: list[Check]) -> list[str]:
    return [f"{c.title}: {'; '.join(c.problems[:3]) or 'failed'}" for c in checks if not c.ok]


def checklist_text(checks: list[Check]) -> str:
    return "\n".join(c.line() for c in checks)


def _fingerprint(run_dir: Path) -> dict[str, list[int]]:
    out = {}
    for path in sorted(Path(run_dir).glob("*.safetensors")):
        st = path.stat()
        out[path.name] = [st.st_size, st.st_mtime_ns]
    return out


def save_checks(run_dir: str | Path, checks: list[Check]) -> None:
    run_dir = Path(run_dir)
    data = {"files": _fingerprint(run_dir), "checks": [asdict(c) for c in checks]}
    tmp = run_dir / f".{STORE_NAME}.tmp"
    try:
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, run_dir / STORE_NAME)
    except OSError:
        pass  # a read-only run folder is verified again next time


def stored_checks(run_dir: str | Path) -> list[Check] | None:
    """The run's saved checklist if its LoRA files have not changed since (no torch needed)."""
    run_dir = Path(run_dir)
    try:
        data = json.loads((run_dir / STORE_NAME).read_text(encoding="utf-8"))
        if data.get("files") != _fingerprint(run_dir):
            return None
        return [Check(**c) for c in data["checks"]]
    except (OSError, ValueError, TypeError, KeyError):
        return None
