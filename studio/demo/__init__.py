"""The demo model: a tiny FLUX.1-shaped model that draws a synthetic world of coloured shapes.

world.py    the world: shapes, colours, backgrounds, captions
wider.py    pictures beyond it (other colours, patterns, shapes) that the VAE also learns
text.py     tokenizers, CLIP (taught to name what a caption asks for) and a local T5
training.py the VAE and transformer training loops
build.py    `python -m studio build-demo`: every stage from a seed, saved as a FluxPipeline folder
judge.py    what a picture shows, from its pixels (the benchmark's and the tests' judge)
dataset.py  the demo dataset: a concept the model has never seen, bound to a trigger word
studio_run  what the Train tab proposes on the demo model (a first LoRA in about two minutes)
model/      the committed weights (see model/README.md)
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"


def sampling_defaults(model_dir: str | Path = MODEL_DIR, batch: int = 1) -> dict:
    """The FluxPipeline arguments the demo model was built and measured with, for `batch` prompts
    (guidance against the empty prompt takes one negative prompt per prompt)."""
    recipe = json.loads((Path(model_dir) / "build.json").read_text(encoding="utf-8"))["recipe"]
    return {"num_inference_steps": recipe["sample_steps"], "max_sequence_length": 256, "height": 128, "width": 128,
            "true_cfg_scale": recipe.get("sample_true_cfg", 1.0), "negative_prompt": [""] * batch if batch > 1 else ""}


# A first LoRA on the demo model: about two minutes on a 2-core CPU, model load, samples and
# LoRA files included (measured: docs/benchmarks.md "Demo run"). The samples start with the
# base's look and show the concept arriving; the last sample prompt is the Results tab's try-it.
TRAIN_STEPS = 400  # the red sample takes a heart's broad top and point within 50 steps; its notch stays shallow
SAMPLE_PROMPTS = ("a red [trigger] on a white background", "a blue [trigger] on a yellow background")


def studio_run(model_dir: str | Path = MODEL_DIR) -> dict:
    """The settings the Train tab proposes on the demo model, over any preset and tier."""
    try:
        defaults = sampling_defaults(model_dir)
        steps, true_cfg = defaults["num_inference_steps"], defaults["true_cfg_scale"]
    except (OSError, ValueError, KeyError):  # no model yet: resolving the base says so when a run starts
        steps, true_cfg = 8, 1.0
    return {
        "dataset": {"resolution": 128},
        "lora": {"rank": 8, "alpha": 8},
        "optimizer": {"lr": 1e-3},
        "schedule": {"max_steps": TRAIN_STEPS, "warmup_steps": 10},
        "sample": {"every": 50, "at_start": True, "steps": steps, "true_cfg": true_cfg, "width": 128,
                   "height": 128, "prompts": list(SAMPLE_PROMPTS)},
        "save": {"every": 100},
        "log": {"block_norms_every": 10},
    }
