"""Model families: the one interface through which the studio uses a base model.

Everything that differs between model families (how the pipeline loads, how a caption becomes
embeddings, how latents are packed, which layers get a LoRA, how a sample is drawn, how the LoRA
files are laid out, the licence) lives behind `Family`. The engine, the worker, the UI and the
publisher ask a family; none of them names a family's internals. A family module registers its
one instance with `register`; `inspect_model` detects the family of a model from its config files
(no weights), so a config can be checked before anything heavy loads.

No torch import here or in a family module's top level: the UI imports this at start-up.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .blocks import BLOCKS, block_counts, block_of, block_target_modules  # noqa: F401 - where families found them
from .plan_facts import FamilySizes


class ModelError(RuntimeError):
    """The base model cannot be found or loaded; the message says where we looked."""


@dataclass(frozen=True)
class Variant:
    """One published model of a family (FLUX.1 [dev], FLUX.1 [schnell], …)."""

    name: str                 # "dev": what LoRA metadata and events call it
    title: str                # "FLUX.1 [dev]"
    hub_id: str               # where the weights are published
    licence_id: str           # the Hub's / modelspec's licence id
    licence_text: str         # one sentence a user reads before sharing
    token_limit: int          # the text encoder's max_sequence_length
    guidance_embeds: bool     # guidance is an input of the model (distilled guidance)
    steps: int                # inference defaults: what a card or a try-it uses
    guidance: float
    kohya_version: str        # ss_base_model_version in kohya metadata
    description: str = ""
    parameters_b: float = 0.0  # the transformer's parameters, in billions (0: not stated)
    train_on: bool = True      # the plan may propose it (a step-distilled model with a base to train on: no)


@dataclass
class ModelInfo:
    """What the config files of a base model say (no weights read)."""

    source: str             # what the user gave
    path: str               # local folder or hub id that from_pretrained gets
    family: str             # the variant: "dev" or "schnell" (the name LoRA metadata and events use)
    guidance_embeds: bool
    t5_max_length: int      # the variant's token limit
    transformer: dict       # the transformer's config.json
    vae_scale_factor: int
    latent_channels: int
    family_name: str = "flux1"

    @property
    def variant(self) -> str:
        return self.family

    @property
    def model_family(self) -> "Family":
        return get_family(self.family_name)

    @property
    def token_limit(self) -> int:
        return self.t5_max_length

    @property
    def licence(self) -> str:
        return self.model_family.variants[self.family].licence_text

    @property
    def inner_dim(self) -> int:
        return self.model_family.inner_dim(self.transformer)


class Family(FamilySizes):
    """The interface one model family implements (studio/families/flux1.py is the reference).

    The engine (studio/train) calls exactly these; methods that need torch import it inside, so a
    family module's top level stays light. `state` arguments are never passed: a family gets the
    pipeline and tensors it works on, and keeps no run state of its own.
    """

    name: str = ""                       # "flux1"
    title: str = ""                      # "FLUX.1": how messages name the family
    pipeline_class_name: str = ""        # "FluxPipeline"
    variants: dict[str, Variant] = {}
    target_sets: dict[str, list[str]] = {}   # lora.targets → module-name suffixes
    text_encoder_targets: list[str] = []     # LoRA targets of the trainable text encoder
    tier_min_gib: tuple = ()             # ((tier, smallest GPU GiB), …), largest first (see tier_for)
    min_gpu_gib: float = 0.0             # below this no tier trains the family (0: the 8gb tier always can)
    weight_gib: dict[str, float] = {}    # the transformer's weights per precision
    tokens_name: str = "text-encoder"    # whose tokens a caption's token limit counts (messages): "T5"
    kind: str = "text-to-image"          # or "edit": trains only on before/after pairs (control images)
    reference_images: bool = False       # conditions on reference images: trains edits from pairs (run_mode)
    comfyui_layout: bool = True          # writes <name>-comfyui.safetensors too (save.comfyui)
    # Config sections applied on top of any preset when this family is chosen (its learning rate,
    # resolution, timestep shift…); the memory tier and the user's own settings still win.
    config_overrides: dict = {}
    # What the training plan needs beyond the above (studio/families/plan_facts.py).
    latent_channels: int = 16            # the VAE's latent channels
    lora_width: dict[str, int] = {}      # target set → sum of in + out features of its layers, full size
    text_encoder_gib: float = 0.0        # the text encoders' weights in bf16

    # -- recognising a model (config files only)
    def detect(self, model_index: dict, transformer_cfg: dict) -> str | None:
        """The variant name when these configs are one of this family's models, else None."""
        raise NotImplementedError

    def detect_keys(self, keys) -> bool:
        """Whether a single-file transformer's tensor names are this family's."""
        raise NotImplementedError

    def info(self, source: str, path: str, variant: str, transformer_cfg: dict, vae_cfg: dict) -> ModelInfo:
        raise NotImplementedError

    def inner_dim(self, transformer_cfg: dict) -> int:
        raise NotImplementedError

    def token_limit(self, variant: str) -> int:
        return self.variants[variant].token_limit

    def guess_variant(self, name: str) -> str:
        """The variant a model name suggests, for files whose metadata does not say."""
        raise NotImplementedError

    def load(self, info: ModelInfo, transformer_file: str = "", dtype=None, revision: str = "",
             base_precision: str = "auto"):
        """The pipeline, frozen (no gradients), progress bars off."""
        raise NotImplementedError

    # -- text: encode once, cache, free the encoders
    def count_tokens(self, pipe, caption: str) -> int:
        raise NotImplementedError

    def text_encoder_modules(self, pipe) -> dict:
        """{name: module} of the text encoders still loaded ("T5", "CLIP"…: what messages call them)."""
        raise NotImplementedError

    def text_encoders_to(self, pipe, device) -> None:
        for module in self.text_encoder_modules(pipe).values():
            module.to(device)

    def encode_text(self, pipe, caption: str, device, token_limit: int) -> dict:
        """Caption → a dict of CPU tensors (what the text cache stores)."""
        raise NotImplementedError

    def free_text_encoders(self, pipe, keep_trainable: bool) -> None:
        raise NotImplementedError

    def trainable_text_encoder(self, pipe):
        raise NotImplementedError

    def text_inputs(self, pipe, cached: list[dict], captions: list[str], text_encoder, device) -> dict:
        raise NotImplementedError

    # -- latents and the step's inputs
    def encode_image(self, pipe, pixels):
        """Pixels → latent distribution parameters (what the latent cache stores)."""
        raise NotImplementedError

    def latents(self, pipe, params, generator, device):
        raise NotImplementedError

    def reference_latents(self, pipe, params, device):
        """Cached latent parameters of reference (control) images → the latents an edit family
        conditions on (deterministic: no draw)."""
        raise NotImplementedError

    def image_seq_len(self, latents) -> int:
        raise NotImplementedError

    def resolution_shift(self, image_seq_len: int) -> float:
        raise NotImplementedError

    def training_guidance(self, info: ModelInfo, configured: float | None) -> float | None:
        raise NotImplementedError

    def model_inputs(self, noisy, target, t, text: dict, guidance, dtype, reference=None) -> tuple[dict, object]:
        """(the transformer's keyword arguments, the target in the prediction's layout).
        `reference`: reference-image latents (from `reference_latents`) for an edit family, else None."""
        raise NotImplementedError

    def prediction(self, output, target):
        """The transformer's output (what `model(**kwargs)` returned) in the target's layout: an
        edit family drops the reference tokens, whose prediction is not trained."""
        raise NotImplementedError

    def sample(self, pipe, cached: dict, prompt: str, text_encoder, seed: int, steps: int, guidance: float,
               size: tuple[int, int], device, control=None, true_cfg: float = 1.0, negative: dict | None = None):
        """One PIL image. `control`: the input image (PIL) of an edit family, else None. `true_cfg`
        (`sample.true_cfg`) and `negative` (the empty prompt's cached embeddings): guidance against the
        empty prompt where the family's pipeline offers it on top of `guidance` (FLUX.1)."""
        raise NotImplementedError

    def true_cfg_args(self, true_cfg: float) -> dict:
        """The pipeline arguments for `sample.true_cfg` when drawing from a prompt (try-it, report
        card); none for a family whose `guidance` already is guidance against a negative prompt."""
        return {}

    def usage_code(self, base: str, repo: str, weight_name: str, prompt: str, variant: Variant) -> list[str] | None:
        """The model card's diffusers lines (after `import torch`, before `image.save`) that load the base,
        the LoRA and draw `image`; None: the card's `<pipeline_class_name>.from_pretrained` lines."""
        return None

    # -- LoRA: targets, blocks, files
    def target_modules(self, lora, transformer) -> list[str]:
        raise NotImplementedError

    def block_of(self, param_name: str) -> str:
        raise NotImplementedError

    def block_counts(self, transformer) -> dict[str, int]:
        raise NotImplementedError

    def write_lora(self, out_dir, name, transformer_layers, rank, alpha, metadata, **kwargs) -> dict:
        raise NotImplementedError

    def validate(self, path):
        raise NotImplementedError

    def delta_weights(self, path, **kwargs) -> dict:
        raise NotImplementedError

    # -- checking LoRA files against the architecture (studio/verify.py), no weights needed
    def full_config(self, variant: str) -> dict:
        """The transformer config of the variant's published model (full size)."""
        raise NotImplementedError

    def meta_transformer(self, config: dict):
        """The transformer of `config` on the meta device: layer names and shapes only."""
        raise NotImplementedError

    def comfy_shapes(self, config: dict) -> dict[str, tuple[int, int]]:
        """Module name in the ComfyUI file → (out, in) of the layer ComfyUI applies it to."""
        raise NotImplementedError

    def lora_factors(self, path) -> dict:
        """{diffusers module: (up, down, scale)} with ΔW = scale·up@down, from either file layout
        (fused modules cut into their parts' rows), so ΔW·x can be compared without building ΔW."""
        raise NotImplementedError

    # -- the offline model for tests and the demo
    def build_tiny(self, out_dir, size: str = "tiny", variant: str = "", seed: int = 0) -> Path:
        raise NotImplementedError


_REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    _REGISTRY[family.name] = family
    return family


def _load_builtin() -> None:
    from . import flux1  # noqa: F401  (registers itself)
    from . import flux2_klein  # noqa: F401
    from . import flux1_kontext  # noqa: F401

    from . import flux2_dev  # noqa: F401
    from . import flux3  # noqa: F401


EDIT, TEXT_TO_IMAGE = "edit", "text-to-image"


def run_mode(family: Family, dataset_path) -> str:
    """What a run of `family` on the dataset at `dataset_path` trains: EDIT (a LoRA that edits an
    input image, learned from before/after pairs) or TEXT_TO_IMAGE. The one place this is decided;
    the run records it (the LoRA files' `training_mode`), and what follows a run (samples, try-it,
    report card, model card) reads the record. An edit-only family (kind "edit") always trains
    edits, so a dataset without pairs is refused by name; a family that takes reference images
    trains edits when the dataset has pairs (a control/ folder of "before" images beside the
    targets, studio/data/pairs.py), else text-to-image; any other family trains text-to-image."""
    if family.kind == EDIT:
        return EDIT
    if family.reference_images and dataset_path:
        from studio.data.pairs import has_controls

        if has_controls(dataset_path):
            return EDIT
    return TEXT_TO_IMAGE


def families() -> list[Family]:
    _load_builtin()
    return list(_REGISTRY.values())


def get_family(name: str) -> Family:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(f"no model family {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def detect(model_index: dict, transformer_cfg: dict) -> tuple[Family, str] | None:
    """(family, variant) of the model these configs describe, or None when no family knows it."""
    for family in families():
        variant = family.detect(model_index, transformer_cfg)
        if variant is not None:
            return family, variant
    return None


# --------------------------------------------------------------------------- finding a model

DEMO = "demo"


def default_data_dir() -> Path:
    """The data folder when none is given: $STUDIO_DATA, else ./studio_data (studio/core/paths.py)."""
    from studio.core.paths import data_dir

    return data_dir()


def resolve_base(base: str, data_dir: str | Path | None = None) -> str:
    """'demo' → the demo model committed in studio/demo/model (trained on a synthetic world of
    coloured shapes, see studio/demo); anything else unchanged."""
    if base != DEMO:
        return base
    from studio.demo import MODEL_DIR

    if not (MODEL_DIR / "model_index.json").is_file():
        raise ModelError(f"The demo model is missing from {MODEL_DIR}. Restore it from the repository "
                         f"(git checkout -- studio/demo/model) or rebuild it: python -m studio build-demo studio/demo/model")
    return str(MODEL_DIR)


def read_model_json(base: str, name: str, revision: str = "") -> dict:
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
    """The family, variant and layer sizes of a base model, from its config files only."""
    path = resolve_base(base, data_dir)
    transformer = read_model_json(path, "transformer/config.json", revision)
    vae = read_model_json(path, "vae/config.json", revision)
    # model_index.json is read only where it is already on disk: a hub id costs no extra download.
    index_file = Path(path) / "model_index.json"
    index = json.loads(index_file.read_text(encoding="utf-8")) if index_file.is_file() else {}
    found = detect(index, transformer)
    if found is None:
        known = ", ".join(f.pipeline_class_name for f in families())
        raise ModelError(f"{base}: its transformer ({transformer.get('_class_name', 'no _class_name')}) belongs "
                         f"to no model family the studio trains ({known}).")
    family, variant = found
    return family.info(base, path, variant, transformer, vae)


class LoraFileError(ValueError):
    """A LoRA file that cannot be used, with the reason in the message."""
