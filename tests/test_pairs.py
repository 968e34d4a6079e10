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


# ---------------------------------------------------------------- import


def _png(im):
    import io
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_import_pairs_from_a_zip_reports_every_unpaired_and_mismatched_item(tmp_path):
    import zipfile

    from studio.data.ingest import ingest, list_dataset, remove_item

    archive = tmp_path / "pairs.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("set/control/a.jpg", _png(noise(320, 320, 1)))
        zf.writestr("set/target/a.png", _png(noise(320, 320, 2)))
        zf.writestr("set/target/a.txt", "make it a watercolour")
        zf.writestr("set/control/b.png", _png(noise(320, 320, 3)))
        zf.writestr("set/target/b.png", _png(noise(480, 320, 4)))     # stretched
        zf.writestr("set/b.txt", "turn it into a sketch")                # caption beside the folders
        zf.writestr("set/control/c.png", _png(noise(320, 320, 5)))     # no target
        zf.writestr("set/target/d.png", _png(noise(320, 320, 6)))      # no control
        zf.writestr("set/control/e.png", _png(noise(320, 320, 2)))     # same pixels as a's target: allowed
        zf.writestr("set/target/e.png", _png(noise(320, 320, 7)))
    result = ingest([archive], tmp_path / "ds")
    assert sorted(a.stem for a in result.accepted) == ["a", "b", "d", "e"]
    assert sorted(result.pairs) == ["a", "b", "e"]
    assert result.codes() == {"pairs.zip:set/control/c.png": "unpaired_control"}
    warnings = "\n".join(result.warnings)
    assert "pairs.zip:set/target/d.png: imported without a control image" in warnings
    assert "pairs.zip:set/control/b.png is 320×320 but pairs.zip:set/target/b.png is 480×320" in warnings
    assert "4 image(s) imported (3 edit pair(s))" in result.summary()

    scan = find_pairs(tmp_path / "ds")
    assert [p.stem for p in scan.pairs] == ["a", "b", "e"]
    assert scan.pair("a").caption == "make it a watercolour" and scan.pair("b").caption == "turn it into a sketch"
    assert {(p.file, p.code) for p in scan.problems} == {("control/b.png", "aspect_mismatch"),
                                                         ("d.png", "unpaired_target")}
    assert [i.stem for i in list_dataset(tmp_path / "ds")] == ["a", "b", "d", "e"]  # controls are not targets
    assert (tmp_path / "ds" / "originals" / "control" / "a.jpg").is_file()
    remove_item(tmp_path / "ds", "a")
    assert not (tmp_path / "ds" / "images" / "control" / "a.png").exists()


def test_import_a_pair_folder_and_a_refused_target(tmp_path):
    from studio.data.ingest import ingest

    src = tmp_path / "upload"
    (src / "control").mkdir(parents=True)
    (src / "target").mkdir()
    noise(320, 320, 1).save(src / "control" / "x.png")
    noise(320, 320, 2).save(src / "target" / "x.png")
    (src / "x.txt").write_text("add a hat")
    noise(320, 320, 3).save(src / "control" / "y.png")
    (src / "target" / "y.png").write_bytes(b"")                      # refused: empty
    result = ingest([src], tmp_path / "ds")
    assert [a.stem for a in result.accepted] == ["x"] and result.pairs == ["x"]
    codes = result.codes()
    assert codes["upload/target/y.png"] == "empty_file"
    assert codes["upload/control/y.png"] == "unpaired_control"
    assert "empty_file" in next(r.message for r in result.rejected if r.name == "upload/control/y.png")
    assert find_pairs(tmp_path / "ds").pair("x").caption == "add a hat"


def test_an_ordinary_upload_is_unchanged(tmp_path):
    from studio.data.ingest import ingest

    src = tmp_path / "photos"
    (src / "target").mkdir(parents=True)  # a folder that happens to be called target, no control/
    noise(320, 320, 1).save(src / "target" / "p.png")
    result = ingest([src], tmp_path / "ds")
    assert [a.stem for a in result.accepted] == ["p"] and result.pairs == [] and not result.warnings
    assert not (tmp_path / "ds" / "images" / "control").exists()


def test_quality_report_checks_pairs(tmp_path):
    from studio.data.report import format_report, quality_report

    make_edit_folder(tmp_path)
    report = quality_report(tmp_path, resolution=512)
    assert report["pairs"]["count"] == 4
    codes = {w["code"]: w for w in report["warnings"]}
    assert codes["pair_unpaired_control"]["items"] == ["control/c.png"]
    assert codes["pair_unpaired_target"]["items"] == ["d.png"]
    assert codes["pair_identical"]["items"] == ["control/e.png"]
    assert codes["pair_aspect_mismatch"]["items"] == ["control/b.png"]
    assert codes["pair_size_mismatch"]["items"] == ["control/f.png"]
    assert "control/c.png" in format_report(report)
    (tmp_path / "other").mkdir()
    noise(64, 64, 1).save(tmp_path / "other" / "x.png")
    plain = quality_report(tmp_path / "other", resolution=512, items=[])
    assert plain["pairs"] == {"count": 0, "problems": []}
    assert not [w for w in plain["warnings"] if w["code"].startswith("pair_")]
