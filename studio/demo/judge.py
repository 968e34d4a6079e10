"""What a picture of the demo world shows, measured from its pixels: background, shape colour, shape.

- Every pixel takes the nearest named colour of the world's palette.
- The background is the commonest colour of a frame 4 pixels wide around the edge.
- The shape's colour is the commonest other colour inside that frame.
- The shape is named twice, by two judges that look at different things:
  - `template`: the template (circle, square, triangle, star, drawn as the world draws them) that
    overlaps the shape-coloured pixels best once fitted to their bounding box (IoU). Strict about
    proportions and turn: a star drawn a little turned, or with blunt points, fits the circle
    better than the world's exact star.
  - `shape`: the shape by its outline's corners. Walking round the outline, the distance from the centre
    rises and falls three times for a triangle, four for a square, five for a star, and not at
    all for a circle; the strongest of those three rhythms names the shape, and a circle is an
    outline with none of them. Indifferent to turn, proportions and blunt points.

Checked on the world's own pictures (tests/test_demo_world.py): both judges name every one right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .world import COLOURS, SHAPES, shape_polygon

NAMES = list(COLOURS)
_RGB = np.array([COLOURS[n] for n in NAMES], dtype=np.float32)
FRAME = 4


@dataclass
class Verdict:
    background: str
    colour: str | None    # None: nothing but background
    shape: str | None     # the shape by its outline's corners (see the module's docstring)
    template: str | None  # the best-fitting template
    fit: float            # IoU of the best template, 0..1
    coverage: float       # share of the picture in the shape's colour


def colour_labels(image: Image.Image) -> np.ndarray:
    """Per pixel, the index in NAMES of the nearest palette colour."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    distance = ((rgb[:, :, None, :] - _RGB[None, None]) ** 2).sum(-1)
    return distance.argmin(-1)


def template(shape: str, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """A boolean mask of `shape` whose own bounding box is `box` (x0, y0, x1, y1), drawn at 4x."""
    scale = 4
    mask = Image.new("L", (size[0] * scale, size[1] * scale), 0)
    draw = ImageDraw.Draw(mask)
    big = tuple(v * scale for v in box)
    outline = shape_polygon(shape, big)
    if outline is None:
        draw.ellipse(big, fill=255)
    else:  # stretch the outline so that its extent is exactly the box (a star is narrower than tall)
        xs, ys = [p[0] for p in outline], [p[1] for p in outline]
        fx = (big[2] - big[0]) / max(1e-6, max(xs) - min(xs))
        fy = (big[3] - big[1]) / max(1e-6, max(ys) - min(ys))
        draw.polygon([(big[0] + (x - min(xs)) * fx, big[1] + (y - min(ys)) * fy) for x, y in outline], fill=255)
    return np.asarray(mask.resize(size, Image.Resampling.BOX)) >= 128


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The box of the shape-coloured pixels, ignoring the odd stray pixel far away."""
    ys, xs = np.nonzero(mask)
    x0, x1 = np.percentile(xs, [0.5, 99.5])
    y0, y1 = np.percentile(ys, [0.5, 99.5])
    return float(x0), float(y0), float(x1) + 1, float(y1) + 1


def classify_template(mask: np.ndarray) -> tuple[str | None, float]:
    """The best-fitting shape for a boolean mask, and its IoU."""
    if mask.sum() < 12:
        return None, 0.0
    box = _box(mask)
    h, w = mask.shape
    best, best_iou = None, -1.0
    for shape in SHAPES:
        t = template(shape, box, (w, h))
        iou = (t & mask).sum() / max(1, (t | mask).sum())
        if iou > best_iou:
            best, best_iou = shape, float(iou)
    return best, best_iou


# Corners per turn of each shape's outline, and how strong a rhythm must be to count as corners:
# half the weakest one among the world's own shapes (a square's, 0.15 of the mean distance).
CORNERS = {3: "triangle", 4: "square", 5: "star"}
ROUND = 0.075
_BINS = 90  # 4° each


def corner_rhythms(mask: np.ndarray) -> dict[int, float]:
    """For 3, 4 and 5 corners per turn: how strongly the outline's distance from the centre rises
    and falls that often, as a share of the mean distance (0 for a circle, 0.34 for the world's star)."""
    x0, y0, x1, y1 = _box(mask)
    ys, xs = np.nonzero(mask)
    keep = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    ys, xs = ys[keep] + 0.5, xs[keep] + 0.5
    cy, cx = ys.mean(), xs.mean()
    angle = np.arctan2(ys - cy, xs - cx)
    turn = ((angle + np.pi) / (2 * np.pi) * _BINS).astype(int) % _BINS
    reach = np.zeros(_BINS)
    np.maximum.at(reach, turn, np.hypot(ys - cy, xs - cx))  # the outline: the farthest pixel each way
    spectrum = np.abs(np.fft.rfft(reach)) / _BINS
    return {k: float(2 * spectrum[k] / max(spectrum[0], 1e-6)) for k in CORNERS}


def classify_outline(mask: np.ndarray) -> str | None:
    """The shape named by its outline's corners (see the module's docstring)."""
    if mask.sum() < 12:
        return None
    rhythms = corner_rhythms(mask)
    corners = max(rhythms, key=rhythms.get)
    return CORNERS[corners] if rhythms[corners] >= ROUND else "circle"


def judge(image: Image.Image) -> Verdict:
    labels = colour_labels(image)
    frame = np.concatenate([labels[:FRAME].ravel(), labels[-FRAME:].ravel(),
                            labels[:, :FRAME].ravel(), labels[:, -FRAME:].ravel()])
    background = int(np.bincount(frame, minlength=len(NAMES)).argmax())
    inside = labels[FRAME:-FRAME, FRAME:-FRAME]
    counts = np.bincount(inside[inside != background], minlength=len(NAMES))
    if counts.sum() < 12:
        return Verdict(NAMES[background], None, None, None, 0.0, 0.0)
    colour = int(counts.argmax())
    mask = labels == colour
    template, fit = classify_template(mask)
    return Verdict(NAMES[background], NAMES[colour], classify_outline(mask), template, fit, float(mask.mean()))
