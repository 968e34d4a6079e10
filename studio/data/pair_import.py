"""Importing edit pairs: an upload (folder or zip) with `control/` and `target/` subfolders.

Pairs are matched by file name under the same parent folder: `set/control/a.jpg` goes with
`set/target/a.png` (or with `set/a.png` beside the folders). Instructions are sidecar `.txt`
files in `target/` or beside the folders (`set/target/a.txt` or `set/a.txt`). Targets are
imported exactly as ordinary images (checked, deduplicated, captioned); each control is checked
the same way and written as `images/control/<target's stem>.png` (studio/data/pairs.py layout),
with its original bytes in `originals/control/`. Controls are never deduplicated: one "before"
image may serve several edits. A control whose target is missing or refused is reported by
name; a target without a control is imported and named in a warning; mismatched pairs
(stretched aspect, very different sizes, identical) are imported and named in warnings.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

from .decode import decode_image
from .files import inside, sanitise_name, write_atomic
from .limits import Reject, Rejected
from .pairs import CONTROL_DIR, check_pair

TARGET_DIR = "target"


@dataclass(frozen=True)
class Role:
    kind: str          # "control" or "target"
    pair_key: str      # parent folder + name without suffix, shared by a control and its target; also
                       # the key of a sidecar caption beside the control/ and target/ folders


def pair_roles(entries) -> dict[str, Role] | None:
    """entry.key → its role in a pair upload, or None when the upload has no control/ folder
    (an ordinary upload, imported exactly as before)."""
    def split(key: str):
        parts = key.split("/")
        for i, part in enumerate(parts[:-1]):
            if part.lower() in (CONTROL_DIR, TARGET_DIR):
                return part.lower(), "/".join(parts[:i]), "/".join(parts[i + 1:])
        return None, "/".join(parts[:-1]), parts[-1]

    if not any(split(e.key)[0] == CONTROL_DIR for e in entries):
        return None
    roles = {}
    for e in entries:
        folder, parent, rest = split(e.key)
        pair_key = f"{parent}/{rest}" if parent else rest
        roles[e.key] = Role(CONTROL_DIR if folder == CONTROL_DIR else "target", pair_key)
    return roles


def write_control(entry, stem: str, dataset_dir, limits, background) -> tuple[str, int, int]:
    """Check and write one control image for the target `stem`; returns (relative png path, w, h)."""
    data = entry.read()
    if not data:
        raise Reject("empty_file", f"{entry.name} is empty (0 bytes): the upload or copy was interrupted. "
                      "Upload the file again.")
    rgb, fmt = decode_image(data, entry.name, limits, background)
    ext = sanitise_name(os.path.splitext(entry.basename)[1].lower(), fallback="") or f".{fmt.lower()}"
    ext = ext if ext.startswith(".") else f".{ext}"
    original = inside(dataset_dir, f"originals/{CONTROL_DIR}/{stem}{ext}")
    original.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(original, data)
    png = f"images/{CONTROL_DIR}/{stem}.png"
    target = inside(dataset_dir, png)
    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    rgb.save(buf, "PNG")
    write_atomic(target, buf.getvalue())
    return png, rgb.width, rgb.height


def attach_controls(entries, roles: dict[str, Role], targets: dict[str, object], refused: dict[str, str],
                    dataset_dir, limits, background, result) -> None:
    """Write the control of every imported target; report unpaired and mismatched items by name.
    `targets`: pair key → the target's Accepted; `refused`: pair key → why its target was refused."""
    controls = {}
    for e in entries:
        role = roles.get(e.key)
        if role is None or role.kind != CONTROL_DIR or e.basename.lower().endswith(".txt"):
            continue
        if role.pair_key in controls:
            result.rejected.append(Rejected(e.name, "duplicate", f"{e.name}: a second control for the same "
                                            f"target as {controls[role.pair_key].name}; the first one was used."))
            continue
        controls[role.pair_key] = e
    for key, e in controls.items():
        accepted = targets.get(key)
        if accepted is None:
            why = (f"its target was not imported ({refused[key]})" if key in refused else
                   f"there is no target image named {os.path.basename(key)}.* in {TARGET_DIR}/ or beside "
                   f"{CONTROL_DIR}/")
            result.rejected.append(Rejected(e.name, "unpaired_control", f"{e.name} was skipped: {why}. "
                                            "Name each control like its target (control/a.jpg + target/a.png)."))
            continue
        try:
            accepted.control, w, h = write_control(e, accepted.stem, dataset_dir, limits, background)
        except Reject as r:
            result.rejected.append(Rejected(e.name, r.code, r.message, r.values))
            result.warnings.append(f"{accepted.name}: imported without its control ({e.name} was refused); "
                                   "edit training skips it until a control image is added.")
            continue
        result.pairs.append(accepted.stem)
        for problem in check_pair(accepted.stem, inside(dataset_dir, accepted.control),
                                  inside(dataset_dir, accepted.image), e.name, accepted.name):
            result.warnings.append(problem.message)
    for key, accepted in targets.items():
        if key not in controls:
            result.warnings.append(f"{accepted.name}: imported without a control image (no {CONTROL_DIR}/"
                                   f"{os.path.basename(key)}.*); edit training skips it until one is added.")
