"""Augmentation list: building, validation messages, determinism, cache helpers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from studio.data.augment import (
    NAMES,
    augment_variant,
    augmentation_cache_key,
    build_augmentations,
    uses_augmentation,
    validate_augmentations,
)

ALL = [
    {"name": "color_jitter", "params": {"brightness": 0.3, "contrast": 0.2}, "prob": 0.8},
    {"name": "horizontal_flip", "prob": 0.5},
    {"name": "random_crop", "params": {"scale": [0.7, 0.9]}, "prob": 1.0},
    {"name": "rotation", "params": {"degrees": 10}, "prob": 0.5},
    {"name": "elastic", "params": {"alpha": 30.0, "sigma": 5.0}, "prob": 0.5},
    {"name": "gaussian_blur", "params": {"kernel_size": 5, "sigma": [0.1, 1.0]}, "prob": 0.3},
    {"name": "grayscale", "prob": 0.2},
]


def photo(w=96, h=64):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_every_operation_builds_and_keeps_size_and_mode():
    assert {s["name"] for s in ALL} == set(NAMES)
    assert validate_augmentations(ALL) == []
    augment = build_augmentations(ALL)
    im = photo()
    for seed in range(5):
        torch.manual_seed(seed)
        out = augment(im)
        assert isinstance(out, Image.Image) and out.size == im.size and out.mode == "RGB"


def test_deterministic_under_manual_seed():
    augment = build_augmentations(ALL)
    torch.manual_seed(123)
    a = np.asarray(augment(photo()))
    torch.manual_seed(123)
    b = np.asarray(augment(photo()))
    torch.manual_seed(124)
    c = np.asarray(augment(photo()))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_single_operations_do_what_they_say():
    im = photo()
    flipped = build_augmentations([{"name": "horizontal_flip", "prob": 1.0}])(im)
    assert np.array_equal(np.asarray(flipped), np.asarray(im)[:, ::-1])
    assert build_augmentations([{"name": "horizontal_flip", "prob": 0.0}])(im) is im or np.array_equal(
        np.asarray(build_augmentations([{"name": "horizontal_flip", "prob": 0.0}])(im)), np.asarray(im))
    grey = np.asarray(build_augmentations([{"name": "grayscale", "prob": 1.0}])(im))
    assert np.array_equal(grey[..., 0], grey[..., 1])
    assert build_augmentations([])(im) is im


def test_validation_messages_are_plain_and_suggest_fixes():
    errors = validate_augmentations([
        {"name": "colour_jitter", "prob": 0.5},
        {"name": "color_jitter", "params": {"brightnes": 0.3}},
        {"name": "rotation", "params": {"degrees": -5}},
        {"name": "random_crop", "params": {"scale": [0.5, 2.0]}},
        {"name": "horizontal_flip", "prob": 1.5, "probability": 0.5},
        "flip",
    ])
    text = "\n".join(errors)
    assert "augmentations[0]: unknown augmentation 'colour_jitter' (did you mean 'color_jitter'?)" in text
    assert "augmentations[1] (color_jitter): unknown parameter 'brightnes' (did you mean 'brightness'?)" in text
    assert "augmentations[2] (rotation): invalid params" in text and "degrees" in text
    assert "augmentations[3] (random_crop): invalid params" in text and "scale" in text
    assert "prob must be a number from 0 to 1" in text and "unknown key 'probability'" in text
    assert "augmentations[5]: expected a mapping" in text
    with pytest.raises(ValueError, match="colour_jitter"):
        build_augmentations([{"name": "colour_jitter"}])


def test_cache_helpers():
    augment = build_augmentations(ALL)
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    v1 = np.asarray(augment_variant(augment, photo(), seed=7))
    after = torch.rand(3)
    assert torch.equal(before, after)  # the training RNG stream is untouched
    assert np.array_equal(v1, np.asarray(augment_variant(augment, photo(), seed=7)))
    assert augmentation_cache_key(ALL, 0) != augmentation_cache_key(ALL, 1) != augmentation_cache_key(ALL[:1], 1)
    assert uses_augmentation(ALL) and not uses_augmentation([]) and not uses_augmentation([{"name": "grayscale", "prob": 0}])


def test_module_import_does_not_import_torch():
    code = "import sys, studio.data.augment, studio.captioning, studio.data.report, studio.data.ingest; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
