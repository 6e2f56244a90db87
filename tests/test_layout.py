"""The code stays readable in the sizes issue 11 set: short functions, modules of one concern."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(REPO / "minibert").glob("*.py"), REPO / "train.py", REPO / "eval.py"])
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 460  # "about 450": a module over it holds more than one concern; split it


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_functions_and_modules_are_short(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(text.splitlines())} lines"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} is {length} lines"
