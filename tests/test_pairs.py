"""Edit datasets: pairing control/ and target images by name, and naming every problem."""

from __future__ import annotations

import numpy as np
from PIL import Image

from studio.data.pairs import find_pairs, paired_geometry


def noise(w, h, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def make_edit_folder(root, studio_layout=True):
    images = root / "images" if studio_layout else root
    control = images / "control"
    control.mkdir(parents=True)
    noise(64, 48, 1).save(control / "a.jpg")
    noise(128, 96, 2).save(images / "a.png")                       # same aspect, 2× size: fine
    (images / "a.txt").write_text("make it blue\n")
    noise(64, 64, 3).save(control / "b.png")
    noise(64, 32, 4).save(images / "b.png")                        # aspect mismatch: stretched
    noise(32, 32, 5).save(control / "c.png")                       # no target
    noise(32, 32, 6).save(images / "d.png")                        # no control
    noise(40, 40, 7).save(control / "e.png")
    (images / "e.png").write_bytes((control / "e.png").read_bytes())  # identical
    noise(40, 40, 8).save(control / "f.png")
    noise(200, 200, 9).save(images / "f.png")                      # 5× per side
    return images


def test_pairs_by_stem_and_problems_by_file(tmp_path):
    make_edit_folder(tmp_path)
    scan = find_pairs(tmp_path)
    assert scan.root == tmp_path / "images"
    assert [p.stem for p in scan.pairs] == ["a", "b", "e", "f"]
    a = scan.pair("a")
    assert a.control.name == "a.jpg" and a.target.name == "a.png" and a.caption == "make it blue"
    assert scan.pair("b").caption is None
    found = {(p.file, p.code) for p in scan.problems}
    assert found == {("control/b.png", "aspect_mismatch"), ("control/c.png", "unpaired_control"),
                     ("d.png", "unpaired_target"), ("control/e.png", "identical"),
                     ("control/f.png", "size_mismatch")}
    for p in scan.problems:  # every message names the file and says what to do
        assert p.file in p.message
    assert scan.is_edit_dataset


def test_plain_folder_and_folder_without_pairs(tmp_path):
    make_edit_folder(tmp_path / "plain", studio_layout=False)
    scan = find_pairs(tmp_path / "plain")
    assert scan.root == tmp_path / "plain" and len(scan.pairs) == 4
    (tmp_path / "t2i").mkdir()
    noise(32, 32, 0).save(tmp_path / "t2i" / "x.png")
    empty = find_pairs(tmp_path / "t2i")
    assert empty.pairs == [] and empty.problems == [] and not empty.is_edit_dataset


def test_identical_pixels_in_different_files_are_found(tmp_path):
    (tmp_path / "control").mkdir()
    im = noise(48, 48, 1)
    im.save(tmp_path / "control" / "a.jpg", quality=100)
    Image.open(tmp_path / "control" / "a.jpg").save(tmp_path / "a.png")  # same pixels, other bytes
    assert [p.code for p in find_pairs(tmp_path).problems] == ["identical"]


def test_paired_geometry_follows_the_target():
    size, box = paired_geometry((1000, 750), (512, 512))
    assert size == (683, 512) and box == (85, 0, 597, 512)
