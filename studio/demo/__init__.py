"""The demo model: a tiny FLUX.1-shaped model that draws a synthetic world of coloured shapes.

world.py    the world: shapes, colours, backgrounds, captions
wider.py    pictures beyond it (other colours, patterns, shapes) that the VAE also learns
text.py     tokenizers, CLIP (taught to name what a caption asks for) and a local T5
training.py the VAE and transformer training loops
build.py    `python -m studio build-demo`: every stage from a seed, saved as a FluxPipeline folder
judge.py    what a picture shows, from its pixels (the benchmark's and the tests' judge)
dataset.py  the demo dataset: a concept the model has never seen, bound to a trigger word
model/      the committed weights (see model/README.md)
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_DIR = Path(__file__).resolve().parent / "model"


def sampling_defaults(model_dir: str | Path = MODEL_DIR) -> dict:
    """The FluxPipeline arguments the demo model was built and measured with."""
    recipe = json.loads((Path(model_dir) / "build.json").read_text(encoding="utf-8"))["recipe"]
    return {"num_inference_steps": recipe["sample_steps"], "max_sequence_length": 256,
            "height": 128, "width": 128}
