"""The core stays readable: a short trainer, no long functions in `unified_opd/`."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "unified_opd"


def test_no_function_in_the_core_is_over_60_lines():
    long = []
    for path in sorted(CORE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(CORE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long


def test_the_trainer_is_at_most_300_lines():
    assert len((CORE / "trainer.py").read_text().splitlines()) <= 300

