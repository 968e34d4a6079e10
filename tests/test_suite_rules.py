"""Rules the test suite keeps so that its results do not depend on test order or timing, and the
sizes that keep the studio's modules readable in one sitting."""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
STUDIO = TESTS.parent / "studio"
MAX_FILE_LINES = 420  # "about 400": a module someone reads in one sitting
MAX_CLASS_LINES = 200
# Assigning, updating or deleting process environment variables outright; monkeypatch undoes its changes.
ENV_WRITE = re.compile(r"os\.environ\[[^\]]+\]\s*=(?!=)|os\.environ\.(update|pop|setdefault|clear)\(|"
                       r"del\s+os\.environ\[|os\.(putenv|unsetenv)\(")


def test_tests_change_the_environment_only_through_monkeypatch():
    """An environment variable set by one test leaks into every later one (STUDIO_DATA pointing at
    another test's folder). conftest.py alone sets the offline switches, once, for the whole run."""
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name == "conftest.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ENV_WRITE.search(line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "use monkeypatch.setenv / pytest.MonkeyPatch.context():\n" + "\n".join(offenders)


def test_studio_modules_and_classes_stay_small():
    """No module of the studio over ~400 lines and no class over 200: a larger one is split by
    responsibility (the message says which)."""
    too_long = []
    for path in sorted(STUDIO.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(STUDIO.parent).as_posix()
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            too_long.append(f"{name}: {lines} lines (at most {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{name}:{node.lineno}: class {node.name} has {node.end_lineno - node.lineno + 1} "
                                f"lines (at most {MAX_CLASS_LINES})")
    assert STUDIO.is_dir() and not too_long, "\n".join(too_long)
