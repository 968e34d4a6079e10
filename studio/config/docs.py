"""The schema described: one `Setting` per leaf (key, type, default, help, and which input the
UI gives it), `help_rows` for the tables, and docs/config.md (`config_reference`)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import yaml

from .load import hints, type_name
from .schema import TrainConfig

KINDS = ("int", "float", "bool", "choice", "text", "yaml")


@dataclass(frozen=True)
class Setting:
    """One leaf setting. `kind`: the input that edits it: int, float, bool, choice (one of
    `choices`), text, or yaml (lists, mappings and settings that may be null, typed as one line
    of YAML). `bounds`: (lowest, highest) accepted, None where open."""

    key: str
    type_name: str
    default: Any
    help: str
    kind: str
    choices: tuple[str, ...] = ()
    bounds: tuple[float | None, float | None] = (None, None)


def _kind(tp: Any) -> tuple[str, tuple[str, ...]]:
    if typing.get_origin(tp) is Literal:
        return "choice", tuple(str(a) for a in typing.get_args(tp))
    return {int: "int", float: "float", bool: "bool", str: "text"}.get(tp, "yaml"), ()


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def _walk(cls: type, prefix: str):
    """(key, field, type) for every field, sections before their settings, in schema order."""
    types_of = hints(cls)
    for f in dataclasses.fields(cls):
        yield prefix + f.name, f, types_of[f.name]
        if dataclasses.is_dataclass(types_of[f.name]):
            yield from _walk(types_of[f.name], prefix + f.name + ".")


@lru_cache(maxsize=None)
def settings() -> tuple[Setting, ...]:
    """Every leaf setting of TrainConfig, in schema order."""
    out = []
    for key, f, tp in _walk(TrainConfig, ""):
        if dataclasses.is_dataclass(tp):
            continue
        kind, choices = _kind(tp)
        out.append(Setting(key, type_name(tp), _default(f), f.metadata.get("help", ""),
                           f.metadata.get("kind", kind), choices, f.metadata.get("bounds", (None, None))))
    return tuple(out)


def setting(key: str) -> Setting:
    for s in settings():
        if s.key == key:
            return s
    raise KeyError(key)


def help_rows(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(key, type, default, help) for every setting, sections as (key, "section", "", help)."""
    return [(key, "section", "", f.metadata.get("help", "")) if dataclasses.is_dataclass(tp)
            else (key, type_name(tp), _default(f), f.metadata.get("help", "")) for key, f, tp in _walk(cls, prefix)]


def field_help(key: str) -> str:
    for row_key, _, _, text in help_rows():
        if row_key == key:
            return text
    raise KeyError(key)


def config_reference() -> str:
    lines = ["# Config reference", "",
             "Generated from `studio/config/schema.py` by `python -m studio config-reference`; "
             "do not edit by hand.", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default, text in help_rows():
        if tp == "section":
            lines += ["", f"## `{key}` — {text}", "", "| key | type | default | meaning |",
                      "|---|---|---|---|"]
        else:
            shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"| `{key}` | {tp} | `{shown}` | {text.replace('|', '/')} |")
    return "\n".join(lines).strip() + "\n"
