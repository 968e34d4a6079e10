"""What a LoRA file, a model card or a published config may say about where it came from.

LoRA files and their cards travel: to the Hub, to Civitai, to a friend. They name the base
model and the dataset, never the local paths they were read from (a path like
/home/alice/photos/... gives away a user name and a folder layout). And they name the model
that was really trained: the built-in demo model is the studio's own (a tiny model in the
FLUX.1 architecture trained on synthetic shapes, under the studio's Apache-2.0 licence), not FLUX.1 [schnell].

Standard library and PyYAML only (the model families' facts import no torch): the publish code
and the UI import this without torch.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

DEMO = "demo"                       # what model.base says for the built-in demo model
DEMO_NAME = "flux-lora-studio-demo"  # how files and cards name it
DEMO_README_HEADING = "# Flux LoRA Studio demo model"  # first line of the demo models' README (build-demo, tiny-model)
HUB_ID = re.compile(r"[\w\-.]{1,96}/[\w\-.]{1,96}")

# A variant's licence is its family's fact (every family's `Variant` has one); the demo model is
# the studio's own.
DEMO_LICENCE_ID = "apache-2.0"
DEMO_LICENCE_TEXT = ("Apache-2.0: trained on Flux LoRA Studio's own demo model (a tiny model in the FLUX.1 "
                     "architecture that draws coloured shapes, not FLUX.1), which is part of the studio and under the "
                     "studio's licence.")


@dataclass(frozen=True)
class BaseIdentity:
    name: str        # a Hub id, a folder name, or DEMO_NAME
    family: str      # the variant: "dev", "schnell", "demo", or another family's variant ("base-4b")
    family_name: str = ""  # the model family (studio/families) the variant belongs to; none for the demo

    def _variant(self):
        from .families.base import get_family
        return get_family(self.family_name).variants[self.family]

    @property
    def licence(self) -> str:
        return DEMO_LICENCE_TEXT if self.family == DEMO else self._variant().licence_text

    @property
    def licence_id(self) -> str:
        return DEMO_LICENCE_ID if self.family == DEMO else self._variant().licence_id


def is_demo_model(source: str, path: str | Path | None = None) -> bool:
    """The built-in demo model, named `demo` or given as the folder build_demo_model wrote."""
    if source == DEMO:
        return True
    readme = Path(path or source) / "README.md"
    try:
        with open(readme, encoding="utf-8") as handle:
            return handle.readline().startswith(DEMO_README_HEADING)
    except (OSError, UnicodeDecodeError):
        return False


def path_name(value: str) -> str:
    """The last part of a local path (POSIX or Windows spelling); '' for an empty value."""
    value = str(value or "").strip().rstrip("/\\")
    if not value:
        return ""
    name = PureWindowsPath(value).name if "\\" in value or re.match(r"[A-Za-z]:", value) else PurePosixPath(value).name
    return "" if name in ("", ".", "..", "~") else name


def is_hub_id(value: str) -> bool:
    """`owner/name` that is not a local path (relative or absolute) on this machine."""
    return bool(HUB_ID.fullmatch(value or "")) and not value.startswith((".", "~")) and not Path(value).exists()


def model_name(base: str) -> str:
    """A Hub id as is; a local folder or file by its name only."""
    base = str(base or "").strip()
    if base == DEMO:
        return DEMO_NAME
    return base if is_hub_id(base) else path_name(base)


def base_identity(source: str, path: str | Path | None, family: str, family_name: str) -> BaseIdentity:
    """Name and variant of the base model: `family` (the variant, "dev"/"schnell"/…) from its config,
    `family_name` the model family, unless it is the demo."""
    if is_demo_model(source, path):
        return BaseIdentity(DEMO_NAME, "demo")
    return BaseIdentity(model_name(source), family, family_name)


def dataset_name(path: str) -> str:
    """A dataset's name: its folder's name (a studio dataset keeps its pictures in <name>/images)."""
    name = path_name(path)
    if name == "images":
        parent = path_name(str(path).rstrip("/\\")[: -len("images")])
        return parent or name
    return name


def shareable_config(config: dict) -> dict:
    """A copy of a resolved config (TrainConfig.to_dict()) with names in place of local paths.

    model.base becomes its Hub id or folder name, model.transformer_file its file name,
    dataset.path the dataset's name, and save.output_dir (where this computer wrote the run)
    is left out.
    """
    out = copy.deepcopy(config)
    model, dataset, save = (out.get(k) if isinstance(out.get(k), dict) else {} for k in ("model", "dataset", "save"))
    if model.get("base"):
        model["base"] = DEMO if model["base"] == DEMO else model_name(model["base"])
    if model.get("transformer_file"):
        model["transformer_file"] = path_name(model["transformer_file"])
    if dataset.get("path"):
        dataset["path"] = dataset_name(dataset["path"])
    save.pop("output_dir", None)
    return out
