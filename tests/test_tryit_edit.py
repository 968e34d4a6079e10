"""Try-it for edit LoRAs: the picture to edit travels with the try-it job (kept in the run folder),
defaults to the run's first "before" image, is refused by name when it is not a picture, and the
child hands it to an edit family's pipeline (a text-to-image family ignores it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.diagnostics import StudioError
from studio.families import get_family
from studio.jobs import JobStore
from studio.jobs.tryit import input_image_args, lora_mode
from studio.ui import tryit_view
from studio.ui.handlers import UserError


def _img(path: Path, seed: int, size=(48, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def _edit_run(tmp_path: Path) -> tuple[JobStore, int, Path]:
    """A succeeded run trained on a dataset of two pairs (b and a: 'a' sorts first)."""
    images = tmp_path / "pairs"
    for i, stem in enumerate("ba"):
        _img(images / f"{stem}.png", seed=i)
        _img(images / "control" / f"{stem}.jpg", seed=10 + i)
    store = JobStore(tmp_path / "data")
    job_id = store.create_job("edit", {"save": {"run_name": "edit"}, "dataset": {"path": str(images)}})
    run_dir = Path(store.claim_next("w").run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "edit.safetensors").write_bytes(b"x")
    store.finish(job_id, "succeeded", exit_code=0, files=["edit.safetensors"])
    return store, job_id, images


def test_the_run_offers_its_first_before_image_and_a_text_to_image_run_none(tmp_path):
    store, job_id, images = _edit_run(tmp_path)
    assert tryit_view.default_input(store.get_job(job_id)) == str(images / "control" / "a.jpg")
    (images / "control" / "a.jpg").unlink()
    (images / "control" / "b.jpg").unlink()
    assert tryit_view.default_input(store.get_job(job_id)) is None  # no pairs: nothing to edit
    assert tryit_view.default_input(None) is None


def test_the_picture_to_edit_is_kept_in_the_run_and_named_in_the_request(tmp_path):
    store, job_id, images = _edit_run(tmp_path)
    upload = _img(tmp_path / "upload" / "Mine.PNG", seed=5)
    folder = tryit_view.start_try_it(tmp_path / "data", job_id, "make it night", 1.0, 3, "en", image=str(upload))
    tryit = store.job(int(folder.name))
    kept = Path(tryit.request["image"])
    assert kept.parent == Path(store.job(job_id).run_dir) / tryit_view.INPUTS and kept.suffix == ".png"
    assert kept.read_bytes() == upload.read_bytes()
    upload.unlink()  # the upload's temporary file may go: the job still has its copy
    assert kept.is_file()
    plain = tryit_view.start_try_it(tmp_path / "data", job_id, "a cat", 1.0, 3, "en")
    assert "image" not in store.job(int(plain.name)).request


def test_a_file_that_is_not_a_picture_is_refused_by_name(tmp_path):
    store, job_id, _ = _edit_run(tmp_path)
    fake = tmp_path / "notes.png"
    fake.write_text("not a picture")
    before = len(store.list_jobs())
    with pytest.raises(UserError, match="notes.png is not a picture"):
        tryit_view.start_try_it(tmp_path / "data", job_id, "x", 1.0, 0, "en", image=str(fake))
    with pytest.raises(UserError, match="notes.png 不是"):
        tryit_view.start_try_it(tmp_path / "data", job_id, "x", 1.0, 0, "zh-CN", image=str(fake))
    assert len(store.list_jobs()) == before  # nothing queued


def test_the_child_gives_an_edit_family_the_picture_and_keeps_it_as_before(tmp_path):
    picture = _img(tmp_path / "in.webp", seed=7, size=(40, 24))
    out = tmp_path / "out"
    out.mkdir()
    args = input_image_args(get_family("flux1-kontext"), "edit", str(picture), (64, 32), out)
    assert args["image"].size == (40, 24) and args["max_area"] == 64 * 32
    with Image.open(out / "before.png") as before:
        assert np.array_equal(np.asarray(before), np.asarray(Image.open(picture).convert("RGB")))
    assert input_image_args(get_family("flux1"), "text-to-image", str(picture), (64, 32), tmp_path) == {}
    with pytest.raises(StudioError) as caught:
        input_image_args(get_family("flux1-kontext"), "edit", "", (64, 32), out)
    assert caught.value.code == "NO_INPUT_IMAGE"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG nonsense")
    with pytest.raises(StudioError, match="broken.png cannot be read"):
        input_image_args(get_family("flux1-kontext"), "edit", str(broken), (64, 32), out)


def test_a_flux2_lora_edits_when_its_run_trained_edits(tmp_path):
    """FLUX.2 takes reference images: whether try-it edits follows the mode the LoRA's run recorded
    (its `training_mode` metadata); a file without that record follows its family's kind."""
    import torch
    from safetensors.torch import save_file

    picture = _img(tmp_path / "in.png", seed=3, size=(40, 24))
    klein = get_family("flux2-klein")
    files = {}
    for name, meta in {"edit": {"model_family": "flux2-klein", "training_mode": "edit"},
                       "plain": {"model_family": "flux2-klein", "training_mode": "text-to-image"},
                       "old-klein": {"model_family": "flux2-klein"},
                       "old-kontext": {"model_family": "flux1-kontext"}}.items():
        files[name] = tmp_path / f"{name}.safetensors"
        save_file({"x": torch.zeros(1)}, str(files[name]), metadata=meta)
    modes = {name: lora_mode(str(path), klein) for name, path in files.items()}
    assert modes == {"edit": "edit", "plain": "text-to-image", "old-klein": "text-to-image", "old-kontext": "edit"}
    out = tmp_path / "out"
    out.mkdir()
    args = input_image_args(klein, modes["edit"], str(picture), (64, 32), out)
    assert set(args) == {"image"} and args["image"].size == (64, 32)  # the reference at the sample size
    assert (out / "before.png").is_file()
    assert input_image_args(klein, modes["plain"], str(picture), (64, 32), tmp_path) == {}
