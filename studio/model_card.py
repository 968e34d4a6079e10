"""A finished run as the Hub sees it: its files read without torch (safetensors metadata from the
header), its family and published base model, and the model card (README.md: YAML front matter the
Hub reads + a body for people) that follows the LoRA's family — pipeline class, licence, task and,
for an edit LoRA, the input-image call. studio/publish.py uploads what this module describes.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import yaml

from studio.core.secrets import redact
from studio.families.base import EDIT, ModelError, Variant, get_family
from studio.sharing import DEMO_NAME, shareable_config

TAGS = ["flux", "lora", "diffusers", "template:sd-lora"]
# What the Hub accepts as <namespace>/<name> (huggingface_hub's own rule, checked again there).
REPO_ID_PATTERN = re.compile(r"(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}")
SAMPLE_NAME = re.compile(r"step(\d+)_p(\d+)\.png")


class PublishError(RuntimeError):
    """Publishing failed; the message says why and contains no token."""


# ---------------------------------------------------------------------------------------------
# Reading a run folder


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file, read from its JSON header (no torch needed)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise PublishError(f"{path.name} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", head)
        if size > 100_000_000:
            raise PublishError(f"{path.name} is not a safetensors file (header of {size} bytes)")
        try:
            header = json.loads(f.read(size))
        except ValueError:
            raise PublishError(f"{path.name} is not a safetensors file (unreadable header)") from None
    return dict(header.get("__metadata__") or {})


def _lora_files(run: Path) -> tuple[Path, Path]:
    """(diffusers file, ComfyUI file) of a finished run, named after save.run_name."""
    from studio.verify import run_files

    _read_config(run)  # a folder without config.yaml is not a run: say so first
    try:
        return run_files(run)
    except FileNotFoundError:
        raise PublishError(f"{run} has no finished LoRA (expected <name>.safetensors and <name>-comfyui.safetensors);"
                           " publish a run that succeeded") from None


def _read_config(run: Path) -> dict:
    path = run / "config.yaml"
    if not path.is_file():
        raise PublishError(f"{run} is not a run folder: config.yaml is missing")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise PublishError(f"{path} is not a YAML mapping")
    return data


def _samples(run: Path) -> list[dict]:
    """Every sample PNG, oldest first: {path (relative), step, index, prompt, seed}."""
    from PIL import Image

    out = []
    for png in sorted((run / "samples").glob("step*_p*.png")):
        match = SAMPLE_NAME.fullmatch(png.name)
        if not match:
            continue
        with Image.open(png) as im:
            text = dict(getattr(im, "text", {}) or {})
        out.append({"path": f"samples/{png.name}", "step": int(match[1]), "index": int(match[2]),
                    "prompt": text.get("prompt", ""), "seed": text.get("seed", "")})
    return out


def _base_model(metadata: dict[str, str], family: str) -> str | None:
    """A Hub id for `base_model:`: the trained base if it is a Hub id, else the BFL model of its
    family and variant; None for the studio's demo model, which is not on the Hub."""
    if family == "demo":
        return None
    base = metadata.get("base_model", "")
    is_hub_id = (REPO_ID_PATTERN.fullmatch(base) and "/" in base and not base.startswith((".", "/", "~"))
                 and not Path(base).exists())
    return base if is_hub_id else _variant(metadata).hub_id


def _model_family(metadata: dict[str, str]):
    """The LoRA's model family (studio/families), from its metadata; FLUX.1 for files that do not say."""
    try:
        return get_family(metadata.get("model_family") or "flux1")
    except ModelError:
        return get_family("flux1")


def trained_mode(metadata: dict[str, str]) -> str:
    """"edit" or "text-to-image": what the LoRA was trained for, as its run recorded it
    (studio/families/base.py run_mode); a file from before that record: its family's kind."""
    return metadata.get("training_mode") or _model_family(metadata).kind


def _family(metadata: dict[str, str]) -> str:
    """The base's variant ("dev", "schnell", "base-4b", …), or "demo" for the studio's demo model."""
    if metadata.get("base_family") == "demo" or metadata.get("base_model") == DEMO_NAME:
        return "demo"
    family = _model_family(metadata)
    for said in (metadata.get("model_variant", ""), metadata.get("base_family", "")):
        if said in family.variants:
            return said
    return family.guess_variant(metadata.get("base_model", ""))


def _variant(metadata: dict[str, str]) -> Variant:
    """The published model the LoRA belongs to (the demo model draws like FLUX.1 [schnell])."""
    family = _family(metadata)
    if family == "demo":
        return get_family("flux1").variants["schnell"]
    return _model_family(metadata).variants[family]


def _licence_link(variant: Variant) -> str:
    if variant.licence_id == "other":  # a licence the studio does not know: the model card says it
        return f"https://huggingface.co/{variant.hub_id}"
    return f"https://huggingface.co/{variant.hub_id}/blob/main/LICENSE.md"


def shareable_config_text(run: Path) -> str:
    """The run's config.yaml as it may leave this computer: names instead of local paths, no token."""
    return redact(yaml.safe_dump(shareable_config(_read_config(run)), sort_keys=False, allow_unicode=True))


# ---------------------------------------------------------------------------------------------
# The model card


def model_card(run_dir, repo_id: str | None = None) -> str:
    """The Hub model card (README.md) of a finished run; `repo_id` fills the usage snippets."""
    run = Path(run_dir)
    lora, comfy = _lora_files(run)
    metadata = read_safetensors_metadata(lora)
    config = _read_config(run)
    family = _family(metadata)
    base = _base_model(metadata, family)
    trigger = metadata.get("trigger_word") or str((config.get("dataset") or {}).get("trigger_word") or "")
    samples = _samples(run)
    # Widgets: the last sample of each prompt, so the card shows what the finished LoRA does.
    last = {}
    for s in samples:
        last[s["index"]] = s
    widget = [{"text": s["prompt"] or trigger, "output": {"url": s["path"]}} for _, s in sorted(last.items())]

    variant, model_family = _variant(metadata), _model_family(metadata)
    edit = trained_mode(metadata) == EDIT
    task = "image-to-image" if edit else "text-to-image"
    front: dict = {"base_model": base} if base else {}
    if family == "demo" or variant.licence_id == "apache-2.0":
        front["license"] = "apache-2.0"
    else:
        front.update(license="other", license_name=variant.licence_id, license_link=_licence_link(variant))
    tags = [*TAGS[:3], task, *TAGS[3:]]
    front.update(tags=[t for t in tags if family != "demo" or t != "flux"],
                 library_name="diffusers", pipeline_tag=task)
    if trigger:
        front["instance_prompt"] = trigger
    if widget:
        front["widget"] = widget
    head = yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)

    repo = repo_id or "<username>/<repo>"
    title = repo.split("/")[-1]
    prompt = json.dumps(widget[0]["text"] if widget else f"a photo of {trigger}", ensure_ascii=False)
    steps, guidance = str(variant.steps), str(variant.guidance)
    pipeline = "FluxPipeline" if family == "demo" else model_family.pipeline_class_name
    images = metadata.get("dataset_size", "?")
    if family == "demo":
        what = (f"A LoRA for Flux LoRA Studio's built-in demo model ({DEMO_NAME}), trained on {images} images. "
                "The demo model is a tiny model in the FLUX.1 architecture, trained by the studio on a synthetic "
                "world of coloured shapes, and is not FLUX.1: it exists to try the studio, and this LoRA does "
                "nothing useful on FLUX.1.")
        load = ["# the demo model ships with Flux LoRA Studio, in studio/demo/model",
                'pipe = FluxPipeline.from_pretrained("studio/demo/model")']
        base_name = "the demo model"
    else:
        what = (f"A {variant.title} edit LoRA trained with Flux LoRA Studio on {images} before/after pairs."
                if edit else f"A {variant.title} LoRA trained with Flux LoRA Studio on {images} images.")
        load = [f'pipe = {pipeline}.from_pretrained("{base}", dtype=torch.bfloat16).to("cuda")']
        base_name = f"the {variant.title} model"
    source = 'image=load_image("before.png"), prompt=' if edit else ""
    sample = config.get("sample") or {}
    draw_args = f"num_inference_steps={steps}, guidance_scale={guidance}"
    if family == "demo":  # the run's own sample settings: the demo model's steps and size
        draw_args = (f"num_inference_steps={sample.get('steps', 8)}, height={sample.get('height', 128)}, "
                     f"width={sample.get('width', 128)}")
    # Guidance against the empty prompt, where the run's samples used it (sample.true_cfg).
    guided = model_family.true_cfg_args(float(sample.get("true_cfg", 1.0)))
    draw_args += "".join(f", {key}={json.dumps(value)}" for key, value in guided.items())
    use = [f"from diffusers import {pipeline}", *(["from diffusers.utils import load_image"] if edit else []), "",
           *load, f'pipe.load_lora_weights("{repo}", weight_name="{lora.name}")',
           f'image = pipe({source}{prompt}, {draw_args}).images[0]']
    use = model_family.usage_code(base, repo, lora.name, prompt, variant) or use
    comfy_text = [
        "## Use it in ComfyUI (or Forge)", "",
        f"Download [`{comfy.name}`]({comfy.name}) (kohya/BFL layout) into `ComfyUI/models/loras/` and load it "
        f"with a *LoraLoaderModelOnly* node after {base_name}. `{lora.name}` is the "
        "diffusers/peft layout of the same weights (its alpha/rank scale is folded into the weights, so it "
        "gives the same effect in any loader).", ""] if comfy else [
        "## ComfyUI", "",
        f"There is no ComfyUI file: Flux LoRA Studio knows no ComfyUI key names for {model_family.title}. "
        f"`{lora.name}` is in the diffusers/peft layout (its alpha/rank scale folded into the weights).", ""]
    body = [
        f"# {title}", "",
        what, "",
        "## Trigger word", "",
        f"Use `{trigger}` in the prompt to activate the LoRA." if trigger else "This LoRA has no trigger word.", "",
        "## Use it with diffusers", "",
        "```python", "import torch", *use, 'image.save("out.png")', "```", "",
        *comfy_text,
        *_report_card_section(run),
        "## Training settings", "",
        *_settings_table(config, metadata), "",
        "The full resolved configuration is in [`config.yaml`](config.yaml).", "",
        "## Licence", "",
        _licence_paragraph(family, variant), "",
    ]
    return redact(f"---\n{head}---\n\n" + "\n".join(body))


def _report_grids(run: Path) -> list[tuple[str, str]]:
    """(path in the run folder, prompt) of each report-card grid (studio/report_card.py)."""
    try:
        report = json.loads((run / "report" / "report.json").read_text(encoding="utf-8"))
        pairs = list(zip(report["grids"], report["prompts"]))
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [(f"report/{name}", prompt) for name, prompt in pairs if (run / "report" / name).is_file()]


def _report_card_section(run: Path) -> list[str]:
    grids = _report_grids(run)
    if not grids:
        return []
    try:
        report = json.loads((run / "report" / "report.json").read_text(encoding="utf-8"))
        rows = ", ".join(r["label"] for r in report["rows"])
        strengths = ", ".join(f"{s:g}" for s in report["strengths"])
    except (OSError, ValueError, KeyError, TypeError):
        rows, strengths = "", ""
    lines = ["## Report card", "",
             f"Rows: {rows}. Columns: LoRA strength {strengths} (0 is the base model alone). Every picture of a "
             "grid uses the same seed.", ""]
    for path, prompt in grids:
        lines += [f"![{prompt}]({path})", ""]
    return lines


def _settings_table(config: dict, metadata: dict[str, str]) -> list[str]:
    def get(section: str, key: str):
        return (config.get(section) or {}).get(key, "")

    family = _family(metadata)
    rows = [
        ("Base model", _base_model(metadata, family) or f"{DEMO_NAME} (Flux LoRA Studio's demo model)"),
        ("Steps", metadata.get("steps") or get("schedule", "max_steps")),
        ("LoRA rank / alpha", f"{get('lora', 'rank')} / {get('lora', 'alpha')}"),
        ("LoRA targets", get("lora", "targets")),
        ("Learning rate", get("optimizer", "lr")),
        ("Optimizer", get("optimizer", "name")),
        ("Scheduler (warm-up steps)", f"{get('schedule', 'scheduler')} ({get('schedule', 'warmup_steps')})"),
        ("Batch size x accumulation", f"{get('training', 'batch_size')} x {get('training', 'gradient_accumulation')}"),
        ("Resolution", get("dataset", "resolution")),
        ("Images", metadata.get("dataset_size", "")),
        ("Timestep sampling", get("training", "timestep_sampling")),
        ("Precision", f"{get('memory', 'base_precision')} base, mixed precision {get('memory', 'mixed_precision')}"),
        ("Seed", get("training", "seed")),
    ]
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| {name} | {str(value).replace('|', '/')} |" for name, value in rows]
    return lines


def _licence_paragraph(family: str, variant: Variant) -> str:
    if family == "demo":
        return (f"This LoRA was trained on Flux LoRA Studio's own demo model ({DEMO_NAME}), not on FLUX.1. "
                "The demo model is part of the studio and, like it, released under Apache-2.0; so is this LoRA.")
    if variant.licence_id != "apache-2.0":
        name = variant.licence_text.split(":")[0]
        return (f"This LoRA was trained on {variant.title} and is covered by the "
                f"[{name}]({_licence_link(variant)}): it and the images it makes may be "
                "used for non-commercial purposes only, unless you hold a commercial licence from Black Forest Labs.")
    return (f"This LoRA was trained on {variant.title}, which is released under the Apache-2.0 licence; "
            "the LoRA is released under Apache-2.0 as well and may be used commercially.")


