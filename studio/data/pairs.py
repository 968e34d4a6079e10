"""The pairs of an edit dataset: each target image (the "after", with its instruction in the
same-stem .txt) and the `control/` image of the same stem (the "before", any image suffix).

`find_pairs(folder)` is the one way the studio lists pairs (the UI reads them only through it).
`folder` is a dataset folder: the folder holding the targets, or a studio dataset whose targets
are in `images/`. What stops a pair from training well is a problem naming the file: a target
without its control image, a control image without its target, two control images of one stem,
a pair whose aspect ratios or sizes differ, and a pair whose two images are the same picture.
No torch: the UI imports this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from studio.core.paths import IMAGE_SUFFIXES

CONTROL_DIR = "control"
ASPECT_TOLERANCE = 0.01  # relative: 1024x768 and 1023x768 are one shape, 1024x768 and 1024x1024 are not


@dataclass(frozen=True)
class Pair:
    stem: str
    control: Path  # the "before"
    target: Path  # the "after"
    caption: str | None  # the instruction (the target's .txt), None when it has none


@dataclass(frozen=True)
class PairProblem:
    code: str  # no_control | no_target | duplicate_control | aspect_mismatch | size_mismatch | identical | unreadable
    file: str  # the file it names, relative to the targets' folder ("cat.png", "control/cat.jpg")
    message: str
    values: dict = field(default_factory=dict)


@dataclass
class PairScan:
    folder: Path  # the targets' folder
    pairs: list[Pair] = field(default_factory=list)
    problems: list[PairProblem] = field(default_factory=list)

    @property
    def has_control(self) -> bool:
        return (self.folder / CONTROL_DIR).is_dir()


def _images(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                found.setdefault(path.stem, []).append(path)
    return found


def _caption(target: Path) -> str | None:
    txt = target.with_suffix(".txt")
    if not txt.is_file():
        return None
    return txt.read_text("utf-8-sig", errors="replace").strip() or None


def targets_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    return folder / "images" if (folder / "images").is_dir() else folder


def find_pairs(folder: str | Path) -> PairScan:
    root = targets_folder(folder)
    scan = PairScan(root)
    targets, controls = _images(root), _images(root / CONTROL_DIR)
    for stem, paths in targets.items():
        target = paths[0]
        if stem not in controls:
            scan.problems.append(PairProblem("no_control", target.name,
                                             f"{target.name} has no before image: add control/{stem}.png (any "
                                             "image type) or remove it.", {"stem": stem}))
            continue
        if len(controls[stem]) > 1:
            names = ", ".join(f"{CONTROL_DIR}/{p.name}" for p in controls[stem])
            scan.problems.append(PairProblem("duplicate_control", f"{CONTROL_DIR}/{controls[stem][1].name}",
                                             f"{stem} has {len(controls[stem])} before images ({names}); "
                                             f"{CONTROL_DIR}/{controls[stem][0].name} is used: remove the others.",
                                             {"stem": stem, "names": names}))
        pair = Pair(stem, controls[stem][0], target, _caption(target))
        scan.pairs.append(pair)
        problem = _compare(pair)
        if problem:
            scan.problems.append(problem)
    for stem, paths in controls.items():
        if stem not in targets:
            name = f"{CONTROL_DIR}/{paths[0].name}"
            scan.problems.append(PairProblem("no_target", name, f"{name} has no after image: add {stem}.png "
                                             "beside the dataset's images or remove it.", {"stem": stem}))
    return scan


def _compare(pair: Pair) -> PairProblem | None:
    from PIL import Image

    name = pair.target.name
    try:
        with Image.open(pair.control) as before, Image.open(pair.target) as after:
            (cw, ch), (tw, th) = before.size, after.size
            values = {"stem": pair.stem, "control": f"{cw}x{ch}", "target": f"{tw}x{th}"}
            if abs(cw / ch - tw / th) > ASPECT_TOLERANCE * (tw / th):
                return PairProblem("aspect_mismatch", name, f"{name} is {tw}x{th} but its before image is "
                                   f"{cw}x{ch}: the shapes differ, so one would be cropped. Crop both alike.", values)
            if (cw, ch) != (tw, th):
                return PairProblem("size_mismatch", name, f"{name} is {tw}x{th} but its before image is "
                                   f"{cw}x{ch}: both are resized to the training size; same-size pairs keep "
                                   "the most detail.", values)
            if before.convert("RGB").tobytes() == after.convert("RGB").tobytes():
                return PairProblem("identical", name, f"{name} and its before image are the same picture: the "
                                   "pair teaches no edit. Replace one of them.", values)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return PairProblem("unreadable", name, f"{name} or its before image cannot be read: {exc}",
                           {"stem": pair.stem, "error": str(exc)})
    return None
