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
import re
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


# Modules outside studio/families/ that may import one family's own module, each with its reason.
FAMILY_MODULE_EXCEPTIONS = {
    # The demo model is a FLUX.1-shaped model by construction; build_demo_model is its old entry point.
    "studio/models.py": {"studio.families.flux1_tiny"},
    # The old import path of FLUX.1's writer and reader (save_lora, validate_lora_file, delta_weights),
    # resolved on use by a module __getattr__: importing lora_files loads no family.
    "studio/lora_files.py": {"studio.families.flux1_files"},
}
ONE_FAMILY = re.compile(r"studio\.families\.flux\d")


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of the modules `source` (a module of `package`) imports, relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}  # `from studio.families import flux1`
    return found


def family_module_imports(source: str, package: str) -> set[str]:
    return {m for m in imported_modules(source, package) if ONE_FAMILY.match(m)}


def test_the_module_scan_resolves_relative_imports():
    source = ("from ..families.flux1 import VARIANTS\nfrom ..families import flux2_layouts\n"
              "import studio.families.flux3\nfrom ..families.base import get_family\nfrom .families import flux1\n")
    assert family_module_imports(source, "studio.train") == {
        "studio.families.flux1", "studio.families.flux1.VARIANTS", "studio.families.flux2_layouts",
        "studio.families.flux3"}


def test_no_module_outside_the_families_imports_one_familys_module():
    offenders = {}
    for path in sorted(STUDIO.rglob("*.py")):
        if path.is_relative_to(STUDIO / "families"):
            continue
        name = str(path.relative_to(ROOT))
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        found = family_module_imports(path.read_text(encoding="utf-8"), package)
        allowed = FAMILY_MODULE_EXCEPTIONS.get(name, set())
        found = {m for m in found if not any(m == a or m.startswith(a + ".") for a in allowed)}
        if found:
            offenders[name] = sorted(found)
    assert not offenders, ("Ask the family through the registry (studio.families.base.get_family / "
                           f"studio.families.choice) instead of importing its module: {offenders}")


def test_importing_lora_files_loads_no_model_family():
    import subprocess
    import sys

    code = ("import sys, studio.lora_files; "
            "print(sorted(m for m in sys.modules if m.startswith('studio.families.flux')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
