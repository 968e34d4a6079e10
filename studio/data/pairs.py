"""Edit datasets: before/after pairs, matched by file name.

An edit dataset is an ordinary dataset folder (target images with same-stem `.txt`
instructions, in `images/` for a dataset the studio made, or at the root of a plain folder)
plus a `control/` subfolder beside the targets holding the "before" image of each target under
the same stem (any image suffix):

    <dataset>/images/portrait.png            the target ("after")
    <dataset>/images/portrait.txt            its instruction: "make it a watercolour"
    <dataset>/images/control/portrait.jpg    the control ("before")

`find_pairs(folder)` lists the pairs and every problem by file name; the UI, the quality report
and the engine read pairs only through it. In training the control goes through exactly the
target's geometry (`paired_geometry`): the target picks the bucket, the control is resized to the
target's resized size and gets the same crop (and flip), as diffusers' Kontext training script
does. So a control with another aspect ratio is stretched: that is a problem worth naming.

Reads file names and image headers only; pixels are decoded only to tell identical pairs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..core.paths import IMAGE_SUFFIXES
from .buckets import fit_to_bucket

CONTROL_DIR = "control"
ASPECT_TOLERANCE = 0.02   # relative difference of width/height above which the control is visibly stretched
SIZE_RATIO_LIMIT = 2.0    # control and target sides differing by more than this are "very different sizes"

# problem codes (the quality report's warning codes are "pair_" + these)
UNPAIRED_CONTROL = "unpaired_control"
UNPAIRED_TARGET = "unpaired_target"
ASPECT_MISMATCH = "aspect_mismatch"
SIZE_MISMATCH = "size_mismatch"
IDENTICAL = "identical"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Pair:
    stem: str
    control: Path
    target: Path
    caption: str | None       # the target's instruction; None when it has no .txt


@dataclass(frozen=True)
class PairProblem:
    stem: str
    file: str                 # the file the problem is about, relative to the targets' folder ("control/a.jpg")
    code: str
    message: str              # what is wrong and what to do (English)
    values: dict = field(default_factory=dict, compare=False)  # the message's parts, for other languages


@dataclass
class PairScan:
    root: Path                # the targets' folder; controls are in root/control
    pairs: list[Pair] = field(default_factory=list)
    problems: list[PairProblem] = field(default_factory=list)

    @property
    def control_folder(self) -> Path:
        return self.root / CONTROL_DIR

    @property
    def is_edit_dataset(self) -> bool:
        """Whether the folder holds pairs at all (a control folder with at least one image)."""
        return bool(self.pairs) or any(p.code == UNPAIRED_CONTROL for p in self.problems)

    def pair(self, stem: str) -> Pair | None:
        return next((p for p in self.pairs if p.stem == stem), None)

    def problems_of(self, stem: str) -> list[PairProblem]:
        return [p for p in self.problems if p.stem == stem]


def target_folder(folder: str | Path) -> Path:
    """Where a dataset's target images are: images/ in a dataset the studio made, else the folder."""
    folder = Path(folder)
    return folder / "images" if (folder / "images").is_dir() else folder


def control_folder(folder: str | Path) -> Path:
    return target_folder(folder) / CONTROL_DIR


def has_controls(folder: str | Path) -> bool:
    """Whether the dataset at `folder` is an edit dataset: a control/ folder with at least one image
    (file names only; `find_pairs` says which pairs match)."""
    return bool(_images(control_folder(folder)))


def _images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            found.setdefault(p.stem, p)  # a.png before a.webp: the first by name wins, as listing shows it
    return found


def _caption(target: Path) -> str | None:
    text = target.with_suffix(".txt")
    if not text.is_file():
        return None
    return text.read_text("utf-8-sig", errors="replace").strip() or None


def _size(path: Path) -> tuple[int, int] | None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # unreadable files are named, never raised
        return None


def _same_pixels(a: Path, b: Path) -> bool:
    from PIL import Image

    if hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest():
        return True
    try:
        with Image.open(a) as ia, Image.open(b) as ib:
            return ia.size == ib.size and ia.convert("RGB").tobytes() == ib.convert("RGB").tobytes()
    except Exception:
        return False


def check_pair(stem: str, control: Path, target: Path, control_name: str, target_name: str) -> list[PairProblem]:
    """The problems of one control/target pair: unreadable, stretched, very different sizes, identical."""
    cs, ts = _size(control), _size(target)
    for size, name in ((cs, control_name), (ts, target_name)):
        if size is None:
            return [PairProblem(stem, name, UNREADABLE, f"{name} cannot be read as an image; replace it.",
                                {"stem": stem, "error": name})]
    problems = []
    values = {"stem": stem, "control": f"{cs[0]}x{cs[1]}", "target": f"{ts[0]}x{ts[1]}"}
    ca, ta = cs[0] / cs[1], ts[0] / ts[1]
    if abs(ca - ta) / ta > ASPECT_TOLERANCE:
        problems.append(PairProblem(
            stem, control_name, ASPECT_MISMATCH,
            f"{control_name} is {cs[0]}×{cs[1]} but {target_name} is {ts[0]}×{ts[1]}: training stretches the "
            "control to the target's shape. Crop the control to the target's aspect ratio.", values))
    ratio = max(cs[0] / ts[0], ts[0] / cs[0], cs[1] / ts[1], ts[1] / cs[1])
    if ratio > SIZE_RATIO_LIMIT:
        problems.append(PairProblem(
            stem, control_name, SIZE_MISMATCH,
            f"{control_name} ({cs[0]}×{cs[1]}) and {target_name} ({ts[0]}×{ts[1]}) differ {ratio:.1f}× in size: "
            "the smaller one is blurred by scaling. Use a control and target of about the same size.", values))
    if _same_pixels(control, target):
        problems.append(PairProblem(
            stem, control_name, IDENTICAL,
            f"{control_name} and {target_name} are the same picture: the pair teaches no edit. Replace the "
            "control with the 'before' image or remove the pair.", values))
    return problems


def find_pairs(folder: str | Path) -> PairScan:
    """The pairs of a dataset folder (a studio dataset or a plain folder of targets) and every problem
    by file: unpaired control or target, aspect mismatch that would stretch, very different sizes,
    identical control and target. A folder without control/ gives no pairs and no problems."""
    root = target_folder(folder)
    scan = PairScan(root)
    controls = _images(root / CONTROL_DIR)
    if not controls:
        return scan
    targets = _images(root)
    for stem in sorted(set(controls) | set(targets)):
        control, target = controls.get(stem), targets.get(stem)
        if target is None:
            name = f"{CONTROL_DIR}/{control.name}"
            scan.problems.append(PairProblem(stem, name, UNPAIRED_CONTROL,
                                             f"{name} has no target image {stem}.* beside the control folder; "
                                             f"add the edited image as {stem}.png or remove the control.",
                                             {"stem": stem}))
            continue
        if control is None:
            scan.problems.append(PairProblem(stem, target.name, UNPAIRED_TARGET,
                                             f"{target.name} has no control image: add its 'before' image as "
                                             f"{CONTROL_DIR}/{stem}.png. Edit training skips it until then.",
                                             {"stem": stem}))
            continue
        problems = check_pair(stem, control, target, f"{CONTROL_DIR}/{control.name}", target.name)
        scan.problems += problems
        if not any(p.code == UNREADABLE for p in problems):
            scan.pairs.append(Pair(stem, control, target, _caption(target)))
    return scan


def paired_geometry(target_size: tuple[int, int], bucket: tuple[int, int]):
    """(resize size, crop box) for both images of a pair, from the target's size: the control is
    resized to exactly the size the target is resized to, then both get the same crop."""
    return fit_to_bucket(*target_size, bucket)


def fitted_input(path: str | Path, size: tuple[int, int]):
    """An input ("before") image resized and centre-cropped to `size` (width, height): what samples,
    the report card and try-it previews edit."""
    from PIL import Image

    with Image.open(path) as im:
        image = im.convert("RGB")
    resize, box = fit_to_bucket(*image.size, size)
    return image.resize(resize, Image.Resampling.LANCZOS).crop(box)
