"""Model families (see base.py): `get_family("flux1")`, `inspect_model(base)` → ModelInfo."""

from .base import Family, LoraFileError, ModelError, ModelInfo, Variant, detect, families, get_family, inspect_model

__all__ = ["Family", "LoraFileError", "ModelError", "ModelInfo", "Variant", "detect", "families", "get_family",
           "inspect_model"]
