"""Pictures beyond the base model's world: other colours, patterns and shapes.

The demo VAE is trained on these as well as on the world, so that it can encode and decode
what a LoRA may later teach (the demo dataset in `dataset.py` is drawn from here), while the
transformer only ever sees the world's plain shapes in its named colours.
"""

from __future__ import annotations

import math
import random

from PIL import Image, ImageDraw

from .world import COLOURS, SHAPES, SIZE, _SUPER, draw_shape, paint_background

EXTRA_SHAPES = ("heart", "ring", "cross", "diamond")
PATTERNS = ("plain", "stripes", "checks", "dots")


def extra_polygon(shape: str, box) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "cross":
        a = 0.34
        return [(cx - rx * a, y0), (cx + rx * a, y0), (cx + rx * a, cy - ry * a), (x1, cy - ry * a),
                (x1, cy + ry * a), (cx + rx * a, cy + ry * a), (cx + rx * a, y1), (cx - rx * a, y1),
                (cx - rx * a, cy + ry * a), (x0, cy + ry * a), (x0, cy - ry * a), (cx - rx * a, cy - ry * a)]
    if shape == "heart":  # the classic parametric heart, scaled into the box
        pts = [(16 * math.sin(t) ** 3, -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)))
               for t in (2 * math.pi * k / 64 for k in range(64))]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return [(x0 + (x - min(xs)) / (max(xs) - min(xs)) * (x1 - x0),
                 y0 + (y - min(ys)) / (max(ys) - min(ys)) * (y1 - y0)) for x, y in pts]
    raise ValueError(f"unknown shape {shape!r}")


def draw_any_shape(draw: ImageDraw.ImageDraw, shape: str, box, fill) -> None:
    if shape in SHAPES:
        draw_shape(draw, shape, box, fill)
    elif shape == "ring":
        width = (box[2] - box[0]) * 0.18
        draw.ellipse(box, outline=fill, width=max(1, int(width)))
    else:
        draw.polygon(extra_polygon(shape, box), fill=fill)


def pattern(kind: str, side: int, colours: tuple[tuple, tuple], period: float, angle: float = 0.0) -> Image.Image:
    """A `side`-pixel square of a two-colour pattern; `period` in pixels of that square."""
    image = Image.new("RGB", (side, side), colours[0])
    if kind == "plain":
        return image
    d = ImageDraw.Draw(image)
    if kind == "stripes":  # drawn on a larger canvas, turned by `angle`, cropped back
        big = Image.new("RGB", (side * 2, side * 2), colours[0])
        db = ImageDraw.Draw(big)
        x = 0.0
        while x < side * 2:
            db.rectangle((x, 0, x + period / 2, side * 2), fill=colours[1])
            x += period
        big = big.rotate(angle, resample=Image.Resampling.NEAREST)
        return big.crop((side // 2, side // 2, side // 2 + side, side // 2 + side))
    n = int(math.ceil(side / period)) + 1
    for i in range(n):
        for j in range(n):
            if kind == "checks" and (i + j) % 2:
                d.rectangle((i * period, j * period, (i + 1) * period, (j + 1) * period), fill=colours[1])
            elif kind == "dots":
                r = period * 0.28
                cx, cy = (i + 0.5) * period, (j + 0.5) * period
                d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colours[1])
    return image


def patterned_shape(shape: str, box, fill: Image.Image, background: Image.Image) -> Image.Image:
    """`background` with `shape` cut out of the picture `fill` (all at the same size)."""
    mask = Image.new("L", background.size, 0)
    draw_any_shape(ImageDraw.Draw(mask), shape, box, 255)
    return Image.composite(fill, background, mask)


def random_rgb(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(256) for _ in range(3))


def wider_picture(rng: random.Random, size: int = SIZE) -> Image.Image:
    """A random picture of any colours, patterns and up to three shapes (VAE training only)."""
    side = size * _SUPER

    def colour():
        return random_rgb(rng) if rng.random() < 0.6 else COLOURS[rng.choice(list(COLOURS))]

    def fill_picture():
        kind = rng.choice(PATTERNS)
        return pattern(kind, side, (colour(), colour()), rng.uniform(0.04, 0.25) * side, rng.uniform(0, 180))

    if rng.random() < 0.5:
        image = fill_picture()
    else:
        image = Image.new("RGB", (side, side))
        paint_background(ImageDraw.Draw(image), side, [colour(), colour()], rng.choice(("left-right", "top-bottom")))
    for _ in range(rng.choice((1, 1, 2, 3))):
        r = rng.uniform(0.08, 0.4) * side
        cx, cy = rng.uniform(r, side - r), rng.uniform(r, side - r)
        box = (cx - r, cy - r, cx + r, cy + r)
        shape = rng.choice(SHAPES + EXTRA_SHAPES)
        image = patterned_shape(shape, box, fill_picture(), image)
    return image.resize((size, size), Image.Resampling.BOX)
