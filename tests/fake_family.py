"""A second model family that exists only in tests: registered for the duration of a `with`
block, so code that must follow the registry is seen to pick it up (and to drop it again)."""

from __future__ import annotations

from contextlib import contextmanager

from studio.families import base
from studio.families.base import Family, Variant


def _variant(name: str, licence_id: str, text: str, size: float) -> Variant:
    return Variant(name=name, title=f"Fake [{name}]", hub_id=f"fake-labs/fake-{name}", licence_id=licence_id,
                   licence_text=text, token_limit=128, guidance_embeds=False, steps=8, guidance=1.0,
                   kohya_version="fake", description=f"the {name} one, for tests", parameters_b=size)


class FakeFamily(Family):
    name = "fakefam"
    pipeline_class_name = "FakePipeline"
    variants = {"small": _variant("small", "apache-2.0", "Apache-2.0: free to use commercially.", 4.0),
                "large": _variant("large", "fake-nc", "Fake Non-Commercial: no commercial use.", 9.0)}
    tier_min_gib = (("24gb", 20.0), ("16gb", 14.0))
    min_gpu_gib = 7.0
    weight_gib = {"bf16": 7.5, "int8": 3.8}
    config_overrides = {"optimizer": {"lr": 0.0002}, "dataset": {"resolution": 768},
                        "training": {"shift": 2.5}}

    def detect(self, model_index, transformer_cfg):
        return None  # no model on disk is a fake one

    def variant_weight_gib(self, variant=""):
        scale = 9.0 / 4.0 if variant == "large" else 1.0
        return {k: round(v * scale, 2) for k, v in self.weight_gib.items()}

    def variant_tiers(self, variant=""):
        return (("24gb", 30.0), ("16gb", 22.0)) if variant == "large" else self.tier_min_gib

    def variant_min_gpu_gib(self, variant=""):
        return 22.0 if variant == "large" else self.min_gpu_gib


@contextmanager
def registered(family: Family | None = None):
    """Register `family` (a FakeFamily by default) and remove it afterwards."""
    family = family or FakeFamily()
    base.families()  # the built-in families first, so the fake one is listed after them
    base.register(family)
    try:
        yield family
    finally:
        base._REGISTRY.pop(family.name, None)
