"""Reading a config file: UTF-8 text holding one YAML mapping, each key given once.

PyYAML keeps the last of two equal keys without a word, so a second `lora:` block would
silently replace the first (and a second `dataset:` block drop `dataset.path`). Here a key
given twice is an error naming it and both lines. No torch import: the UI loads this at start-up.
"""

from __future__ import annotations

from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config that cannot be used; `problems` lists every message (key: what to change)."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: this is a folder, not a config file; give the path of a YAML file "
                          "(for example my.yaml).") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read it as UTF-8 text ({exc.__class__.__name__})") from None


def duplicate_keys(text: str, source: str = "config") -> list[str]:
    """One message per key that a mapping in `text` gives more than once (dotted key, both lines)."""
    problems: list[str] = []
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
                        problems.append(f"{source}: '{prefix}{key}' is given twice, at line {first_line[key]} and "
                                        f"line {line}; keep one (only one of them would be used).")
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
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"{source}: not valid YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if duplicates:
        raise ConfigError(duplicates)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    return data
