"""Running as a Hugging Face Space: the README front matter and the settings a Space needs.

- `SPACE_FRONT_MATTER` / `render_front_matter()`: the YAML block README.md must start with
  (tests/test_packaging.py checks README.md against it, and `sdk_version` against the Gradio pin).
- `space_settings()`: where the data folder goes, whether a login is needed, whether training
  may start. A Space's local disk is ephemeral but real; storage buckets and other network
  mounts (FUSE, NFS, CIFS, 9p) have no file locking and lose writes on a crash, which SQLite in
  WAL mode cannot survive, so the data folder must never be on one (`check_local_disk`).
- A public Space is reachable by anyone: without `STUDIO_AUTH` ("user:password[,user:password]",
  studio/login.py)
  the app must not start training (`SpaceSettings.training_allowed` is False). A Space cannot
  see its own visibility, so the owner of a private Space opts out with STUDIO_PRIVATE_SPACE=1.

Standard library and PyYAML only: the UI imports this at start-up.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from studio.core.paths import DEFAULT_DATA_DIR
from studio.login import parse_auth  # the one STUDIO_AUTH grammar (app.py reads it the same way)

REPO = Path(__file__).resolve().parent.parent
SPACE_DATA_DIR = Path("/tmp/studio_data")
# File systems that are not a local disk: no reliable locking, caching with staleness, lost writes.
NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gcsfuse", "s3fs")
LOCAL_FUSE = ("fuseblk",)   # ntfs-3g/exfat on a local block device


def gradio_pin(requirements: Path = REPO / "requirements.txt") -> str:
    """The exact Gradio version requirements.txt pins (`gradio==X.Y.Z`)."""
    for line in requirements.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\s*gradio\s*==\s*([\w.\-+]+)\s*(?:#.*)?", line)
        if match:
            return match[1]
    raise RuntimeError(f"{requirements} does not pin gradio (expected a line gradio==X.Y.Z)")


def _installed_gradio_pin() -> str:
    try:
        return gradio_pin()
    except (OSError, RuntimeError):   # installed without the repository: the installed version
        from importlib.metadata import version
        return version("gradio")


SPACE_FRONT_MATTER: dict = {
    "title": "Flux LoRA Studio",
    "emoji": "🎨",
    "colorFrom": "indigo",
    "colorTo": "pink",
    "sdk": "gradio",
    "sdk_version": _installed_gradio_pin(),
    "app_file": "app.py",
    "python_version": "3.11",
    # 48 GB: FLUX.1 in bf16 (24gb tier) fits with room for samples; a10g-large (24 GB) needs the 16gb tier.
    "suggested_hardware": "l40sx1",
    "pinned": False,
    "license": "apache-2.0",
    "short_description": "Train FLUX.1 LoRAs from a folder of photos",
}


def render_front_matter(front: dict | None = None) -> str:
    """The front matter block, `---` lines included, as README.md must begin."""
    body = yaml.safe_dump(front or SPACE_FRONT_MATTER, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{body}---\n"


def read_front_matter(text: str) -> dict | None:
    """The YAML front matter at the start of a Markdown text, or None if it has none."""
    if not text.startswith("---\n"):
        return None
    end = text.find("\n---\n", 4)
    if end < 0:
        return None
    return yaml.safe_load(text[4:end + 1]) or {}


# ---------------------------------------------------------------------------------------------
# Local disk check


def _mounts(mounts_file: str) -> list[tuple[str, str]]:
    """(mount point, fs type) from a /proc/mounts-style file; octal escapes (\\040) decoded."""
    try:
        lines = Path(mounts_file).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) >= 3:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), parts[1])
            out.append((point, parts[2]))
    return out


def check_local_disk(path, mounts_file: str = "/proc/mounts") -> str | None:
    """None if `path` lies on a local file system, else a warning that says why it must not be used.

    The mount that holds `path` is the longest mount point that is a prefix of its resolved path.
    """
    resolved = Path(path).expanduser().resolve()
    best, fstype = "", ""
    for point, kind in _mounts(mounts_file):
        inside = resolved == Path(point) or Path(point) in resolved.parents
        if inside and len(point) >= len(best):
            best, fstype = point, kind
    network = (fstype.startswith("fuse") and fstype not in LOCAL_FUSE) or fstype.split(".")[0] in NETWORK_FS
    if not network:
        return None
    return (f"The data folder {resolved} is on a {fstype} mount ({best}), not a local disk. Network and "
            "bucket mounts have no file locking and can lose writes, which corrupts the job store "
            "(SQLite). Set STUDIO_DATA to a folder on local disk (on a Space: /tmp/studio_data).")


# ---------------------------------------------------------------------------------------------
# Space settings


@dataclass
class SpaceSettings:
    on_space: bool                   # SPACE_ID is set
    space_id: str
    data_dir: Path                   # where STUDIO_DATA should point
    login_required: bool             # on a Space: anyone with the URL could otherwise train
    auth: list[tuple[str, str]] = field(default_factory=list, repr=False)   # for launch(auth=...)
    hf_token_present: bool = False   # HF_TOKEN secret available (the value is never kept here)
    problems: list[str] = field(default_factory=list)   # why training is refused, for the UI

    @property
    def training_allowed(self) -> bool:
        return not self.problems


def space_settings(environ: dict | None = None, mounts_file: str = "/proc/mounts") -> SpaceSettings:
    """Settings for this process from the environment (SPACE_ID, STUDIO_DATA, STUDIO_AUTH, HF_TOKEN)."""
    env = os.environ if environ is None else environ
    space_id = env.get("SPACE_ID", "")
    on_space = bool(space_id)
    default = SPACE_DATA_DIR if on_space else Path(DEFAULT_DATA_DIR)
    data_dir = Path(env.get("STUDIO_DATA") or default)
    problems = []
    warning = check_local_disk(data_dir, mounts_file)
    if warning:
        problems.append(warning)
    try:
        auth = parse_auth(env.get("STUDIO_AUTH"))
    except ValueError as exc:
        auth = []
        problems.append(str(exc))
    # Spaces do not tell a process whether they are public; a private Space's owner may opt out.
    login_required = on_space and env.get("STUDIO_PRIVATE_SPACE", "") not in ("1", "true", "yes")
    if login_required and not auth:
        problems.append("This Space has no login: set the secret STUDIO_AUTH to 'user:password' (Settings → "
                        "Variables and secrets) so that strangers cannot start training on your hardware.")
    return SpaceSettings(on_space=on_space, space_id=space_id, data_dir=data_dir, login_required=login_required,
                         auth=auth, hf_token_present=bool(env.get("HF_TOKEN")), problems=problems)
