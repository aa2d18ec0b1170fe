"""Package directions: storage/ imports nothing from bot/, handlers/ or scheduler/; bot/core imports
nothing from handlers/ or scheduler/. Walks every module's syntax tree (imports inside functions
count too), so an upward import fails here and not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (package whose modules are checked, packages it may not import)
RULES = (
    ("storage", ("bot", "handlers", "scheduler")),
    ("bot/core", ("handlers", "scheduler")),
)


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Every module a file imports, absolute, with the line it is imported on."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".") if package else []
            base = parts[:len(parts) - (node.level - 1)] if node.level else []
            if node.module:
                found.append((node.lineno, ".".join(base + [node.module])))
            else:  # "from .. import handlers": the names are the modules
                found += [(node.lineno, ".".join(base + [alias.name])) for alias in node.names]
    return found


def upward_imports(package: str, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted((root / package).rglob("*.py")):
        for line, module in imported_modules(path, root):
            top = module.split(".")[0]
            if top in forbidden:
                bad.append(f"{path.relative_to(root).as_posix()}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package,forbidden", RULES, ids=[rule[0] for rule in RULES])
def test_no_upward_imports(package, forbidden):
    assert upward_imports(package, forbidden) == []


def test_the_walk_finds_an_upward_import(tmp_path):
    """The checker itself: an import inside a function is reported, a relative one resolved."""
    pkg = tmp_path / "storage"
    pkg.mkdir()
    (pkg / "bad.py").write_text("def f():\n    from bot.core import ledger\n", encoding="utf-8")
    (pkg / "fine.py").write_text("from .models import Unit\nimport sqlalchemy\n", encoding="utf-8")
    (pkg / "sneaky.py").write_text("from .. import handlers\n", encoding="utf-8")
    assert upward_imports("storage", ("bot", "handlers"), tmp_path) == [
        "storage/bad.py:2 imports bot.core", "storage/sneaky.py:1 imports handlers"]
