"""The architecture holds: storage and reports never name a method, no import circles,
no file past ~400 lines (DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "weightshare"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports at module level (not inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("weightshare"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("weightshare"):
                out.add(target)
                out.update(f"{target}.{a.name}" for a in node.names)
    return out


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {m: {t for t in top_level_imports(p) if t in MODULES and t != m}
         for m, p in MODULES.items()}


def reachable(start: str) -> set[str]:
    """Modules ``start`` imports, directly or not (the facade ``weightshare/__init__`` aside:
    importing any submodule runs it, and it imports everything on purpose)."""
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH[todo.pop()]:
            if nxt not in seen and nxt != "weightshare":
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith(
    ("weightshare.io", "weightshare.core")) or m == "weightshare.analysis.report"))
def test_storage_core_and_report_never_import_a_method(module):
    methods = sorted(m for m in reachable(module) if m.startswith("weightshare.methods"))
    assert methods == [], f"{module} imports {methods}"


def test_no_import_circles():
    for module in MODULES:
        assert module not in reachable(module), f"{module} imports itself through a circle"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_files_stay_short(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"split {path.name}"
