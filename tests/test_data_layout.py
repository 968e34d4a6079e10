"""studio/data stays a set of small modules that import one another in one direction."""

from __future__ import annotations

import ast
from pathlib import Path


def test_the_data_modules_import_no_cycle_and_stay_small():
    """ingest.py and decode.py once imported each other; what they share lives in limits.py."""
    folder = Path(__file__).resolve().parent.parent / "studio" / "data"
    graph = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[path.stem] = {node.module.split(".")[-1] for node in ast.walk(tree)
                            if isinstance(node, ast.ImportFrom) and node.module and node.level == 1}
        assert len(path.read_text(encoding="utf-8").splitlines()) < 400, path.name

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    assert not [name for name in graph if reaches(name, name)], graph
    assert "ingest" not in graph["decode"] and "limits" in graph["decode"]
