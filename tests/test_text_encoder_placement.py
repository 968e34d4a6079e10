"""Where captions are encoded: on the GPU when the text encoders fit its free memory with room to
run, else on the CPU (once: the embeddings are cached), with a warning that says so. The rule is
one function for the engine and the plan (studio/core/text_encoders.py)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_images, tiny_config
from studio.config import TrainConfig
from studio.core.text_encoders import GIB, encoders_fit, needed_bytes
from studio.diagnostics import CATALOGUE
from studio.families import get_family, inspect_model
from studio.train.caches import caption_device, encode_text, encoders_on_cpu_message, gpu_free_bytes, module_bytes

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_the_encoders_run_on_the_gpu_only_where_they_fit_with_room_to_run():
    weights = 9 * GIB
    need = needed_bytes(weights)
    assert need == pytest.approx(9 * GIB * 1.1 + 1.5 * GIB)
    assert caption_device(weights, CUDA, 24 * GIB) == CUDA
    assert caption_device(weights, CUDA, 8 * GIB) == CPU
    assert caption_device(weights, torch.device("cuda:1"), 8 * GIB) == CPU
    # The margin: room for the weights alone is not enough.
    assert caption_device(weights, CUDA, weights + GIB) == CPU
    assert caption_device(weights, CUDA, int(need) - 1) == CPU and caption_device(weights, CUDA, int(need) + 1) == CUDA
    # On the CPU nothing changes, whatever the free figure; no figure never fits a GPU.
    assert caption_device(weights, CPU, None) == CPU and caption_device(weights, "cpu", 0) == CPU
    assert not encoders_fit(1, None) and caption_device(1, CUDA, None) == CPU


def test_the_warning_names_the_encoders_their_size_and_what_happens():
    one = encoders_on_cpu_message(["Qwen3"], int(15.3 * GIB), int(9.1 * GIB))
    assert one == ("The Qwen3 text encoder (15.3 GB) does not fit in the GPU's 9.1 GB free (with room to run, "
                   "18.3 GB): captions are encoded on the CPU, once (they are cached) — slower, not wrong.")
    two = encoders_on_cpu_message(["T5", "CLIP"], int(9.1 * GIB), int(3.2 * GIB))
    assert two.startswith("The T5 and CLIP text encoders (9.1 GB) do not fit in the GPU's 3.2 GB free")
    assert "TEXT_ENCODERS_ON_CPU" in CATALOGUE and "slower, not wrong" in CATALOGUE["TEXT_ENCODERS_ON_CPU"].advice


def _loaded(family_name: str, tiny_model, tmp_path):
    model = tiny_model if family_name == "flux1" else get_family(family_name).build_tiny(tmp_path / "model")
    info = inspect_model(str(model))
    cfg = TrainConfig.from_dict(tiny_config(model, make_images(tmp_path / "images"), tmp_path / "out"))
    return cfg, info, info.model_family, info.model_family.load(info)


@pytest.mark.parametrize("family_name,names", [("flux1", ["T5", "CLIP"]), ("flux2-klein", ["Qwen3"])])
def test_a_gpu_run_whose_encoders_do_not_fit_encodes_captions_on_the_cpu(family_name, names, tiny_model, tmp_path):
    """Through the real cache code, on a GPU device whose free memory (injected) is too small: the
    encoders stay on the CPU, the user is told, and the embeddings are the CPU run's."""
    cfg, info, family, pipe = _loaded(family_name, tiny_model, tmp_path)
    encoders = family.text_encoder_modules(pipe)
    size = module_bytes(encoders.values())
    assert list(encoders) == names
    assert size >= sum(p.numel() * p.element_size() for m in encoders.values() for p in m.parameters()) > 0
    captions = ["a photo of sks with a yellow circle", ""]
    warnings: list[tuple[str, str]] = []
    asked = []

    def free_memory(device):
        asked.append(device)
        return 2**20  # 1 MiB free

    stats: dict = {}
    fell_back = encode_text(cfg, family, info, pipe, captions, CUDA, tmp_path / "gpu-run",
                            lambda *w: warnings.append(w), stats, free_memory)
    assert asked == [CUDA] and stats["text_misses"] == len(captions)
    [(code, message)] = warnings
    assert code == "TEXT_ENCODERS_ON_CPU" and message == encoders_on_cpu_message(names, size, 2**20)
    assert all(next(m.parameters()).device == CPU for m in encoders.values())
    # A CPU run: no free figure is asked for, nothing is said, and the embeddings are the same.
    on_cpu = encode_text(cfg, family, info, pipe, captions, CPU, tmp_path / "cpu-run", lambda *w: warnings.append(w),
                         {}, lambda device: pytest.fail("a CPU run asks for no free GPU memory"))
    assert len(warnings) == 1
    for caption in captions:
        for key, tensor in on_cpu[caption].items():
            assert tensor.device == CPU and torch.equal(fell_back[caption][key], tensor), key


@pytest.mark.gpu
def test_on_a_gpu_the_free_memory_is_read_and_small_encoders_run_there(tiny_model, tmp_path):
    free, total = torch.cuda.mem_get_info(CUDA)
    assert 0 < gpu_free_bytes(CUDA) <= total
    cfg, info, family, pipe = _loaded("flux1", tiny_model, tmp_path)
    warnings: list = []
    text = encode_text(cfg, family, info, pipe, ["a photo of sks"], CUDA, tmp_path / "run",
                       lambda *w: warnings.append(w), {})
    assert not [w for w in warnings if w[0] == "TEXT_ENCODERS_ON_CPU"]
    assert all(next(m.parameters()).device.type == "cuda" for m in family.text_encoder_modules(pipe).values())
    assert all(t.device == CPU for t in text["a photo of sks"].values())  # the cache keeps CPU tensors
