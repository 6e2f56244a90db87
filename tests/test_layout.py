"""The code shows its rings: folders by concern, imports only inward, no import circles; functions stay short.

    minibert/           the core: config, model, padding, heads, checkpoint, tokenizer, corrupt, files, cli
    minibert/data/      the registry and its layouts, reading one file, tokenising and batching   -> core
    minibert/training/  what a run is, the loop, evaluation, the run folder, measurements          -> core, data
    minibert/study/     the paper's tables as a grid, its report                                  -> core, data, training
    minibert/tools/     trace, tour, parity, download, bench                                      -> everything
train.py, eval.py and `python -m minibert` (minibert/__main__.py) sit outside the rings and may use any of them;
nothing inside the package imports tools.
"""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "minibert"
SOURCES = sorted([*PACKAGE.rglob("*.py"), REPO / "train.py", REPO / "eval.py"])
RINGS = ("core", "data", "training", "study", "tools")  # inner to outer
MAX_FUNCTION_LINES = 50  # a smell detector: a longer function likely does two things


def ring(module: str) -> str:
    """'minibert.study.report' -> 'study'; the package's top-level modules are the core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in RINGS else "core"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every minibert module `path` imports, at the top or inside a function (lazy imports count too)."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "minibert":
                base = node.module
            else:
                continue
            # `from . import x` / `from .study import report` name modules; `from .x import name` names x
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if _is_module(candidate) else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "minibert"}
    return {m for m in found if m != "minibert" and m != module}


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def test_imports_point_inward():
    outward = []
    for module, targets in graph().items():
        if module == "minibert.__main__":
            continue  # the command dispatcher, outside the rings like train.py
        for target in targets:
            mine, theirs = RINGS.index(ring(module)), RINGS.index(ring(target))
            if module == "minibert":  # the package's public names: the core only
                mine = 0
            if theirs > mine or (ring(target) == "tools" and ring(module) != "tools"):
                outward.append(f"{module} ({ring(module)}) imports {target} ({ring(target)})")
    assert not outward, "imports from an inner ring to an outer one:\n" + "\n".join(outward)


def test_no_import_circles():
    edges = graph()
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_rings_are_folders():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert folders == set(RINGS[1:])
    assert ring("minibert.model") == "core" and ring("minibert.study.grid") == "study"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_functions_are_short(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, f"{path.name}:{node.lineno} {node.name} is {length} lines"
