"""find_pairs: the pairs of an edit dataset (targets with their instructions, control/ images of
the same stem) and a problem naming the file for everything that stops a pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from studio.data.pairs import find_pairs


def _img(path: Path, size=(64, 48), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_pairs_and_every_kind_of_problem(tmp_path):
    root = tmp_path / "set"
    _img(root / "good.png", seed=1)
    (root / "good.txt").write_text("make it snow\n", encoding="utf-8")
    _img(root / "control" / "good.jpg", seed=2)
    _img(root / "lonely.png", seed=3)
    _img(root / "control" / "orphan.webp", seed=4)
    _img(root / "wide.png", size=(96, 48), seed=5)
    _img(root / "control" / "wide.png", size=(64, 48), seed=6)
    _img(root / "big.png", size=(128, 96), seed=7)
    _img(root / "control" / "big.png", size=(64, 48), seed=8)
    _img(root / "same.png", seed=9)
    _img(root / "control" / "same.png", seed=9)
    _img(root / "twice.png", seed=10)
    _img(root / "control" / "twice.png", seed=11)
    _img(root / "control" / "twice.jpg", seed=12)
    scan = find_pairs(root)
    assert scan.has_control and scan.folder == root
    assert [(p.stem, p.control.name, p.target.name, p.caption) for p in scan.pairs] == [
        ("big", "big.png", "big.png", None), ("good", "good.jpg", "good.png", "make it snow"),
        ("same", "same.png", "same.png", None), ("twice", "twice.jpg", "twice.png", None),
        ("wide", "wide.png", "wide.png", None)]
    assert sorted((p.code, p.file) for p in scan.problems) == [
        ("aspect_mismatch", "wide.png"), ("duplicate_control", "control/twice.png"), ("identical", "same.png"),
        ("no_control", "lonely.png"), ("no_target", "control/orphan.webp"), ("size_mismatch", "big.png")]
    wide = next(p for p in scan.problems if p.code == "aspect_mismatch")
    assert wide.values == {"stem": "wide", "control": "64x48", "target": "96x48"} and "96x48" in wide.message


def test_a_studio_dataset_keeps_its_targets_in_images(tmp_path):
    _img(tmp_path / "cat" / "images" / "a.png", seed=1)
    _img(tmp_path / "cat" / "images" / "control" / "a.png", seed=2)
    scan = find_pairs(tmp_path / "cat")
    assert scan.folder == tmp_path / "cat" / "images" and [p.stem for p in scan.pairs] == ["a"] and not scan.problems


def test_a_plain_dataset_has_no_pairs(tmp_path):
    _img(tmp_path / "a.png")
    scan = find_pairs(tmp_path)
    assert not scan.has_control and scan.pairs == [] and [p.code for p in scan.problems] == ["no_control"]
