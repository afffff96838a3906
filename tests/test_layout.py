"""The house's rules, read from the code's own imports: which room may import which."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1] / "pipelines"

#: What each subpackage may import from the rest of ``pipelines`` (besides itself).
ALLOWED = {
    "core": set(),
    "storage": {"core"},
    # The planner is pure and sits below the engine; calibration and observations sit above it.
    "transfer": {"core", "storage", "model.bandwidth"},
    "model": {"core", "storage", "transfer"},
    "datasets": {"core", "storage", "transfer", "model"},
    "checkpoints": {"core", "storage", "transfer", "model"},
    "operators": {"core", "storage", "transfer", "model", "datasets", "checkpoints"},
    "cli": {"core", "storage", "transfer", "model", "datasets", "checkpoints", "devtools", "operators"},
    "devtools": {"core", "storage", "transfer", "model", "datasets", "checkpoints", "operators"},
}


def imports(path: Path) -> set[str]:
    """Every ``pipelines.*`` module a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipelines"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipelines")}
    return found


def test_each_subpackage_imports_only_the_layers_below_it() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).parts
        if len(rel) < 2 or rel[0] not in ALLOWED:
            continue
        room = rel[0]
        for mod in imports(path):
            parts = mod.split(".")[1:]
            if not parts or parts[0] == room:
                continue
            allowed = ALLOWED[room]
            if parts[0] not in allowed and ".".join(parts[:2]) not in allowed:
                wrong.append(f"{path.relative_to(ROOT.parent)} imports {mod}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_the_library_never_imports_airflow() -> None:
    """Only operators/ (and the dev tools that start Airflow) speak to Airflow; the rest is tested without it."""
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).parts
        if rel[0] in ("operators", "devtools"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            wrong += [f"{path.relative_to(ROOT.parent)}: {n}" for n in names if n.split(".")[0] == "airflow"]
    assert not wrong, wrong


@pytest.mark.parametrize("package", ["pipelines.checkpoints", "pipelines.transfer", "pipelines.datasets.preparation"])
def test_lazy_exports_resolve_and_never_shadow_a_submodule(package: str) -> None:
    pkg = importlib.import_module(package)
    submodules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    assert not set(pkg.__all__) & submodules, "an export named like a submodule is shadowed once it is imported"
    for name in pkg.__all__:
        value = getattr(pkg, name)
        assert not isinstance(value, type(pkg)), f"{package}.{name} is a module"
