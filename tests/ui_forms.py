"""Shared by the UI handler tests: a data folder with a dataset of three images, and the Train
tab's form as build_config receives it (fields by name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.ui import handlers as h


def _png(path: Path, seed: int, size=(320, 288)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (18, 20, 3), dtype=np.uint8)).resize(size, Image.NEAREST).save(path)
    return path


@pytest.fixture
def data(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def filled(data, tmp_path):
    """A data folder with dataset 'cat' holding three images."""
    h.create_dataset(data, "cat")
    files = [str(_png(tmp_path / f"cat_{i}.png", i)) for i in range(3)]
    h.upload_files(data, "cat", files)
    return data


# The basic fields by the names these tests use for them.
BASIC_NAMES = {"steps": "schedule.max_steps", "lr": "optimizer.lr", "rank": "lora.rank",
               "resolution": "dataset.resolution", "prompts": "sample.prompts", "sample_every": "sample.every"}


def _train_fields(dataset="cat", lang="en", advanced=None, **over):
    """build_config's arguments: the Train tab's form by field name, as the tab submits it."""
    values, _ = h.preset_values(over.get("preset", "portrait"), "cpu")
    values["schedule.warmup_steps"] = 2  # the preset's 20 > 20 steps
    form = dict(family="flux1", variant="schnell", base="demo", custom_base="", preset="portrait", tier="cpu", run_name="cat-lora", trigger="ohwx",
                **values)
    form.update({"schedule.max_steps": 20, "optimizer.lr": 1e-4, "lora.rank": 4, "dataset.resolution": 64,
                 "sample.prompts": "a photo of [trigger]\n\n", "sample.every": 10})
    form.update(advanced or {})
    form.update({BASIC_NAMES.get(name, name): value for name, value in over.items()})
    assert set(form) == set(h.form_names())  # the tab registers exactly these names
    return dict(dataset=dataset, form=form, lang=lang)
