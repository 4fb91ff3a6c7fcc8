"""The node's parts depend inward only: each module of core/ imports, at run
time, only the parts below it, so each can be read without those above it
(the role modules see Node only for type checking)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "p2pstate" / "core"

#: The node's parts, lowest first: a part may import only those before it.
LAYERS = [
    ("common",),
    ("liveness", "ttl", "rollback", "admission"),
    ("follower",),
    ("host",),
    ("merge",),
    ("failover",),
    ("joining",),
    ("node",),
]
PARTS = [name for layer in LAYERS for name in layer]


def _runtime_imports(name: str) -> set[str]:
    """The node's parts that core/<name>.py imports outside TYPE_CHECKING."""
    tree = ast.parse((CORE / f"{name}.py").read_text())
    found: set[str] = set()
    for stmt in tree.body:  # module level: an import inside a function is a smell too
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            continue
        for node in ast.walk(stmt):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module is None:  # from . import host, follower
                    found |= {alias.name for alias in node.names}
                else:  # from .common import Role
                    found.add(node.module.split(".")[0])
    return found & set(PARTS)


def _level(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def test_every_part_imports_only_parts_below_it() -> None:
    for name in PARTS:
        above = {dep for dep in _runtime_imports(name) if _level(dep) >= _level(name)}
        assert not above, f"core/{name}.py imports {sorted(above)}, which are not below it"


def test_no_function_imports_a_part() -> None:
    """No import hidden in a function to get round the layers."""
    for name in PARTS:
        tree = ast.parse((CORE / f"{name}.py").read_text())
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
                assert not inner, f"core/{name}.py: {fn.name} imports inside"


def test_the_layers_name_every_part() -> None:
    """A new module of the node's parts must take its place in LAYERS."""
    importers = {p.stem for p in CORE.glob("*.py") if "from .node import Node" in p.read_text()}
    assert importers <= set(PARTS), sorted(importers - set(PARTS))
