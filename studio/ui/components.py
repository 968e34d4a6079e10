"""Components by name, so tabs and the page address each other's fields as "train.trigger" or
"train.schedule.max_steps" instead of by position in a list or through an untyped bag (the idea
of LLaMA-Board's component manager). No gradio import: anything can be registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable


@dataclass
class View:
    """An event function with its input and output components, run by another tab or the page
    (the Monitor's poll when its tab is selected, the Results view on select)."""

    fn: Callable
    inputs: list
    outputs: list
    busy: list | None = None  # where its busy indicator shows (gradio's show_progress_on); None: the outputs


class Components:
    """Registered components, in registration order; each name ("<tab>.<field>") is given once."""

    def __init__(self) -> None:
        self._by_name: dict[str, Any] = {}

    def add(self, name: str, component: Any) -> Any:
        if name in self._by_name:
            raise ValueError(f"a component named {name!r} is already registered")
        self._by_name[name] = component
        return component

    def __getitem__(self, name: str) -> Any:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no component named {name!r}; registered: {', '.join(self._by_name)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    def names(self, tab: str) -> list[str]:
        """The fields registered under `tab`, without the tab's prefix, in registration order."""
        prefix = tab + "."
        return [name[len(prefix):] for name in self._by_name if name.startswith(prefix)]

    def of(self, tab: str, fields: Iterable[str]) -> list[Any]:
        """The components of `tab` named `fields`, in that order (event inputs and outputs)."""
        return [self[f"{tab}.{field}"] for field in fields]

    @staticmethod
    def named(fields: Iterable[str], values: Iterable[Any]) -> dict[str, Any]:
        """An event's values (in the order of `fields`) as {field: value}."""
        fields, values = list(fields), list(values)
        if len(fields) != len(values):
            raise ValueError(f"{len(values)} values for {len(fields)} fields")
        return dict(zip(fields, values))
