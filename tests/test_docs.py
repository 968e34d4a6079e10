"""The README stays true: its commands exist, and its troubleshooting table covers the catalogue."""

from pathlib import Path

from studio.diagnostics import CATALOGUE, StudioError, explain, next_lower_tier

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_commands_exist():
    for script in ("scripts/start.sh", "scripts/test.sh"):
        assert f"bash {script}" in README and (ROOT / script).is_file()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_troubleshooting_covers_every_code():
    for code, diagnosis in CATALOGUE.items():
        assert f"| `{code}` | {diagnosis.title} | {diagnosis.advice} |" in README, code
    # and nothing else: the table is the catalogue, row for row, in its order
    rows = [line for line in README.splitlines() if line.startswith("| `") and line.split("`")[1].isupper()]
    assert rows == [f"| `{c}` | {d.title} | {d.advice} |" for c, d in CATALOGUE.items()]


def test_catalogue_behaviour():
    err = StudioError("OUT_OF_MEMORY", "at step 3")
    assert err.as_dict() == {"code": "OUT_OF_MEMORY", "message": "at step 3", "advice": CATALOGUE["OUT_OF_MEMORY"].advice}
    assert explain("NOPE").code == "INTERNAL"
    assert [next_lower_tier(t) for t in ("24gb", "16gb", "12gb", "8gb", "cpu")] == ["16gb", "12gb", "8gb", None, None]
