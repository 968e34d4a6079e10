"""Reading settings: a YAML file (each key given once), a plain mapping into the typed schema
(unknown keys and wrong types named with the nearest valid one), `--set` overrides, merging.

PyYAML keeps the last of two equal keys without a word, so a second `lora:` block would
silently replace the first (and a second `dataset:` block drop `dataset.path`). Here a key
given twice is an error naming it and both lines. No torch import: the UI loads this at start-up.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .problems import ConfigError, Problem

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


# --------------------------------------------------------------------------- YAML text


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(Problem(str(path), "file_not_found")) from None
    except IsADirectoryError:
        raise ConfigError(Problem(str(path), "is_folder")) from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(Problem(str(path), "unreadable", {"error": exc.__class__.__name__})) from None


def duplicate_keys(text: str, source: str = "config") -> list[Problem]:
    """One problem per key that a mapping in `text` gives more than once (dotted key, both lines)."""
    problems: list[Problem] = []
    seen: set[int] = set()  # an alias repeats a node (or nests it in itself): look at each once

    def walk(node, prefix: str) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first_line: dict = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key != "<<":
                    line = key_node.start_mark.line + 1
                    if key in first_line:
                        problems.append(Problem(source, "duplicate_key", {"dotted": prefix + key,
                                                                          "first": first_line[key], "second": line}))
                    else:
                        first_line[key] = line
                walk(value_node, f"{prefix}{key}." if key is not None else prefix)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk(item, prefix)

    walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    return problems


def parse_yaml(text: str, source: str = "config") -> dict:
    try:
        data = yaml.safe_load(text)
        duplicates = duplicate_keys(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(Problem(source, "bad_yaml", {"where": where,
                                                       "detail": str(getattr(exc, "problem", exc))})) from None
    if duplicates:
        raise ConfigError(duplicates)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(Problem(source, "not_a_mapping_file", {"type": type(data).__name__}))
    return data


# --------------------------------------------------------------------------- mapping -> schema


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def nearest(key: str, valid: list[str]) -> str | None:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return match[0] if match else None


def _unknown(key: str, name: str, valid: list[str]) -> Problem:
    near = nearest(name, valid)
    if near:
        return Problem(key, "unknown_setting", {"suggestion": near})
    return Problem(key, "unknown_setting_list", {"valid": ", ".join(valid)})


def build(cls: type, data: Any, prefix: str):
    """`data` (a mapping) as the dataclass `cls`; ConfigError lists every problem found."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(data, dict):
        raise ConfigError(Problem(where, "not_a_mapping", {"type": type(data).__name__, "value": data}))
    types_of, names = hints(cls), [f.name for f in dataclasses.fields(cls)]
    problems, values = [], {}
    for key, value in data.items():
        if key not in names:
            problems.append(_unknown(f"{prefix}{key}", str(key), names))
            continue
        try:
            values[key] = _convert(value, types_of[key], f"{prefix}{key}")
        except ConfigError as exc:
            problems.extend(exc.items)
    if problems:
        raise ConfigError(problems)
    return cls(**values)


def type_name(tp: Any) -> str:
    """A type as the docs and messages word it: 'a whole number', "one of 'a', 'b'" …"""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _scalar(value: Any, tp: Any) -> Any:
    """`value` as the plain type `tp`, or raise ValueError."""
    if tp is Any:
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float:
        # PyYAML reads "1e-4" (no dot) as text; accept plain numbers written that way.
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    if tp is str and isinstance(value, str):
        return value
    raise ValueError(value)


def _convert(value: Any, tp: Any, key: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    wrong = ConfigError(Problem(key, "wrong_type", {"type": type_name(tp), "value": value}))
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key) if len(inner) == 1 else value
    if origin is Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            near = nearest(str(value), list(map(str, args)))
            raise ConfigError(Problem(key, "not_allowed_near" if near else "not_allowed",
                                      {"value": value, "choices": choices, "suggestion": near}))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise wrong
        return [_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise wrong
        return dict(value)
    try:
        return _scalar(value, tp)
    except ValueError:
        raise wrong from None


# --------------------------------------------------------------------------- overrides


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """'lora.rank=32' → {'lora': {'rank': 32}}; the value is read as YAML (so 1e-4, true, [1,2])."""
    where = f"--set {text!r}"
    if "=" not in text:
        raise ConfigError(Problem(where, "bad_override"))
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(Problem(where, "empty_override_key"))
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    out: dict = value
    for part in reversed(parts):
        out = {part: out}
    return out
