"""Ingestion of a hostile / broken corpus built in tmp_path (see HARDENING_NOTES.md section 2)."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.data.ingest import (
    IngestLimits,
    decode_image,
    ingest,
    list_dataset,
    remove_item,
    sanitise_name,
    set_caption,
    sniff,
    supported_formats,
)


def noise_image(w=320, h=320, seed=0, mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A ~60-byte PNG declaring width x height: a pixel bomb that costs nothing to write."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def zip_with(path: Path, entries: list[tuple[str, bytes]], symlinks: dict[str, str] = {}) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
        for name, target in symlinks.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix, so external_attr carries the mode bits
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def corpus(tmp_path):
    """A folder of loose files + a zip, good and bad mixed, and the expected reason per bad item."""
    up = tmp_path / "upload"
    up.mkdir()
    good = {}
    good["good1.jpg"] = encode(noise_image(seed=1), "JPEG", quality=90)
    good["good2.png"] = encode(noise_image(400, 300, seed=2), "PNG")
    good["good3.webp"] = encode(noise_image(seed=3), "WEBP")
    for name, data in good.items():
        (up / name).write_bytes(data)
    (up / "good1.txt").write_text("\ufeffa photo of sks dog", "utf-8")  # BOM must be stripped
    (up / "good2.txt").write_bytes("caf\xe9 photo".encode("latin-1"))  # not UTF-8
    (up / "good3.txt").write_text("word " * 2000, "utf-8")  # huge caption
    (up / "z_copy_of_good1.jpg").write_bytes(good["good1.jpg"])  # byte duplicate
    (up / "reencoded_good2.bmp").write_bytes(encode(Image.open(io.BytesIO(good["good2.png"])), "BMP"))  # pixel dup
    full = encode(noise_image(seed=9), "JPEG")
    (up / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (up / "zero.jpg").write_bytes(b"")
    (up / "text.png").write_text("hello, I am not an image")
    (up / "doc.png").write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
    (up / "art.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    (up / "sky.png").write_bytes(b"SIMPLE  =                    T" + b" " * 50 + b"END" + b" " * 2797)
    (up / "bomb.png").write_bytes(png_header_only(20000, 20000))
    (up / "tiny.png").write_bytes(encode(noise_image(64, 64), "PNG"))
    (up / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    (up / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (up / "orphan.txt").write_text("no image for me")

    zpath = zip_with(tmp_path / "photos.zip", [
        ("sub/zipgood.jpg", encode(noise_image(seed=5), "JPEG")),
        ("sub/zipgood.txt", b"zip caption"),
        ("../x.jpg", encode(noise_image(seed=6), "JPEG")),
        ("/abs.jpg", encode(noise_image(seed=7), "JPEG")),
        ("C:\\x.jpg", encode(noise_image(seed=8), "JPEG")),
        ("__MACOSX/sub/._zipgood.jpg", b"\x00\x05\x16\x07 apple double"),
        ("sub/.DS_Store", b"Bud1"),
        ("inner.zip", b"PK\x05\x06" + b"\x00" * 18),
        ("a/good1.jpg", encode(noise_image(seed=11), "JPEG")),  # same name as a loose file
    ], symlinks={"link.jpg": "/etc/passwd"})
    expected = {
        "upload/z_copy_of_good1.jpg": "duplicate",
        "upload/reencoded_good2.bmp": "duplicate",
        "upload/truncated.jpg": "corrupt",
        "upload/zero.jpg": "empty_file",
        "upload/text.png": "not_an_image",
        "upload/doc.png": "not_an_image",
        "upload/art.png": "not_an_image",
        "upload/sky.png": "not_an_image",
        "upload/bomb.png": "too_many_pixels",
        "upload/tiny.png": "too_small",
        "upload/phone.heic": "unsupported_format",
        "upload/.DS_Store": "junk",
        "upload/good2.txt": "caption_encoding",
        "upload/orphan.txt": "orphan_caption",
        "photos.zip:../x.jpg": "unsafe_path",
        "photos.zip:/abs.jpg": "unsafe_path",
        "photos.zip:C:\\x.jpg": "unsafe_path",
        "photos.zip:__MACOSX/sub/._zipgood.jpg": "junk",
        "photos.zip:sub/.DS_Store": "junk",
        "photos.zip:inner.zip": "nested_zip",
        "photos.zip:link.jpg": "symlink",
    }
    return [up, zpath], expected


def test_hostile_corpus_each_item_gets_its_reason_and_good_images_are_kept(tmp_path, corpus):
    sources, expected = corpus
    before = all_files(tmp_path)
    ds = tmp_path / "data" / "datasets" / "mine"
    result = ingest(sources, ds, IngestLimits(min_side=128))

    assert result.codes() == expected, result.summary()
    assert sorted(a.stem for a in result.accepted) == ["good1", "good1_2", "good2", "good3", "zipgood"]
    for r in result.rejected:
        assert r.name.split(":")[-1].split("/")[-1] in r.message or r.code == "unsafe_path" or "zip" in r.message
    # nothing outside the dataset folder was created or changed
    after = all_files(tmp_path)
    assert {p for p in after - before if not p.is_relative_to(ds)} == set()
    assert not (tmp_path / "x.jpg").exists() and not Path("/abs.jpg").exists()
    # captions: BOM stripped, bad encoding dropped (image kept), huge truncated with a warning
    items = {i.stem: i for i in list_dataset(ds)}
    assert items["good1"].caption == "a photo of sks dog"
    assert items["good2"].caption is None
    assert len(items["good3"].caption) <= 2000 and any("truncated" in w for w in result.warnings)
    assert items["zipgood"].caption == "zip caption"
    # originals are untouched bytes; normalised copies are RGB PNGs
    assert (ds / "originals" / "good1.jpg").read_bytes() == (sources[0] / "good1.jpg").read_bytes()
    for item in items.values():
        with Image.open(item.image) as im:
            assert im.format == "PNG" and im.mode == "RGB"
    report = json.loads((ds / "report.json").read_text())
    assert set(report["items"]) == set(items)
    assert {r["code"] for r in report["rejected"]} == set(expected.values())


def test_repeated_uploads_accumulate_and_detect_duplicates(tmp_path):
    ds = tmp_path / "ds"
    a = tmp_path / "a.png"
    a.write_bytes(encode(noise_image(seed=1), "PNG"))
    assert len(ingest([a], ds).accepted) == 1
    b = tmp_path / "b.jpg"
    b.write_bytes(encode(noise_image(seed=2), "JPEG"))
    second = ingest([a, b], ds)
    assert second.codes() == {"a.png": "duplicate"}
    report = json.loads((ds / "report.json").read_text())
    assert set(report["items"]) == {"a", "b"} and len(report["uploads"]) == 2
    # a caption uploaded later attaches to the existing image
    cap = tmp_path / "b.txt"
    cap.write_text("later caption")
    ingest([cap], ds)
    assert {i.stem: i.caption for i in list_dataset(ds)} == {"a": None, "b": "later caption"}
    set_caption(ds, "a", "edited")
    assert remove_item(ds, "b")
    assert [(i.stem, i.caption) for i in list_dataset(ds)] == [("a", "edited")]
    assert "b" not in json.loads((ds / "report.json").read_text())["items"]
    with pytest.raises(ValueError):
        remove_item(ds, "../a")


def test_zip_bomb_and_entry_count_limits(tmp_path):
    good = encode(noise_image(seed=3), "JPEG")
    bomb = zip_with(tmp_path / "bomb.zip", [("ok.jpg", good), ("zeros.bmp", b"\x00" * 3_000_000), ("after.jpg", good)])
    assert zipfile.ZipFile(bomb).getinfo("zeros.bmp").compress_size < 10_000  # tiny on disk, 3 MB unpacked
    limits = IngestLimits(max_zip_uncompressed_bytes=1_000_000, max_zip_entries=5)
    result = ingest([bomb], tmp_path / "ds", limits)
    assert [a.stem for a in result.accepted] == ["ok"]
    assert result.codes() == {"bomb.zip:zeros.bmp": "zip_bomb", "bomb.zip:after.jpg": "zip_bomb"}
    assert "more than 0.95 MB" in result.rejected[0].message and "limits." not in result.rejected[0].message

    many = zip_with(tmp_path / "many.zip", [(f"{i}.jpg", good) for i in range(6)])
    result = ingest([many], tmp_path / "ds2", limits)
    assert result.codes() == {"many.zip": "too_many_entries"} and not result.accepted


def test_file_count_and_size_limits_are_reported(tmp_path):
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(encode(noise_image(seed=i), "PNG"))
    result = ingest(files, tmp_path / "ds", IngestLimits(max_files=2))
    # The real limit in plain words, not the name of a setting a creator never saw.
    assert result.codes() == {"2.png": "too_many_files"} and "already holds 2 images" in result.rejected[0].message
    assert all("limits." not in r.message for r in result.rejected)
    result = ingest(files, tmp_path / "ds2", IngestLimits(max_file_bytes=1000))
    assert set(result.codes().values()) == {"file_too_large"}
    result = ingest(files, tmp_path / "ds3", IngestLimits(max_total_bytes=len(files[0].read_bytes()) + 10))
    assert result.codes() == {"1.png": "upload_too_large", "2.png": "upload_too_large"}


def test_per_call_pixel_limit_on_a_real_image(tmp_path):
    src = tmp_path / "big.png"
    src.write_bytes(encode(noise_image(300, 300), "PNG"))
    result = ingest([src], tmp_path / "ds", IngestLimits(max_pixels=300 * 299))
    assert result.codes() == {"big.png": "too_many_pixels"} and "limit of 89,700 pixels" in result.rejected[0].message


LIMITS = IngestLimits(min_side=16)


def test_16bit_grey_is_scaled_not_clipped():
    arr = np.array([[0, 32768, 65535, 257]] * 16, dtype=np.uint16)
    data = encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    rgb, _ = decode_image(data, "deep.png", IngestLimits(min_side=4))
    row = np.asarray(rgb)[0, :, 0]
    assert list(row) == [0, 128, 255, 1]


def test_cmyk_palette_transparency_la_and_animation():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red ink
    rgb, fmt = decode_image(encode(cmyk, "JPEG", quality=95), "cmyk.jpg", LIMITS)
    assert fmt == "JPEG" and rgb.mode == "RGB"
    r, g, b = rgb.getpixel((16, 16))
    assert r > 230 and g < 30 and b < 30

    pal = Image.new("P", (32, 32), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(0, (0, 0, 16, 32))
    rgb, _ = decode_image(encode(pal, "PNG", transparency=0), "pal.png", LIMITS, background=(0, 0, 255))
    assert rgb.getpixel((2, 2)) == (0, 0, 255) and rgb.getpixel((30, 2)) == (255, 0, 0)

    la = Image.new("LA", (32, 32), (200, 0))
    rgb, _ = decode_image(encode(la, "PNG"), "la.png", LIMITS, background=(10, 20, 30))
    assert rgb.getpixel((0, 0)) == (10, 20, 30)

    frames = [Image.new("RGB", (32, 32), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50)
    rgb, fmt = decode_image(gif.getvalue(), "anim.gif", LIMITS)
    assert fmt == "GIF" and rgb.getpixel((5, 5))[0] > 240


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (64, 32), (255, 0, 0))
    im.paste((0, 255, 0), (0, 0, 8, 32))  # green stripe on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    rgb, _ = decode_image(encode(im, "JPEG", exif=exif.tobytes(), quality=95), "rot.jpg", LIMITS)
    assert rgb.size == (32, 64)
    assert rgb.getpixel((16, 2))[1] > 200  # the left stripe is now on top


def test_sniffing_and_names():
    assert sniff(b"\xff\xd8\xff\xe0") == "JPEG" and sniff(b"%PDF-1.4") == "pdf"
    assert sniff(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1") == "AVIF"
    assert "JPEG" in supported_formats() and "FITS" not in supported_formats()
    assert sanitise_name("../../etc/passwd") == "etc_passwd"
    assert sanitise_name("Café photo (1)") == "Cafe_photo_1"
    assert sanitise_name("....") == "image"


def test_icc_tagged_rgb_goes_through_colour_management():
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    im = Image.new("RGB", (32, 32), (200, 100, 50))
    rgb, _ = decode_image(encode(im, "PNG", icc_profile=srgb), "tagged.png", LIMITS)
    assert all(abs(a - b) <= 2 for a, b in zip(rgb.getpixel((3, 3)), (200, 100, 50)))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_ends_upright(orientation):
    # An upright 64x32 image with a green top-left corner, stored as a camera would for `orientation`.
    upright = Image.new("RGB", (64, 32), (255, 0, 0))
    upright.paste((0, 255, 0), (0, 0, 8, 8))
    inverse = {2: [Image.Transpose.FLIP_LEFT_RIGHT], 3: [Image.Transpose.ROTATE_180],
               4: [Image.Transpose.FLIP_TOP_BOTTOM], 5: [Image.Transpose.TRANSPOSE],
               6: [Image.Transpose.ROTATE_90], 7: [Image.Transpose.TRANSVERSE], 8: [Image.Transpose.ROTATE_270]}
    stored = upright
    for op in inverse.get(orientation, []):
        stored = stored.transpose(op)
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb, _ = decode_image(encode(stored, "PNG", exif=exif.tobytes()), f"o{orientation}.png", LIMITS)
    assert rgb.size == (64, 32)
    assert rgb.getpixel((2, 2)) == (0, 255, 0) and rgb.getpixel((60, 30)) == (255, 0, 0)


def test_animated_webp_first_frame():
    if "WEBP" not in supported_formats():
        pytest.skip("this Pillow has no WebP")
    frames = [Image.new("RGB", (32, 32), c) for c in [(0, 0, 255), (255, 0, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=50, lossless=True)
    rgb, fmt = decode_image(buf.getvalue(), "anim.webp", LIMITS)
    assert fmt == "WEBP" and rgb.getpixel((5, 5)) == (0, 0, 255)


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the duplicate entry is the fixture
def test_folder_symlinks_and_duplicate_zip_names(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "real.png").write_bytes(encode(noise_image(seed=1), "PNG"))
    (folder / "link.png").symlink_to(folder / "real.png")
    (folder / "escape.png").symlink_to("/etc/hostname")
    z = zip_with(tmp_path / "dups.zip", [("same.jpg", encode(noise_image(seed=2), "JPEG")),
                                         ("same.jpg", encode(noise_image(seed=3), "JPEG"))])
    result = ingest([folder, z], tmp_path / "ds")
    assert result.codes() == {"folder/escape.png": "symlink", "folder/link.png": "symlink"}
    assert sorted(a.stem for a in result.accepted) == ["real", "same", "same_2"]
    assert sorted(p.name for p in (tmp_path / "ds" / "images").iterdir()) == ["real.png", "same.png", "same_2.png"]


def test_hostile_corpus_through_the_ui_upload_handler(tmp_path, corpus):
    """The Dataset tab's upload path gets the same protection and the same reasons."""
    from studio.ui import handlers

    sources, expected = corpus
    files = sorted(str(p) for p in sources[0].iterdir()) + [str(sources[1])]
    data = tmp_path / "studio_data"
    handlers.create_dataset(data, "mine")
    before = all_files(tmp_path)
    message = handlers.upload_files(data, "mine", files)
    ds = data / "datasets" / "mine"
    assert sorted(i.stem for i in list_dataset(ds)) == ["good1", "good1_2", "good2", "good3", "zipgood"]
    report = json.loads((ds / "report.json").read_text())
    assert {r["code"] for r in report["rejected"]} == set(expected.values())
    listed = [line for line in message.splitlines() if line.startswith("- Skipped ")]
    assert len(listed) == 20 and f"and {len(report['rejected']) - 20} more skipped" in message
    from studio.i18n import md_text

    for line in listed:  # each shown line names its file and says why (Markdown-escaped, shown as typed)
        assert any(md_text(r["name"]) in line and md_text(r["message"]) in line for r in report["rejected"]), line
    assert {p for p in all_files(tmp_path) - before if not p.is_relative_to(ds)} == set()


# Captions from UTF-16 files are read only behind their byte-order mark and only when the content
# reads as text: a stray FF FE before 8-bit bytes once became the caption '戀摡쌠 瑵㡦'.
GARBAGE_BEHIND_BOM = b"\xff\xfe\x00bad \xc3 \x00utf8"


@pytest.mark.parametrize("data, expected", [
    ("a photo of ohwx, red sneaker".encode("utf-8"), "a photo of ohwx, red sneaker"),
    ("\ufeffohwx on a café terrace".encode("utf-8"), "ohwx on a café terrace"),
    ("ohwx 一只猫坐在沙发上".encode("utf-16"), "ohwx 一只猫坐在沙发上"),  # with BOM, either byte order
    ("東京の夜景、ohwx スタイル".encode("utf-16-be").join([b"\xfe\xff", b""]), "東京の夜景、ohwx スタイル"),
    ("한국어 캡션 ohwx".encode("utf-16"), "한국어 캡션 ohwx"),
    (GARBAGE_BEHIND_BOM, None),
    (b"\xff\xfe" + "ohwx cat".encode("utf-8"), None),  # UTF-8 text behind a UTF-16 mark
    (b"\xff\xfeab\x00", None),  # odd length
    (b"\xff\xfe\x00\xd8a\x00", None),  # lone surrogate
    ("ohwx\x00cat".encode("utf-8"), None),
    ("ohwx\x1bcat".encode("utf-8"), None),  # an escape character
    ("ohwx \ue000 cat".encode("utf-8"), None),  # private use
    (b"ohwx \xc3 cat", None),  # not UTF-8
])
def test_captions_are_decoded_strictly(data, expected):
    from studio.data.decode import decode_caption
    from studio.data.limits import Reject

    if expected is not None:
        assert decode_caption(data, "x.txt", 2000)[0] == expected
    else:
        with pytest.raises(Reject) as why:
            decode_caption(data, "x.txt", 2000)
        assert why.value.code == "caption_encoding" and "x.txt" in why.value.message


def test_an_undecodable_caption_is_reported_and_its_image_kept_uncaptioned(tmp_path):
    (tmp_path / "up").mkdir()
    for i in range(2):
        (tmp_path / "up" / f"p{i}.png").write_bytes(encode(noise_image(seed=10 + i), "PNG"))
    (tmp_path / "up" / "p0.txt").write_bytes(GARBAGE_BEHIND_BOM)
    (tmp_path / "up" / "p1.txt").write_text("ohwx on a bench", encoding="utf-8")
    ds = tmp_path / "ds"
    result = ingest([tmp_path / "up"], ds)
    assert [a.stem for a in result.accepted] == ["p0", "p1"]
    assert result.codes() == {"up/p0.txt": "caption_encoding"}
    assert {i.stem: i.caption for i in list_dataset(ds)} == {"p0": None, "p1": "ohwx on a bench"}
    assert (ds / "originals" / "p0.txt").read_bytes() == GARBAGE_BEHIND_BOM  # the user's bytes are kept
    assert not (ds / "images" / "p0.txt").exists()


def test_a_refused_duplicate_gives_its_caption_to_the_kept_copy(tmp_path):
    photo = encode(noise_image(seed=21), "PNG")
    ds = tmp_path / "ds"
    first = tmp_path / "first"
    first.mkdir()
    (first / "shoe.png").write_bytes(photo)  # uploaded without a caption
    ingest([first], ds)
    second = tmp_path / "second"
    second.mkdir()
    (second / "shoe_again.png").write_bytes(photo)
    (second / "shoe_again.txt").write_text("ohwx sneaker on a table")
    result = ingest([second], ds)
    assert result.codes() == {"second/shoe_again.png": "duplicate"}  # the caption is not refused
    assert {i.stem: i.caption for i in list_dataset(ds)} == {"shoe": "ohwx sneaker on a table"}
    assert any("'shoe' now has this one" in w for w in result.warnings)

    # Within one upload too; a kept copy that has a caption keeps its own.
    third = tmp_path / "third"
    third.mkdir()
    other = encode(noise_image(seed=22), "PNG")
    (third / "a.png").write_bytes(other)
    (third / "b.png").write_bytes(other)
    (third / "b.txt").write_text("ohwx caption of the copy")
    result = ingest([third], ds)
    assert [a.caption for a in result.accepted if a.stem == "a"] == ["ohwx caption of the copy"]
    (third / "a.txt").write_text("ohwx first caption")
    (third / "a.png").write_bytes(encode(noise_image(seed=23), "PNG"))
    (third / "b.png").write_bytes(encode(noise_image(seed=23), "PNG"))
    result = ingest([third], tmp_path / "ds2")
    assert {i.stem: i.caption for i in list_dataset(tmp_path / "ds2")} == {"a": "ohwx first caption"}
    assert result.codes()["third/b.txt"] == "orphan_caption"
    assert "has its own caption" in next(r.message for r in result.rejected if r.name == "third/b.txt")

