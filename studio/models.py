"""Loading base models: the library noise filters and quantisation settings every family uses.

What is specific to a model family (FLUX.1: variants, licences, token limits, the pipeline, the
tiny builder) lives in studio/families; the names below are re-exported so imports that
predate the families keep working.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .families.base import DEMO, ModelError, ModelInfo, inspect_model, resolve_base  # noqa: F401

# Library messages that say nothing to a user and would flood train.log and the Monitor's log tail.
_NOISE = (
    ("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast"),  # every int8 matmul, by design
    ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to import `torchao` Tensor objects"),  # only for
    # loading torchao-serialised checkpoints, which the studio never does
    ("torch.utils._pytree", "register_constant()"),  # a torch deprecation hit by torchao's import
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),  # an optional CPU kernel
    # package, looked for on AVX512-BF16 CPUs; the studio computes 4-bit layers without it
)


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def quiet_library_noise() -> None:
    """Install the _NOISE filters (idempotent); done on import, before diffusers is imported."""
    for name, text in _NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessage) and f.text == text for f in logger.filters):
            logger.addFilter(_DropMessage(text))


quiet_library_noise()


def build_demo_model(out_dir: str | Path, size: str = "tiny", dev: bool = False, seed: int = 0) -> Path:
    """Write a FLUX-shaped FluxPipeline with random weights, fully offline (studio/families/flux1_tiny.py)."""
    from .families.flux1_tiny import build_demo_model as build
    return build(out_dir, size=size, dev=dev, seed=seed)


def quantisation_packages(cfg) -> set[str]:
    """The quantisation packages a TrainConfig's settings use."""
    used = set()
    if cfg.memory.base_precision in ("int8", "nf4") or cfg.optimizer.name == "adamw8bit":
        used.add("bitsandbytes")
    if cfg.memory.base_precision == "fp8":
        used.add("torchao")
    return used


def hide_unused_quantisation_packages(cfg) -> list[str]:
    """Make the quantisation packages this run does not use look absent to the libraries.

    diffusers, transformers and peft import bitsandbytes and torchao whenever they are installed
    (to offer their quantisers), which costs seconds and fills train.log with their start-up
    messages (bitsandbytes: "Failed to load CPU gemm_4bit_forward" on AVX512-BF16 CPUs) in runs
    that quantise nothing. A module set to None in sys.modules is what the import system reports
    as missing, so the libraries take their "not installed" path. Call it in a training process
    before those libraries are imported: they decide once, at import; an imported package stays.
    """
    import sys

    hidden = []
    for name in ("bitsandbytes", "torchao"):
        if name not in quantisation_packages(cfg) and name not in sys.modules:
            sys.modules[name] = None
            hidden.append(name)
    return hidden


def require_file(path: str, setting: str) -> None:
    """ModelError unless `path` (when given) is a file."""
    if path and not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "does not exist"
        raise ModelError(f"{setting}: {path} {what}.")


def require_package(module: str, setting: str) -> None:
    """Raise PACKAGE_MISSING, naming the setting that needs `module`, when it cannot be imported."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as exc:
        from .diagnostics import StudioError

        raise StudioError("PACKAGE_MISSING", f"{setting} needs the {module} package, which is not installed "
                          f"in this environment ({exc}).") from None


def quantization_config(base_precision: str):
    """diffusers quantisation settings for a frozen base: int8 / nf4 (bitsandbytes), fp8 (torchao).

    Raises PACKAGE_MISSING when the backend is not installed (both are in requirements.txt).
    """
    import torch

    if base_precision in ("int8", "nf4"):
        require_package("bitsandbytes", f"memory.base_precision {base_precision}")
        from diffusers import BitsAndBytesConfig
        if base_precision == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    if base_precision == "fp8":
        require_package("torchao", "memory.base_precision fp8")
        from torchao.quantization import Float8WeightOnlyConfig
        from diffusers import TorchAoConfig
        return TorchAoConfig(Float8WeightOnlyConfig())
    return None


def load_frozen_pipeline(info: ModelInfo, transformer_class, pipeline_class, parts: tuple[str, ...],
                         transformer_file: str = "", dtype=None, revision: str = "", base_precision: str = "auto"):
    """A family's pipeline (what `Family.load` returns): its transformer optionally from a single
    file and optionally quantised (QLoRA style: the frozen base in 8/4 bits, the LoRA in fp32), the
    named `parts` frozen, progress bars off; any loading failure becomes a ModelError naming the folder."""
    import torch

    dtype = dtype or torch.float32
    quiet_loading()
    kwargs = {"dtype": dtype, **({"revision": revision} if revision else {})}
    quant = quantization_config(base_precision)
    quantised = {"quantization_config": quant} if quant else {}
    try:
        if transformer_file:
            require_file(transformer_file, "model.transformer_file")
            kwargs["transformer"] = transformer_class.from_single_file(
                transformer_file, config=info.path, subfolder="transformer", torch_dtype=dtype, **quantised)
        elif quant is not None:
            kwargs["transformer"] = transformer_class.from_pretrained(
                info.path, subfolder="transformer", torch_dtype=dtype, **quantised,
                **({"revision": revision} if revision else {}))
        pipe = pipeline_class.from_pretrained(info.path, **kwargs)
    except ModelError:
        raise
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelError(f"Cannot load the base model from {info.path}: {exc}. Check that every "
                         "component folder is complete (see the README's troubleshooting).") from None
    if base_precision == "nf4":
        keep_4bit_layers_on_training_kernels(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    for part in parts:
        getattr(pipe, part).requires_grad_(False)
    return pipe


def load_pipeline(info: ModelInfo, transformer_file: str = "", dtype=None, revision: str = "",
                  base_precision: str = "auto"):
    """The pipeline of a model, loaded by its family (studio/families)."""
    return info.model_family.load(info, transformer_file, dtype, revision, base_precision)


def keep_4bit_layers_on_training_kernels(model) -> None:
    """Stop bitsandbytes from repacking NF4 weights for its AVX512-BF16 CPU inference kernel.

    On a CPU with AVX512-BF16, `Linear4bit.forward` in eval mode without grad (our sampling pass)
    converts the layer's weights in place to a packed layout. That conversion fails on layers
    narrower than the quantisation block (the demo model's), and where it succeeds the layer stays
    packed: the training forward that follows then runs the inference kernel, which has no
    autograd formula (PyTorch warns of silently wrong gradients). Keeping every layer on the dequantising kernels makes samples use the same kernels
    as the training steps on every CPU. The flag is read only for CPU tensors, so a GPU run is
    unchanged.
    """
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False


def quiet_loading() -> None:
    """Per-shard loading bars would flood train.log and the UI's log tail."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
