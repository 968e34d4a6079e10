"""Model-family boundary: only studio/families/ names a model family's diffusers classes.

Everything FLUX.1-specific (pipeline, transformer, VAE, edit pipelines, FLUX's own helper
functions) is reached through `studio.families`, so adding a family never means editing the
engine, the worker, the UI or the publisher. The scan reads the source with `ast`: imports
(`from diffusers import FluxPipeline`, `from diffusers.pipelines.flux… import …`) and attribute
uses (`diffusers.FluxPipeline`) count; a class named inside a string (a model card's code
snippet) does not.

FlowMatchEulerDiscreteScheduler is allowed everywhere: it is the generic flow-matching scheduler
that several families (FLUX.1, SD3, Sana…) share, not a fact of one family.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDIO = ROOT / "studio"

FAMILY_CLASSES = {"FluxPipeline", "FluxTransformer2DModel", "FluxKontextPipeline", "FluxImg2ImgPipeline",
                  "FluxFillPipeline", "FluxControlPipeline", "AutoencoderKL", "Flux3Transformer2DModel",
                  "Flux3ModularPipeline", "Flux3DistilledModularPipeline", "Flux3AutoBlocks", "Flux3DistilledAutoBlocks"}
FAMILY_MODULES = ("diffusers.pipelines.flux", "diffusers.models.transformers.transformer_flux",
                  "diffusers.modular_pipelines.flux3")
ALLOWED = (
    STUDIO / "families",
    # The demo model's own code builds a FLUX-shaped model with random weights for the demo and the
    # tests; it is a model of the FLUX.1 family by construction, like the family's tiny builder.
    STUDIO / "demo",
)


def family_imports(source: str) -> list[str]:
    """Every use of a family-specific diffusers class or module in `source`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffusers"):
            if node.module.startswith(FAMILY_MODULES):
                found.append(f"line {node.lineno}: from {node.module} import …")
            found += [f"line {node.lineno}: {a.name}" for a in node.names if a.name in FAMILY_CLASSES]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.startswith(FAMILY_MODULES)]
        elif isinstance(node, ast.Attribute) and node.attr in FAMILY_CLASSES:
            found.append(f"line {node.lineno}: .{node.attr}")
    return sorted(found, key=lambda text: int(text.split(":")[0].split()[1]))


def test_the_scan_sees_imports_and_attribute_uses_but_not_strings():
    source = ("from diffusers import FluxPipeline, FlowMatchEulerDiscreteScheduler\n"
              "import diffusers\nx = diffusers.AutoencoderKL\n"
              "from diffusers.pipelines.flux.pipeline_flux import calculate_shift\n"
              "card = 'from diffusers import FluxTransformer2DModel'\n")
    assert family_imports(source) == ["line 1: FluxPipeline", "line 3: .AutoencoderKL",
                                      "line 4: from diffusers.pipelines.flux.pipeline_flux import …"]


def test_no_module_outside_the_families_imports_a_family_class():
    offenders = {}
    for path in sorted(STUDIO.rglob("*.py")):
        if any(path.is_relative_to(folder) for folder in ALLOWED):
            continue
        found = family_imports(path.read_text(encoding="utf-8"))
        if found:
            offenders[str(path.relative_to(ROOT))] = found
    assert not offenders, ("Ask the model family (studio/families) instead of naming its diffusers classes: "
                           f"{offenders}")
