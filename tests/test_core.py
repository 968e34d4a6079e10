"""studio/core: the vocabulary and shared facts are defined once and imported everywhere else."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from studio.core import paths, secrets, vocab

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "studio").rglob("*.py"), ROOT / "app.py"])
CORE = ROOT / "studio" / "core"


def _outside_core():
    return [p for p in SOURCES if CORE not in p.parents]


def _assigned_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name):
                    names.add(leaf.id)
    return names


def test_exit_codes_tiers_and_suffixes_are_defined_only_in_core():
    repeated = []
    for path in _outside_core():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assigned = _assigned_names(tree)
        for name in assigned:
            if name.startswith("EXIT_") or name in {"MEMORY_TIERS", "GPU_TIERS", "STATUSES", "ACTIVE_STATUSES",
                                                     "IMAGE_SUFFIXES", "_IMAGE_SUFFIXES", "REDACTED"}:
                repeated.append(f"{path.relative_to(ROOT)}: assigns {name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in {"next_lower_tier", "redact"}:
                repeated.append(f"{path.relative_to(ROOT)}: defines {node.name}()")
    assert not repeated, "\n".join(repeated)


def test_the_data_folder_default_is_written_once():
    literal = re.compile(r"""["'](\./)?studio_data["']""")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in _outside_core()
             for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if literal.search(line)]
    assert not found, found


def test_core_imports_neither_torch_nor_yaml():
    code = ("import sys, studio.core.vocab, studio.core.paths, studio.core.secrets; "
            "print(sorted(m for m in ('torch', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_next_lower_tier_steps_down_and_stops():
    assert [vocab.next_lower_tier(t) for t in vocab.MEMORY_TIERS] == ["16gb", "12gb", "8gb", None, None]
    assert vocab.next_lower_tier("auto") is None and vocab.next_lower_tier(None) is None


def test_every_exit_code_has_its_own_number_and_documented_meaning():
    codes = {name: getattr(vocab, name) for name in dir(vocab) if name.startswith("EXIT_") and name != "EXIT_USAGE"}
    assert sorted(codes.values()) == list(range(6))
    table = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for value in codes.values():
        assert f"| {value} |" in table


def test_old_import_places_still_give_the_same_objects():
    from studio import diagnostics, events, jobs, publish
    from studio.data import dataset

    assert events.EXIT_OOM is vocab.EXIT_OOM and diagnostics.next_lower_tier is vocab.next_lower_tier
    assert jobs.redact is secrets.redact is publish.redact and jobs.next_lower_tier is vocab.next_lower_tier
    assert dataset.IMAGE_SUFFIXES is paths.IMAGE_SUFFIXES


def test_one_mask_for_every_secret(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "plain-secret-value")
    text = secrets.redact("hf_abcdefghijklmnopqrstuvwxyz used with plain-secret-value, Bearer abcdefghijklmnopqrstu")
    assert text == "[REDACTED] used with [REDACTED], Bearer [REDACTED]"
    assert secrets.redact({"hf_token": "x", "run": {"api_key": "y", "steps": 3}}) == {"run": {"steps": 3}}


def test_data_dir_prefers_the_explicit_folder_then_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("STUDIO_DATA", raising=False)
    assert paths.data_dir() == Path("studio_data")
    monkeypatch.setenv("STUDIO_DATA", str(tmp_path))
    assert paths.data_dir() == tmp_path and paths.data_dir("elsewhere") == Path("elsewhere")
