"""How a run is steered from outside: flag files in `run_dir/control/` and SIGTERM/SIGINT."""

from __future__ import annotations

from pathlib import Path

from ..events import EXIT_INTERRUPTED


class Stop(Exception):
    """Raised at a step boundary when the run must end early (cancel or signal)."""

    def __init__(self, status: str, exit_code: int):
        self.status, self.exit_code = status, exit_code


class Control:
    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / "control"
        self.signalled: int | None = None  # set by train()'s signal handler

    def flag(self, name: str) -> bool:
        """Whether `control/<name>` was set; it is removed when seen."""
        path = self.folder / name
        if path.exists():
            path.unlink(missing_ok=True)
            return True
        return False

    def stop_if_signalled(self) -> None:
        if self.signalled:
            raise Stop("interrupted", EXIT_INTERRUPTED)
