"""The demo dataset: a concept the demo model has never seen, bound to a trigger word.

The base model knows circles, squares, triangles and stars. The demo dataset shows hearts,
in the world's colours and on its backgrounds, captioned "a red zxq on a white background":
a short LoRA run teaches the model that a zxq is a heart, and the base's colours and
backgrounds still follow the prompt ("a blue zxq on a yellow background").
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from .wider import draw_any_shape
from .world import COLOURS, SIZE, _SUPER, paint_background, with_articles

TRIGGER = "zxq"
STUDIO_NAME = "demo-zxq"  # the dataset the Dataset tab's "Add the demo dataset" creates
CONCEPT = "heart"  # what the trigger word means
PROMPTS = (  # sample prompts for a demo run: the concept in colours and on backgrounds it never had together
    f"a red {TRIGGER} on a white background",
    f"a blue {TRIGGER} on a yellow background",
)


def concept_picture(rng: random.Random, size: int = SIZE) -> tuple[Image.Image, str]:
    """One picture of the concept and its caption."""
    colour = rng.choice(list(COLOURS))
    background = rng.choice([c for c in COLOURS if c != colour])
    side = size * _SUPER
    image = Image.new("RGB", (side, side))
    draw = ImageDraw.Draw(image)
    paint_background(draw, side, [COLOURS[background]], "left-right")
    r = rng.uniform(0.22, 0.36) * side
    cx, cy = (rng.uniform(r + 0.03 * side, side - r - 0.03 * side) for _ in range(2))
    draw_any_shape(draw, CONCEPT, (cx - r, cy - r, cx + r, cy + r), COLOURS[colour])
    caption = with_articles(f"a {colour} {TRIGGER} on a {background} background")
    return image.resize((size, size), Image.Resampling.BOX), caption


def write_dataset(out: str | Path, count: int = 12, seed: int = 0, size: int = 2 * SIZE) -> Path:
    """`count` pictures as PNG files, each with its caption in a .txt file of the same name.

    Drawn at 256 px, the smallest side the Dataset tab's import accepts; a run at the demo
    model's 128 px scales them down."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(count):
        image, caption = concept_picture(rng, size)
        image.save(folder / f"{CONCEPT}_{i:02d}.png")
        (folder / f"{CONCEPT}_{i:02d}.txt").write_text(caption + "\n", encoding="utf-8")
    return folder
