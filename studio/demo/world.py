"""The demo model's synthetic world: one flat shape on a plain or two-tone background.

Everything is drawn with PIL from a seed (no downloads), at 4x and box-filtered down so edges
are smooth. `Scene` says what is in a picture; `draw` paints it; `caption` says it in words.
The same palette and shapes serve the benchmark's classifier (`bench/demo_quality.py`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS = {
    "red": (220, 30, 35), "green": (35, 165, 60), "blue": (35, 70, 215), "yellow": (245, 215, 35),
    "purple": (135, 50, 175), "orange": (245, 135, 25), "white": (245, 245, 240), "black": (20, 20, 25),
}
SHAPES = ("circle", "square", "triangle", "star")
# How often each shape is drawn. A star's five points are the finest detail of the world (about one
# transformer token wide each), so stars are drawn most often and largest; squares least often.
SHAPE_WEIGHTS = (0.9, 0.6, 1.1, 1.4)
STAR_RADIUS = (0.33, 0.39)  # 84–100 px wide (other shapes 72–92 px)
SPLITS = ("left-right", "top-bottom")  # how a two-tone background is divided
SIZE = 128  # pixels; the demo model is trained at this resolution
_SUPER = 4  # drawn at 4x, then reduced: anti-aliased edges

# Caption wordings; the model must read the colour, shape and background from each.
TEMPLATES = (
    "a {colour} {shape} on a {background} background",
    "a {colour} {shape} on a {background} background",
    "a {colour} {shape} on a {background} background",
    "a picture of a {colour} {shape} on a {background} background",
    "{colour} {shape}, {background} background",
    "a {colour} {shape}",
)


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str                       # a COLOURS name
    background: tuple[str, ...]       # one colour name, or two for a two-tone background
    split: str = "left-right"         # for two-tone backgrounds
    centre: tuple[float, float] = (0.5, 0.5)  # fractions of the side
    radius: float = 0.3               # half the shape's extent, as a fraction of the side

    @property
    def background_words(self) -> str:
        return " and ".join(self.background)


def random_scene(rng: random.Random, two_tone: float = 0.2) -> Scene:
    """A scene of the world: every colour and background equally likely, the shapes as often as
    SHAPE_WEIGHTS says. Sizes and places vary, but shapes stay large and near the middle (72–92 px
    wide, stars 84–100 px, centred within ±10 px): a model this small learns to draw their outlines
    on a CPU, where anywhere-at-any-size takes hours."""
    colour = rng.choice(list(COLOURS))
    others = [c for c in COLOURS if c != colour]
    background = tuple(rng.sample(others, 2)) if rng.random() < two_tone else (rng.choice(others),)
    shape = rng.choices(SHAPES, weights=SHAPE_WEIGHTS)[0]
    radius = rng.uniform(*STAR_RADIUS) if shape == "star" else rng.uniform(0.28, 0.36)
    centre = (rng.uniform(0.42, 0.58), rng.uniform(0.42, 0.58))
    return Scene(shape, colour, background, rng.choice(SPLITS), centre, radius)


def caption(scene: Scene, rng: random.Random | None = None) -> str:
    """What is drawn, in words: 'a red circle on a white background' (one of TEMPLATES)."""
    template = TEMPLATES[0] if rng is None else rng.choice(TEMPLATES)
    text = template.format(colour=scene.colour, shape=scene.shape, background=scene.background_words)
    return with_articles(text)


def with_articles(text: str) -> str:
    """'a orange' → 'an orange' (the world's only word that starts with a vowel sound)."""
    return text.replace("a orange", "an orange")


def shape_polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]] | None:
    """The outline of a shape filling `box` (x0, y0, x1, y1); None for a circle (an ellipse)."""
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if shape == "circle":
        return None
    if shape == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "star":  # five points, one up; inner radius 0.45 of the outer
        points = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.45
            angle = -math.pi / 2 + k * math.pi / 5
            points.append((cx + rx * r * math.cos(angle), cy + ry * r * math.sin(angle)))
        # the star's points reach lower than its top one: stretch it to fill the box
        top, bottom = min(p[1] for p in points), max(p[1] for p in points)
        return [(x, y0 + (y - top) * (y1 - y0) / (bottom - top)) for x, y in points]
    raise ValueError(f"unknown shape {shape!r}; the world has {', '.join(SHAPES)}")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill) -> None:
    outline = shape_polygon(shape, box)
    if outline is None:
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon(outline, fill=fill)


def paint_background(draw: ImageDraw.ImageDraw, side: int, colours: list[tuple], split: str) -> None:
    draw.rectangle((0, 0, side, side), fill=colours[0])
    if len(colours) > 1:
        half = (side // 2, 0, side, side) if split == "left-right" else (0, side // 2, side, side)
        draw.rectangle(half, fill=colours[1])


def shape_box(scene: Scene, side: int) -> tuple[float, float, float, float]:
    cx, cy = scene.centre[0] * side, scene.centre[1] * side
    r = scene.radius * side
    return (cx - r, cy - r, cx + r, cy + r)


def draw(scene: Scene, size: int = SIZE) -> Image.Image:
    """The scene as an RGB picture of `size` x `size` pixels."""
    side = size * _SUPER
    image = Image.new("RGB", (side, side))
    canvas = ImageDraw.Draw(image)
    paint_background(canvas, side, [COLOURS[c] for c in scene.background], scene.split)
    draw_shape(canvas, scene.shape, shape_box(scene, side), COLOURS[scene.colour])
    return image.resize((size, size), Image.Resampling.BOX)


def sample(seed: int, size: int = SIZE) -> tuple[Image.Image, str, Scene]:
    """Picture, caption and scene number `seed` of the world (the same for the same seed)."""
    rng = random.Random(seed)
    scene = random_scene(rng)
    return draw(scene, size), caption(scene, rng), scene
