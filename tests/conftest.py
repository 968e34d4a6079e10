"""Shared fixtures: an offline tiny FLUX model, small datasets made by the tests, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never reach the Hugging Face Hub from a test, whatever the code under test tries.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "browser: drives Debian's Chromium through Playwright")
    config.addinivalue_line("markers", "engine: runs the real training engine")


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A schnell-shaped tiny FLUX pipeline (random weights) in diffusers layout."""
    from studio.models import build_demo_model
    return build_demo_model(tmp_path_factory.mktemp("models") / "tiny", size="tiny", dev=False)


@pytest.fixture(scope="session")
def tiny_dev_model(tmp_path_factory) -> Path:
    """A dev-shaped (guidance-distilled) tiny FLUX pipeline."""
    from studio.models import build_demo_model
    return build_demo_model(tmp_path_factory.mktemp("models") / "tiny-dev", size="tiny", dev=True)


def make_images(folder: Path, count: int = 4, captions: bool = True, trigger: str = "sks") -> Path:
    """Small real images with structure (gradients and shapes), made here, not read from disk."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        w, h = (96, 64) if i % 2 else (64, 80)
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 40 * i)], -1).astype(np.uint8)
        im = Image.fromarray(base)
        draw = ImageDraw.Draw(im)
        cx, cy = rng.integers(16, 48, 2)
        draw.ellipse((cx - 12, cy - 12, cx + 12, cy + 12), fill=(250, 240, 20))
        im.save(folder / f"photo_{i}.png")
        if captions:
            (folder / f"photo_{i}.txt").write_text(f"a photo of {trigger} with a yellow circle, number {i}")
    return folder


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_images(tmp_path / "dataset")


@pytest.fixture
def studio_data(tmp_path, monkeypatch) -> Path:
    """A private data folder (caches, demo model) for one test."""
    data = tmp_path / "studio_data"
    data.mkdir()
    monkeypatch.setenv("STUDIO_DATA", str(data))
    return data


@pytest.fixture
def cpu_quantisation(monkeypatch) -> dict:
    """Let the GPU-only settings (bitsandbytes / torchao bases) run on the CPU kernels, with exactly
    two guards lifted: ours (config.gpu_only_settings) and diffusers' own "a GPU is needed for
    quantization" check. `["trainer"]` is the state the engine built last."""
    from diffusers.quantizers.bitsandbytes import bnb_quantizer

    from studio.train import loop, state

    for cls in (bnb_quantizer.BnB4BitDiffusersQuantizer, bnb_quantizer.BnB8BitDiffusersQuantizer):
        monkeypatch.setattr(cls, "validate_environment", lambda self, *a, **k: None)
        monkeypatch.setattr(cls, "update_device_map", lambda self, device_map: {"": "cpu"})
    monkeypatch.setattr(state, "gpu_only_settings", lambda cfg: [])
    built = {}
    original = loop.build_state

    def spy(*args, **kwargs):
        built["trainer"] = original(*args, **kwargs)
        return built["trainer"]

    monkeypatch.setattr(loop, "build_state", spy)
    return built


def force_avx512_bf16(monkeypatch, present: bool) -> list:
    """bitsandbytes told that this CPU has (or lacks) AVX512-BF16, whatever it has; the returned list
    collects the shape of every weight it repacks for its packed CPU inference kernel."""
    from bitsandbytes.nn import modules

    monkeypatch.setattr(modules, "has_avx512bf16", lambda: present)
    repacked = []
    original = modules._convert_weight_packed_for_cpu
    monkeypatch.setattr(modules, "_convert_weight_packed_for_cpu",
                        lambda *args, **kw: repacked.append(args[1].shape) or original(*args, **kw))
    return repacked


def tiny_config(model_dir: Path, images: Path, out: Path, **sections) -> dict:
    """A config dict that trains in seconds on the tiny model."""
    from studio.config import deep_merge

    cfg = {
        "model": {"base": str(model_dir)},
        "dataset": {"path": str(images), "trigger_word": "sks", "resolution": 64},
        "schedule": {"max_steps": 6, "warmup_steps": 0},
        "sample": {"every": 0, "at_start": False, "steps": 2, "width": 64, "height": 64,
                   "prompts": ["a photo of [trigger]"]},
        "save": {"output_dir": str(out), "run_name": "test-lora", "every": 0},
        "memory": {"tier": "cpu"},
        "lora": {"rank": 4, "alpha": 4},
    }
    return deep_merge(cfg, sections)


class Events:
    """A reporter that keeps the engine's events for assertions."""

    def __init__(self):
        self.items = []

    def emit(self, type, **fields):
        self.items.append({"type": type, **fields})

    def of(self, type):
        return [e for e in self.items if e["type"] == type]


def stop_worker(data_dir: Path) -> None:
    """Stop exactly the worker that holds this folder's lock (its pid is in worker.lock)."""
    import signal
    import time

    from studio.worker import try_lock

    for _ in range(20):
        fd = try_lock(data_dir)
        if fd is not None:
            os.close(fd)
            return
        try:
            pid = int((data_dir / "worker.lock").read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(0.5)
