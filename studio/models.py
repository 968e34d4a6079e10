"""FLUX.1 models: where they come from, what they are, and the offline demo model.

One place decides per model family: `inspect_model` reads only config files (no weights) and
answers dev vs schnell, licence, T5 length and the transformer's layer sizes, so the config
can be validated before anything heavy loads. `load_pipeline` loads the real thing from a
hub id, a local diffusers folder, or a single-file transformer plus a folder.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

DEMO = "demo"
LICENCES = {
    "dev": "FLUX.1 [dev] Non-Commercial License: outputs and LoRAs of this base are for "
           "non-commercial use unless you hold a commercial licence from Black Forest Labs.",
    "schnell": "Apache-2.0: LoRAs trained on FLUX.1 [schnell] may be used commercially.",
}
LICENCE_IDS = {"dev": "other", "schnell": "apache-2.0"}


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


class ModelError(RuntimeError):
    """The base model cannot be found or loaded; the message says where we looked."""


@dataclass
class ModelInfo:
    source: str             # what the user gave
    path: str               # local folder or hub id that from_pretrained gets
    family: str             # "dev" or "schnell"
    guidance_embeds: bool
    t5_max_length: int      # 512 for dev, 256 for schnell
    transformer: dict       # the transformer's config.json
    vae_scale_factor: int
    latent_channels: int

    @property
    def licence(self) -> str:
        return LICENCES[self.family]

    @property
    def inner_dim(self) -> int:
        return self.transformer["num_attention_heads"] * self.transformer["attention_head_dim"]


from studio.core.paths import demo_model_dir  # noqa: E402,F401  (one place for the demo folder)


def resolve_base(base: str, data_dir: str | Path | None = None) -> str:
    """'demo' → the built-in demo model folder (built on first use); anything else unchanged."""
    if base != DEMO:
        return base
    folder = demo_model_dir(data_dir)
    if not (folder / "model_index.json").is_file():
        build_demo_model(folder, size="tiny", dev=False)
    return str(folder)


def _read_json(base: str, name: str, revision: str = "") -> dict:
    local = Path(base) / name
    if local.is_file():
        return json.loads(local.read_text(encoding="utf-8"))
    if Path(base).exists():
        raise ModelError(f"{base}: no {name} here. A base model folder must be in diffusers "
                         "layout (model_index.json, transformer/, vae/, text_encoder/, …).")
    if base.startswith(("/", ".", "~")) or "\\" in base or base.count("/") != 1:
        raise ModelError(f"{base}: this folder does not exist. Give a local model folder in diffusers "
                         "layout, a Hugging Face model id such as black-forest-labs/FLUX.1-dev, or 'demo'.")
    from huggingface_hub import hf_hub_download
    try:
        return json.loads(Path(hf_hub_download(base, name, revision=revision or None)).read_text())
    except Exception as exc:  # offline, gated, missing: all end in the same advice
        raise ModelError(
            f"Cannot get '{base}' ({name}): {exc.__class__.__name__}. Looked in the Hugging Face "
            f"cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and on the Hub. "
            "Download it first (`huggingface-cli download <id>` with a token that has accepted "
            "the licence), or point model.base at a local folder, or use the demo model.") from None


def inspect_model(base: str, revision: str = "", data_dir: str | Path | None = None) -> ModelInfo:
    path = resolve_base(base, data_dir)
    transformer = _read_json(path, "transformer/config.json", revision)
    vae = _read_json(path, "vae/config.json", revision)
    guidance = bool(transformer.get("guidance_embeds", False))
    family = "dev" if guidance else "schnell"
    return ModelInfo(source=base, path=path, family=family, guidance_embeds=guidance,
                     t5_max_length=512 if guidance else 256, transformer=transformer,
                     vae_scale_factor=2 ** (len(vae.get("block_out_channels", [1, 1, 1, 1])) - 1),
                     latent_channels=vae.get("latent_channels", 16))


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


def load_pipeline(info: ModelInfo, transformer_file: str = "", dtype=None, revision: str = "",
                  base_precision: str = "auto"):
    """The FluxPipeline for a model, its transformer optionally replaced by a single file and
    optionally quantised (QLoRA style: the frozen base is stored in 8/4 bits, LoRA trains in fp32)."""
    import torch
    from diffusers import FluxPipeline, FluxTransformer2DModel

    dtype = dtype or torch.float32
    _quiet_loading()
    kwargs = {"dtype": dtype}
    if revision:
        kwargs["revision"] = revision
    quant = quantization_config(base_precision)
    try:
        if transformer_file:
            require_file(transformer_file, "model.transformer_file")
            kwargs["transformer"] = FluxTransformer2DModel.from_single_file(
                transformer_file, config=info.path, subfolder="transformer", torch_dtype=dtype,
                **({"quantization_config": quant} if quant else {}))
        elif quant is not None:
            kwargs["transformer"] = FluxTransformer2DModel.from_pretrained(
                info.path, subfolder="transformer", quantization_config=quant, torch_dtype=dtype,
                **({"revision": revision} if revision else {}))
        pipe = FluxPipeline.from_pretrained(info.path, **kwargs)
    except ModelError:
        raise
    except (OSError, ValueError, EnvironmentError) as exc:
        raise ModelError(f"Cannot load the base model from {info.path}: {exc}. Check that every "
                         "component folder is complete (see the README's troubleshooting).") from None
    if base_precision == "nf4":
        keep_4bit_layers_on_training_kernels(pipe.transformer)
    return pipe


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


def _quiet_loading() -> None:
    """Per-shard loading bars would flood train.log and the UI's log tail."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


# --------------------------------------------------------------------------- demo model

SIZES = {
    # FLUX-shaped, random weights. tiny: tests (seconds). small: real latent geometry for benchmarks.
    "tiny": dict(heads=2, head_dim=16, double=2, single=2, text_dim=32, latent=4,
                 vae_channels=(8, 8, 8, 8), rope=[4, 4, 8]),
    "small": dict(heads=4, head_dim=64, double=2, single=4, text_dim=64, latent=16,
                  vae_channels=(32, 32, 64, 64), rope=[16, 24, 24]),
}

_WORDS = ("a photo of the person man woman cat dog house tree car street city beach forest "
          "mountain river sky cloud sun night light red green blue yellow black white small large "
          "old new portrait painting drawing style in on at with and smiling standing sitting "
          "wearing holding table chair window room garden flower shirt hat glasses face hair "
          "eyes close up wide shot studio outdoors indoors soft warm cold dark bright sks ohwx").split()


def _corpus(n: int = 2000):
    import random
    rng = random.Random(0)
    for _ in range(n):
        yield " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))


def build_demo_model(out_dir: str | Path, size: str = "tiny", dev: bool = False, seed: int = 0) -> Path:
    """Write a FLUX-shaped FluxPipeline with random weights, fully offline, in diffusers layout."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5Tokenizer

    _quiet_loading()
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    s = SIZES[size]
    out = Path(out_dir)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=s["latent"] * 4, num_layers=s["double"], num_single_layers=s["single"],
        attention_head_dim=s["head_dim"], num_attention_heads=s["heads"], joint_attention_dim=s["text_dim"],
        pooled_projection_dim=s["text_dim"], guidance_embeds=dev, axes_dims_rope=s["rope"])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=s["latent"], block_out_channels=s["vae_channels"],
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=64, use_quant_conv=False,
        use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    clip = CLIPTextModel(CLIPTextConfig(
        hidden_size=s["text_dim"], intermediate_size=s["text_dim"] * 2, num_hidden_layers=2,
        num_attention_heads=2, vocab_size=1000, max_position_embeddings=77, projection_dim=s["text_dim"],
        bos_token_id=0, eos_token_id=2, pad_token_id=1))
    t5 = T5EncoderModel(T5Config(
        d_model=s["text_dim"], d_ff=s["text_dim"] * 2, d_kv=8, num_layers=2, num_heads=4,
        vocab_size=1000, relative_attention_num_buckets=8, decoder_start_token_id=0))
    clip_tok = CLIPTokenizer().train_new_from_iterator(_corpus(), vocab_size=1000)
    clip_tok.model_max_length = 77
    t5_tok = T5Tokenizer().train_new_from_iterator(_corpus(), vocab_size=1000)
    t5_tok.model_max_length = 512 if dev else 256
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=clip, tokenizer=clip_tok,
                        text_encoder_2=t5, tokenizer_2=t5_tok, transformer=transformer)
    tmp = out.with_name(out.name + ".partial")
    pipe.save_pretrained(tmp)
    (tmp / "README.md").write_text(
        f"# Flux LoRA Studio demo model ({size}, {'dev' if dev else 'schnell'}-shaped)\n\n"
        "Random weights in the FLUX.1 architecture, built offline by `python -m studio tiny-model`. "
        "It makes noise, not pictures: it exists so that every part of the studio can be tried "
        "and tested without downloading FLUX.1.\n", encoding="utf-8")
    if out.exists():
        import shutil
        shutil.rmtree(out)
    os.replace(tmp, out)  # a half-written demo model is never mistaken for a complete one
    return out
