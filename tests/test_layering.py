"""Arrows point down only: the core imports nothing from the toy world or the demo (docs/DESIGN.md)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "insv2v"
CORE = ["video", "flow", "guidance", "longvideo", "models", "pipeline", "loading", "metrics", "editing", "sweep"]
ABOVE = ("insv2v.toyworld", "insv2v.ui")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_neither_the_toy_world_nor_the_ui(module):
    files = sorted((PACKAGE / module).rglob("*.py")) if (PACKAGE / module).is_dir() else [PACKAGE / f"{module}.py"]
    for path in files:
        bad = sorted(name for name in imported_modules(path) if name.startswith(ABOVE))
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {bad}"
