"""The benchmarks run from the repository alone: importable as `bench.*` from its root, and
train_speed draws its own photos unless a folder is given."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_no_benchmark_reads_outside_the_repository():
    for path in (ROOT / "bench").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "REPO.parent" not in text and '"shared"' not in text, path.name


def test_train_speed_draws_its_photos_or_takes_a_folder(tmp_path):
    from PIL import Image

    from bench import train_speed

    folder, described = train_speed.dataset_folder(tmp_path)
    images = sorted(folder.glob("*.png"))
    assert folder.is_relative_to(tmp_path) and len(images) == 8 and described == "8 generated images"
    assert {Image.open(p).size for p in images} == {(768, 512), (512, 640)}

    mine = tmp_path / "mine"
    mine.mkdir()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(mine / "red.jpg")
    assert train_speed.dataset_folder(tmp_path / "w", str(mine)) == (mine, str(mine))
    with pytest.raises(SystemExit, match="not a folder of images"):
        train_speed.dataset_folder(tmp_path / "w", str(tmp_path / "nowhere"))
