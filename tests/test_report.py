"""Quality-report numbers on constructed data: sizes -> buckets, blur, near-duplicates, captions."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from studio.data.buckets import make_buckets, nearest_bucket
from studio.data.report import dhash, estimate_tokens, format_report, hamming, phash, quality_report, sharpness


def noise(w, h, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)  # blocky noise: photo-like edges
    return Image.fromarray(small).resize((w, h), Image.Resampling.NEAREST)


def make_dataset(tmp_path):
    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    a = noise(768, 512, 1)
    a.save(images / "a.png")
    (images / "a.txt").write_text("a photo of sks dog on grass")
    near = ImageEnhance.Brightness(a.resize((691, 461), Image.Resampling.LANCZOS)).enhance(1.05)
    near.save(images / "a_copy.png")
    (images / "a_copy.txt").write_text("a dog on grass")  # no trigger word
    noise(512, 512, 2).filter(ImageFilter.GaussianBlur(8)).save(images / "b.png")  # blurry, no caption
    noise(304, 400, 3).save(images / "c.png")  # small: upscaled into its bucket
    (images / "c.txt").write_text("sks " + "extraordinarily " * 300)
    return tmp_path / "ds"


def test_report_numbers(tmp_path):
    ds = make_dataset(tmp_path)
    guidance = {"min_images": 5, "recommended_images": 20, "min_resolution": 512}
    report = quality_report(ds, resolution=512, guidance=guidance, trigger_word="sks", t5_max_tokens=512)
    json.dumps(report)  # machine-readable as promised

    assert report["trainable"] is True
    assert report["images"]["count"] == 4
    codes = {w["code"]: w for w in report["warnings"]}
    assert "too_few_images" in codes and "Add 1 or more" in codes["too_few_images"]["advice"]

    # Known sizes -> known buckets at 512 px.
    buckets = make_buckets(512)
    assert nearest_bucket(768, 512, buckets) == (624, 416)
    assert report["buckets"] == {"624x416": 2, "512x512": 1, f"{nearest_bucket(304, 400, buckets)[0]}x"
                                 f"{nearest_bucket(304, 400, buckets)[1]}": 1}
    assert report["resolution_histogram"] == {"256-511": 2, "512-767": 2}
    assert report["below_resolution"] == ["c"]  # a_copy (691x461) still covers its 624x416 bucket
    assert codes["below_min_resolution"]["items"] == ["a_copy", "c"]

    # Perceptual duplicates and blur.
    assert [(p["a"], p["b"]) for p in report["near_duplicates"]] == [("a", "a_copy")]
    assert report["blurry"] == ["b"]
    assert report["sharpness"]["a"] > 10 * report["sharpness"]["b"]

    # Captions.
    cap = report["captions"]
    assert cap["captioned"] == 3 and cap["coverage"] == 0.75 and cap["missing"] == ["b"]
    assert cap["with_trigger"] == 2 and cap["without_trigger"] == ["a_copy"]
    tok = report["tokens"]
    assert tok["estimate"] is True and tok["over_limit"] == ["c"]
    assert "caption_truncated" in codes and "trigger_missing" in codes and "blurry" in codes

    text = format_report(report)
    assert "trainable" in text and "what to do" in text and "(estimated)" in text


def test_report_with_a_tokenizer_and_empty_dataset(tmp_path):
    ds = make_dataset(tmp_path)

    def words(text, truncation=False):  # a stand-in tokenizer: one token per word + EOS
        return {"input_ids": text.split() + ["</s>"]}

    report = quality_report(ds, resolution=512, tokenizer=words, t5_max_tokens=256)
    assert report["tokens"]["estimate"] is False
    assert report["tokens"]["per_image"]["c"] == 302 and report["tokens"]["over_limit"] == ["c"]

    empty = quality_report(tmp_path / "nothing")
    assert empty["trainable"] is False and empty["warnings"][0]["code"] == "no_images"
    assert "NOT trainable" in format_report(empty)


def test_hashes_and_sharpness_behave():
    a, b = noise(256, 256, 5), noise(256, 256, 6)
    assert hamming(phash(a), phash(a.resize((200, 200)))) <= 4
    assert hamming(dhash(a), dhash(a.resize((200, 200)))) <= 8
    assert hamming(phash(a), phash(b)) > 16
    assert sharpness(Image.new("RGB", (300, 300), "gray")) == 0.0
    assert estimate_tokens("a dog") == 3


def run_cli(argv):
    import argparse

    from studio.data.cli import add_dataset_commands

    parser = argparse.ArgumentParser()
    add_dataset_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_import_check_caption(tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        noise(640, 512, 10 + i).save(photos / f"dog_{i}.png")
    (photos / "notes.png").write_text("not an image")
    data = tmp_path / "studio_data"
    assert run_cli(["dataset", "import", str(photos), "--name", "My Dog", "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "3 image(s) imported, 1 item(s) rejected" in out and "notes.png" in out
    ds = data / "datasets" / "My_Dog"

    assert run_cli(["caption", "My_Dog", "--data-dir", str(data), "--captioner", "basic",
                    "--class-word", "dog", "--trigger", "sks"]) == 0
    assert (ds / "images" / "dog_0.txt").read_text() == "sks dog, dog"
    assert "Wrote 3 caption(s)" in capsys.readouterr().out

    assert run_cli(["dataset", "check", str(ds), "--preset", "portrait", "--trigger", "sks", "--json", "--save"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"]["count"] == 3 and report["images"]["min_images"] == 8 and report["resolution"] == 512
    assert json.loads((ds / "report.json").read_text())["quality"]["trainable"] is True

    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    assert run_cli(["dataset", "check", str(empty)]) == 1
    assert "NOT trainable" in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run_cli(["caption", str(ds), "--captioner", "no-such/model"]) == 1
    assert "--captioner basic" in capsys.readouterr().err


def test_upscale_advice_uses_the_real_resolutions(tmp_path):
    """At 512 px there is no lower training resolution to suggest; at 1024 px the largest one at
    which these images need no upscaling is named."""
    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    noise(400, 304, 1).save(images / "small.png")
    noise(800, 800, 2).save(images / "big.png")
    at_512 = {w["code"]: w for w in quality_report(tmp_path / "ds", resolution=512)["warnings"]}
    advice = at_512["below_resolution"]["advice"]
    assert "768" not in advice and "lower resolution" not in advice
    assert "at least 512 px" in advice and "304 px" in advice
    assert at_512["below_resolution"]["values"] == {"resolution": 512, "smallest": 304, "count": 1}
    at_1024 = {w["code"]: w for w in quality_report(tmp_path / "ds", resolution=1024)["warnings"]}
    assert "train at 768 px" not in at_1024["below_resolution"]["advice"]  # 768 > 304 would still upscale
    noise(900, 700, 3).save(images / "small.png")
    at_1024 = {w["code"]: w for w in quality_report(tmp_path / "ds", resolution=1024)["warnings"]}
    assert "train at 512 px" in at_1024["below_resolution"]["advice"]
    assert at_1024["below_resolution"]["values"]["suggest"] == 512


def test_measurements_are_kept_and_only_changed_images_measured_again(tmp_path, monkeypatch):
    """A report's decoding and hashing is cached per image, so picking a dataset again is quick."""
    from studio.data import report as rep

    ds = make_dataset(tmp_path)
    first = quality_report(ds, resolution=512)
    measured = []
    real = rep._measure
    monkeypatch.setattr(rep, "_measure", lambda path: measured.append(path.stem) or real(path))
    assert quality_report(ds, resolution=512)["sharpness"] == first["sharpness"] and measured == []
    noise(512, 512, 9).save(ds / "images" / "b.png")  # replaced: no longer blurry
    (ds / "images" / "c.png").unlink()
    again = quality_report(ds, resolution=512)
    assert measured == ["b"] and again["blurry"] == [] and "c" not in again["sharpness"]
    assert set(json.loads((ds / rep.MEASURES_NAME).read_text())["images"]) == {"a", "a_copy", "b"}
