"""What a run checks before it loads a model: paths, the dataset (as import and `dataset check`
would), and whether a resume keeps the checkpoint's shapes; plus train.log and library noise."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import Events, make_images, tiny_config
from studio import engine
from studio.config import resolve
from studio.events import EXIT_CONFIG, EXIT_FAILED, EXIT_OK

ROOT = Path(__file__).resolve().parent.parent


def _quick(model_dir, images, tmp, **sections):
    sections.setdefault("sample", {"prompts": [], "every": 0, "at_start": False})
    sections.setdefault("schedule", {"max_steps": 1, "warmup_steps": 0})
    return resolve(tiny_config(model_dir, images, tmp / "out", **sections), tier="cpu")


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail loudly if the engine gets as far as loading the model."""
    def load_pipeline(*args, **kwargs):
        raise AssertionError("the model was loaded before the paths were checked")

    from studio.families.flux1 import Flux1
    monkeypatch.setattr(Flux1, "load", load_pipeline)


# --------------------------------------------------------------------------- paths before loading


@pytest.mark.engine
def test_a_missing_dataset_or_transformer_file_is_reported_before_the_model_loads(tiny_model, tmp_path, studio_data,
                                                                                   no_model_loading):
    cases = [
        (_quick(tiny_model, tmp_path / "no-such-folder", tmp_path), "NO_IMAGES",
         f"dataset.path: {tmp_path / 'no-such-folder'} does not exist"),
        (_quick(tiny_model, make_images(tmp_path / "ds", count=1) / "photo_0.png", tmp_path), "NO_IMAGES",
         "photo_0.png is a file, not a folder"),
        (_quick(tiny_model, tmp_path / "ds", tmp_path, model={"transformer_file": str(tmp_path / "flux.safetensors")}),
         "MODEL_MISSING", f"model.transformer_file: {tmp_path / 'flux.safetensors'} does not exist."),
    ]
    for cfg, code, message in cases:
        events = Events()
        assert engine.train(cfg, tmp_path / "run", events) == EXIT_FAILED
        error = events.of("error")[0]
        assert error["code"] == code and message in error["message"], error
    assert not (tmp_path / "run").exists()  # and nothing was written


@pytest.mark.engine
def test_a_transformer_file_of_another_model_is_named_before_the_model_loads(tiny_model, tmp_path, studio_data,
                                                                          no_model_loading):
    """The family reads a single file's tensor names: an SDXL UNet is not a FLUX.1 transformer."""
    import torch
    from safetensors.torch import save_file

    unet = tmp_path / "sdxl-unet.safetensors"
    save_file({"down_blocks.0.resnets.0.conv1.weight": torch.zeros(2, 2)}, str(unet))
    cfg = _quick(tiny_model, make_images(tmp_path / "ds", count=1), tmp_path, model={"transformer_file": str(unet)})
    events = Events()
    assert engine.train(cfg, tmp_path / "run", events) == EXIT_FAILED
    error = events.of("error")[0]
    assert error["code"] == "MODEL_MISSING" and "holds no FLUX.1 [schnell] transformer" in error["message"], error
    assert "down_blocks.0.resnets.0.conv1.weight" in error["message"]
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- the dataset checks


def _image(path: Path, size: tuple[int, int], caption: str | None = "a photo of sks") -> None:
    Image.new("RGB", size, (200, 120, 40)).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)


def test_a_plain_folder_gets_the_import_checks_and_the_quality_advice(tmp_path):
    """A 102 px photo, a file that is no image, an empty file: refused as import refuses them, each
    named with its reason. A photo without a caption trains, and the dataset check's advice says so."""
    from studio.data.dataset import load_samples

    folder = tmp_path / "photos"
    folder.mkdir()
    _image(folder / "big.png", (640, 512))
    _image(folder / "nocaption.jpg", (512, 600), caption=None)
    _image(folder / "tiny.png", (102, 80))
    (folder / "notes.png").write_text("not an image at all")
    (folder / "empty.webp").write_bytes(b"")
    warnings = []
    cfg = resolve({"dataset": {"path": str(folder), "resolution": 512, "trigger_word": "sks"}}, tier="cpu")
    samples = load_samples(cfg, warn=lambda code, message: warnings.append((code, message)))

    assert sorted(s.image.name for s in samples) == ["big.png", "nocaption.jpg"]
    refused = {m.split(":")[0]: m for code, m in warnings if code == "NO_IMAGES"}
    assert sorted(refused) == ["empty.webp", "notes.png", "tiny.png"]
    assert "tiny.png: not trained on. tiny.png is only 102x80" in refused["tiny.png"]
    assert "not an image" in refused["notes.png"] and "empty" in refused["empty.webp"]
    advice = [m for code, m in warnings if code == "DATASET_CHECK"]
    assert any(m.startswith("1 of 2 image(s) have no caption: nocaption.") for m in advice), advice


def test_training_below_512_px_halves_the_smallest_accepted_side(tmp_path):
    """Import's 256 px floor is half of 512; training at 96 px accepts a 48 px side, not less."""
    from studio.data.dataset import load_samples

    folder = tmp_path / "small"
    folder.mkdir()
    _image(folder / "a.png", (64, 80))
    _image(folder / "b.png", (48, 60))
    _image(folder / "c.png", (47, 60))
    warnings = []
    cfg = resolve({"dataset": {"path": str(folder), "resolution": 96}}, tier="cpu")
    assert [s.image.name for s in load_samples(cfg, lambda c, m: warnings.append((c, m)))] == ["a.png", "b.png"]
    assert [(c, m.split(".")[0]) for c, m in warnings if c == "NO_IMAGES"] == [("NO_IMAGES", "c")]


@pytest.mark.engine
def test_the_dataset_advice_reaches_the_events(tiny_model, tmp_path, studio_data):
    images = make_images(tmp_path / "ds", count=2, captions=False)
    events = Events()
    assert engine.train(_quick(tiny_model, images, tmp_path), tmp_path / "run", events) == EXIT_OK
    advice = [w["message"] for w in events.of("warning") if w["code"] == "DATASET_CHECK"]
    assert any("2 of 2 image(s) have no caption: photo_0, photo_1." in m for m in advice), advice


# --------------------------------------------------------------------------- resume


def test_what_may_change_on_resume():
    from studio.resume import may_change

    for key in ("schedule.max_steps", "schedule.warmup_steps", "sample.prompts", "sample.every", "save.every",
                "save.keep_last", "log.every", "memory.tier", "memory.gradient_checkpointing",
                "dataset.cache_latents"):
        assert may_change(key), key
    for key in ("lora.rank", "lora.targets", "model.base", "dataset.resolution", "dataset.path", "training.seed",
                "training.batch_size", "training.gradient_accumulation", "optimizer.name", "optimizer.lr",
                "schedule.scheduler", "memory.num_gpus", "memory.device", "dataset.repeats"):
        assert not may_change(key), key


@pytest.mark.engine
def test_the_engine_refuses_a_changed_resume_before_writing(tiny_model, tmp_path, studio_data):
    images = make_images(tmp_path / "ds", count=1)
    cfg = _quick(tiny_model, images, tmp_path, schedule={"max_steps": 2, "warmup_steps": 0}, save={"every": 1})
    assert engine.train(cfg, tmp_path / "run", Events()) == EXIT_OK
    config_before = (tmp_path / "run" / "config.yaml").read_bytes()
    cfg.lora.targets = "attention"
    events = Events()
    assert engine.train(cfg, tmp_path / "run", events, resume=True) == EXIT_CONFIG
    error = events.of("error")[0]
    assert error["code"] == "CONFIG_INVALID" and "lora.targets 'diffusers_default' in the checkpoint, " \
                                                  "'attention' now" in error["message"]
    assert (tmp_path / "run" / "config.yaml").read_bytes() == config_before


# --------------------------------------------------------------------------- train.log and library noise


def test_run_log_copies_output_and_keeps_a_redrawn_progress_line_every_few_seconds(tmp_path, monkeypatch):
    from studio import runlog

    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    clock = iter([100.0, 101.0, 106.0])
    monkeypatch.setattr(runlog.time, "monotonic", lambda: next(clock))
    with runlog.run_log(tmp_path):
        for step in (1, 2, 3):
            sys.stderr.write(f"\r[progress] {step}/3")
        sys.stderr.write("\nERROR [INTERNAL] boom\n")
    assert sys.stderr is terminal
    assert terminal.getvalue() == "\r[progress] 1/3\r[progress] 2/3\r[progress] 3/3\nERROR [INTERNAL] boom\n"
    log = (tmp_path / "train.log").read_text().splitlines()
    assert log[1:] == ["[progress] 1/3", "[progress] 3/3", "", "ERROR [INTERNAL] boom"]


def test_run_log_adds_nothing_when_the_output_already_goes_to_train_log(tmp_path):
    """Under the worker the child's stderr is train.log itself: each line must appear once."""
    code = ("import sys\nfrom pathlib import Path\nfrom studio.runlog import run_log\n"
            "with run_log(Path(sys.argv[1])):\n    print('one line', file=sys.stderr)\n")
    with open(tmp_path / "train.log", "ab") as log:
        subprocess.run([sys.executable, "-c", code, str(tmp_path)], stderr=log, check=True, cwd=ROOT, timeout=60)
    assert (tmp_path / "train.log").read_text() == "one line\n"


def test_bitsandbytes_start_up_line_stays_out_of_the_log(caplog):
    """On AVX512-BF16 CPUs bitsandbytes looks for an optional kernel package at import and logs a
    warning a user reads as an error; the studio never uses that kernel."""
    import studio.models  # noqa: F401  (installs the filters)

    logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
        "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
        "`pip install kernels` and the kernels >= 0.11.1", "No module named 'kernels'")
    logging.getLogger("bitsandbytes.backends.cpu.ops").warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]


def test_only_the_quantisation_packages_a_run_uses_are_visible_to_it():
    from studio.models import quantisation_packages

    assert quantisation_packages(resolve({}, tier="cpu")) == set()
    assert quantisation_packages(resolve({}, tier="12gb")) == {"bitsandbytes"}  # NF4 base, 8-bit AdamW
    assert quantisation_packages(resolve({"memory": {"base_precision": "fp8"}, "optimizer": {"name": "adamw"}},
                                         tier="16gb")) == {"torchao"}
    code = ("import sys\nfrom studio.config import resolve\nfrom studio.models import hide_unused_quantisation_packages\n"
            "print(hide_unused_quantisation_packages(resolve({}, tier='cpu')))\n"
            "import diffusers.quantizers, peft.tuners.lora\n"
            "from diffusers.utils import is_bitsandbytes_available, is_torchao_available\n"
            "print(is_bitsandbytes_available(), is_torchao_available(), sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('bitsandbytes', 'torchao') and sys.modules[m]))\n")
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["['bitsandbytes', 'torchao']", "False False []"], time.monotonic() - started
