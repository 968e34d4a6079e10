"""Rules the test suite keeps so that its results do not depend on test order or timing."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
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
