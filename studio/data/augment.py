"""Training-time image augmentation from a config list, on torchvision's v2 transforms.

Config shape (one entry per operation, each with its own probability):

    augmentations:
      - {name: color_jitter, params: {brightness: 0.3, contrast: 0.2}, prob: 0.8}
      - {name: horizontal_flip, prob: 0.5}
      - {name: random_crop, params: {scale: [0.8, 1.0]}, prob: 0.5}
      - {name: elastic, params: {alpha: 30, sigma: 5}, prob: 0.5}

Latent cache: an augmented image has different latents, so caching the un-augmented latents
and training on them would silently switch augmentation off. The engine must either bypass
the latent cache when `uses_augmentation(specs)` is true, or cache a fixed number of variants
per image, each made with `augment_variant(transform, image, seed)` (deterministic per seed)
and keyed with `augmentation_cache_key(specs, variant)`, so a changed list never reuses stale
latents.

torchvision is imported inside functions: the UI imports studio modules without torch.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
from typing import Any, Callable

from PIL import Image

SPEC_KEYS = ("name", "params", "prob")


def _random_crop_class():
    import torch
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as F

    class RandomCropResize(v2.Transform):
        """Crop a random window of `scale` (fraction of each side) and resize back: the bucket
        size is chosen from the image size, so the output must keep it."""

        def __init__(self, scale: tuple[float, float] | list[float] | float = (0.8, 1.0)):
            super().__init__()
            lo, hi = (scale, scale) if isinstance(scale, (int, float)) else tuple(scale)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale!r}")
            self.scale = (float(lo), float(hi))

        def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
            height, width = v2.query_size(flat_inputs)
            s = self.scale[0] + (self.scale[1] - self.scale[0]) * torch.rand(()).item()
            h, w = max(1, round(height * s)), max(1, round(width * s))
            top = int(torch.randint(0, height - h + 1, ()).item())
            left = int(torch.randint(0, width - w + 1, ()).item())
            return {"top": top, "left": left, "height": h, "width": w, "size": [height, width]}

        def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
            return F.resized_crop(inpt, params["top"], params["left"], params["height"], params["width"],
                                  params["size"], antialias=True)

    return RandomCropResize


def _registry() -> dict[str, tuple[Callable, dict]]:
    """name -> (transform class, fixed arguments the user cannot set)."""
    from torchvision.transforms import v2

    return {
        "color_jitter": (v2.ColorJitter, {}),
        "horizontal_flip": (v2.RandomHorizontalFlip, {"p": 1.0}),  # `prob` decides, not p
        "random_crop": (_random_crop_class(), {}),
        "rotation": (v2.RandomRotation, {}),
        "elastic": (v2.ElasticTransform, {}),
        "gaussian_blur": (v2.GaussianBlur, {}),
        "grayscale": (v2.Grayscale, {"num_output_channels": 3}),  # stay RGB for the VAE
    }


NAMES = ("color_jitter", "horizontal_flip", "random_crop", "rotation", "elastic", "gaussian_blur", "grayscale")


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _param_names(cls: Callable, fixed: dict) -> list[str]:
    params = inspect.signature(cls).parameters
    return [n for n, p in params.items() if n not in fixed and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _spec_errors(i: int, spec: Any, registry: dict) -> list[str]:
    where = f"augmentations[{i}]"
    if not isinstance(spec, dict):
        return [f"{where}: expected a mapping like {{name: horizontal_flip, prob: 0.5}}, got {spec!r}"]
    errors = [f"{where}: unknown key '{k}'{_did_you_mean(k, SPEC_KEYS)}; allowed keys: {', '.join(SPEC_KEYS)}"
              for k in spec if k not in SPEC_KEYS]
    name = spec.get("name")
    if name not in registry:
        errors.append(f"{where}: unknown augmentation {name!r}{_did_you_mean(name, registry)}; "
                      f"available: {', '.join(registry)}")
        return errors
    where = f"{where} ({name})"
    prob = spec.get("prob", 1.0)
    if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        errors.append(f"{where}: prob must be a number from 0 to 1, got {prob!r}")
    params = spec.get("params") or {}
    if not isinstance(params, dict):
        return errors + [f"{where}: params must be a mapping of parameter names to values, got {params!r}"]
    cls, fixed = registry[name]
    valid = _param_names(cls, fixed)
    unknown = [k for k in params if k not in valid]
    for k in unknown:
        errors.append(f"{where}: unknown parameter '{k}'{_did_you_mean(k, valid)}; valid parameters: "
                      f"{', '.join(valid) or 'none'}")
    if unknown:
        return errors
    try:  # construct and run once on a tiny image, so bad values fail here, not mid-training
        cls(**params, **fixed)(Image.new("RGB", (32, 32), (128, 64, 32)))
    except (TypeError, ValueError, RuntimeError) as exc:
        errors.append(f"{where}: invalid params {params}: {exc}")
    return errors


def validate_augmentations(specs: list[dict] | None) -> list[str]:
    """Every problem in an augmentation list, as plain messages (empty list = valid)."""
    if specs is None:
        return []
    if not isinstance(specs, list):
        return [f"augmentations must be a list of {{name, params, prob}} entries, got {type(specs).__name__}"]
    registry = _registry()
    return [e for i, spec in enumerate(specs) for e in _spec_errors(i, spec, registry)]


def build_augmentations(specs: list[dict] | None) -> Callable[[Image.Image], Image.Image]:
    """A PIL -> PIL callable applying each operation in order with its own probability.

    Randomness comes from torch's global generator, so `torch.manual_seed` makes it repeatable.
    Raises ValueError listing every problem when the list is invalid.
    """
    from torchvision.transforms import v2

    errors = validate_augmentations(specs)
    if errors:
        raise ValueError("invalid augmentations:\n  " + "\n  ".join(errors))
    registry = _registry()
    steps = []
    for spec in specs or []:
        cls, fixed = registry[spec["name"]]
        steps.append(v2.RandomApply([cls(**(spec.get("params") or {}), **fixed)], p=float(spec.get("prob", 1.0))))
    if not steps:
        return lambda image: image
    return v2.Compose(steps)


def uses_augmentation(specs: list[dict] | None) -> bool:
    """True when some operation can fire: cached plain latents must not be used then."""
    return any(float(s.get("prob", 1.0)) > 0 for s in specs or [])


def augment_variant(transform: Callable[[Image.Image], Image.Image], image: Image.Image, seed: int) -> Image.Image:
    """Variant `seed` of an image, repeatable, without disturbing the training RNG stream."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)


def augmentation_cache_key(specs: list[dict] | None, variant: int) -> str:
    """Part of a latent-cache key: changes whenever the list or the variant index changes."""
    canonical = json.dumps(specs or [], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{canonical}|{variant}".encode()).hexdigest()[:16]
