"""Aspect-ratio buckets: sizes that are multiples of 16 px with an area close to resolution².

Every batch is drawn from one bucket, so images keep their shape instead of being squashed
or cropped to a square.
"""

from __future__ import annotations

import math

STEP = 16  # VAE 8x down-sampling, then 2x2 latent packing


def make_buckets(resolution: int, min_side: int = 256, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """All (width, height) buckets for a base resolution, area ≤ resolution², sides multiples of 16."""
    if resolution % STEP:
        raise ValueError(f"resolution {resolution} is not a multiple of {STEP}")
    area = resolution * resolution
    min_side = min(min_side, resolution)
    buckets = set()
    width = min_side
    while width <= resolution * max_ratio:
        height = (area // width) // STEP * STEP
        if height >= min_side and max(width / height, height / width) <= max_ratio:
            buckets.add((width, height))
            buckets.add((height, width))
        width += STEP
    return sorted(buckets)


def nearest_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket whose aspect ratio is closest (in log space) to the image's."""
    ratio = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - ratio), -b[0] * b[1]))


def fit_to_bucket(width: int, height: int, bucket: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Resize size and centre-crop box that turn a width×height image into exactly `bucket`.

    The image is scaled so that it covers the bucket, then the overhang is cropped equally
    from both sides. Returns ((new_w, new_h), (left, top, right, bottom)).
    """
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    new_w, new_h = max(bw, round(width * scale)), max(bh, round(height * scale))
    left, top = (new_w - bw) // 2, (new_h - bh) // 2
    return (new_w, new_h), (left, top, left + bw, top + bh)
