"""What the tab modules share: the app context, label lookup and the error-catching wrapper."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from studio.i18n import t
from studio.ui.components import Components, View
from studio.ui.handlers import UserError

log = logging.getLogger("studio.ui")


def L(key: str):
    """A catalogue key as gradio's I18n marker, shown in the page's language (studio/ui/locale.py).
    Works for labels, info texts, button and tab names and choice labels; not for table headers,
    chart titles or gallery captions, which handlers build with t(key, lang)."""
    from gradio.i18n import I18nData

    from studio.i18n import NAMESPACE

    return I18nData(NAMESPACE + key)


def preset_choices(kind: str = "subject", family: str | None = None, variant: str = "") -> list[tuple[Any, str]]:
    """(title in the page's language, name) of each preset or memory tier, read now; subject
    presets only those for `family` when one is given."""
    from studio.config import list_presets

    prefix = "preset" if kind == "subject" else "tier"
    return [(L(f"{prefix}.{name}.title"), name) for name in list_presets(kind, family=family, variant=variant)]


def choice_labels(key: str, values: list[str]) -> list[tuple[Any, str]]:
    """(label in the page's language, value) for a setting's choices (`choice.<key>.<value>`)."""
    return [(L(f"choice.{key}.{value}"), value) for value in values]


@dataclass
class Context:
    data_dir: Path
    max_upload_mb: int | None = None
    # Components several tabs read; filled in by build.py.
    lang: Any = None
    dataset: Any = None
    # Every component another tab or the page addresses, by name ("train.trigger").
    components: Components = field(default_factory=Components)
    # Run by the page when their tab is selected, or after a dataset is created.
    monitor_poll: View | None = None
    results_view: View | None = None
    dataset_created: Any = None  # the Create button's event, to chain the dataset views on
    demo_dataset_added: Any = None  # the "Add the demo dataset" button's event, likewise
    # (component, fn(lang) -> update) applied when the page loads: choice lists and texts that
    # must be current (new presets, new datasets) or follow the page's language.
    on_load: list[tuple[Any, Callable[[str], Any]]] = field(default_factory=list)
    # What each tab shows for the chosen dataset: (fn(dataset, lang, *inputs) -> outputs, inputs,
    # outputs). build.py runs them all in one request when a dataset is picked, created or the
    # page loads: one round trip instead of one per tab.
    dataset_views: list[tuple[Callable, list, list]] = field(default_factory=list)


def status_error(exc: BaseException, lang: str) -> str:
    """A readable message for any error (never a traceback; the log gets the details)."""
    if isinstance(exc, UserError):
        return str(exc)
    log.exception("UI handler failed")
    return t("common.error", lang, error=f"{exc.__class__.__name__}: {exc}")


def guarded(n_outputs: int, status_index: int = -1) -> Callable:
    """Wrap an event function whose last argument is the language: on error it returns
    gr.skip() for every output except the status Markdown, which gets the message."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            import gradio as gr

            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every handler error becomes a message
                lang = args[-1] if args and isinstance(args[-1], str) else "en"
                message = status_error(exc, lang)
                if n_outputs == 1:
                    return message
                out = [gr.skip()] * n_outputs
                out[status_index] = message
                return tuple(out)
        return inner
    return wrap
