"""What every tab's handlers share: the user-fixable error and where a dataset lives."""

from __future__ import annotations

import re
from pathlib import Path

from studio.i18n import t

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


class UserError(Exception):
    """A problem the user can fix; the message is already in the user's language."""


def datasets_root(data_dir: Path) -> Path:
    return Path(data_dir) / "datasets"


def dataset_dir(data_dir: Path, name: str | None, lang: str = "en") -> Path:
    if not name or not NAME_RE.match(name):
        raise UserError(t("dataset.none_selected", lang))
    folder = datasets_root(data_dir) / name
    if not folder.is_dir():
        raise UserError(t("dataset.none_selected", lang))
    return folder
