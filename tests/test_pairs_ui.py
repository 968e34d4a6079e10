"""Edit datasets in the Dataset and Captions tabs: pairs side by side, their problems by file name in the
page's language, one instruction for all pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _img(path: Path, size=(64, 48), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _edit_dataset(data: Path, tmp_path: Path) -> Path:
    """Studio dataset 'edit': a, b, c imported; control/ images for a (same size) and b (other
    shape); c has none; a's instruction given."""
    from studio.ui import handlers as h

    h.create_dataset(data, "edit")
    h.upload_files(data, "edit", [str(_img(tmp_path / "up" / f"{s}.png", size=(320, 256), seed=i))
                                  for i, s in enumerate("abc")])
    images = data / "datasets" / "edit" / "images"
    _img(images / "control" / "a.jpg", size=(320, 256), seed=10)
    _img(images / "control" / "b.png", size=(256, 256), seed=11)
    (images / "a.txt").write_text("make it night", encoding="utf-8")
    return images


def test_the_dataset_tab_shows_pairs_side_by_side_with_their_problems(tmp_path):
    from studio.ui.pairs_view import pair_view
    from studio.ui.thumbs import SIDE

    data = tmp_path / "data"
    _edit_dataset(data, tmp_path)
    view = pair_view(data, "edit", "en")
    assert view["edit"] and [caption for _, caption in view["items"]] == ["a · make it night", "b · no instruction"]
    with Image.open(view["items"][0][0]) as picture:
        assert picture.size == (2 * SIDE + 8, SIDE)
        gap = np.asarray(picture)[:, SIDE + 1:SIDE + 7]
    assert gap.min() > 240  # the white gap between before and after
    problems = view["problems"]
    assert "**2 pair(s), 2 problem(s).**" in problems
    assert "- `control/b.png`: the after image is 320x256 but the before image is 256x256: the shapes differ" in problems
    assert "- `c.png`: no before image: add control/c" in problems
    zh = pair_view(data, "edit", "zh-CN")["problems"]
    assert "- `c.png`: 没有编辑前的图" in zh and "2 对图像" in zh


def test_a_dataset_without_control_shows_no_pairs(tmp_path):
    from studio.ui import handlers as h
    from studio.ui.pairs_view import pair_view

    data = tmp_path / "data"
    h.create_dataset(data, "plain")
    h.upload_files(data, "plain", [str(_img(tmp_path / "x.png", size=(320, 256)))])
    assert pair_view(data, "plain", "en") == {"edit": False, "items": [], "problems": ""}
    assert pair_view(data, None, "en")["edit"] is False


def test_one_instruction_for_all_pairs(tmp_path):
    from studio.ui import handlers as h
    from studio.ui.pairs_view import instruction_for_all

    data = tmp_path / "data"
    images = _edit_dataset(data, tmp_path)
    assert instruction_for_all(data, "edit", "  make it winter ", "en") == \
        "The instruction was written for all 2 pair(s)."
    assert (images / "a.txt").read_text() == "make it winter" and (images / "b.txt").read_text() == "make it winter"
    assert not (images / "c.txt").exists()  # c has no pair
    with pytest.raises(h.UserError, match="empty one would erase"):
        instruction_for_all(data, "edit", "   ", "en")
    assert (images / "a.txt").read_text() == "make it winter"
    h.create_dataset(data, "plain")
    with pytest.raises(h.UserError, match="没有图像对"):
        instruction_for_all(data, "plain", "x", "zh-CN")


def test_the_dataset_tabs_view_answers_the_pair_components(tmp_path):
    from studio.ui.build import build_ui

    data = tmp_path / "data"
    _edit_dataset(data, tmp_path)
    demo = build_ui(data)
    event = next(f for f in demo.fns.values() if f.name == "on_view"
                 and "dataset-pairs" in [getattr(o, "elem_id", None) for o in f.outputs])
    out = dict(zip([getattr(o, "elem_id", None) for o in event.outputs], event.fn("edit", "portrait", 512, "en")))
    assert out["dataset-pairs"]["visible"] is True and len(out["dataset-pairs"]["value"]) == 2
    assert "2 pair(s)" in out["dataset-pairs-problems"]["value"]
    assert [caption.split(",")[0] for _, caption in out["dataset-gallery"]] == ["a · captioned", "b · no caption", "c · no caption"]
