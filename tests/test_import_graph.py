"""The project's import graph is a DAG and respects the layers; no `_private` name crosses modules.

Imports are read from the source (ast), including those inside functions: a lazy import still ties
two modules together. `TYPE_CHECKING`-only imports are left out (they never run).
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PKG = Path(__file__).resolve().parents[1] / "sglang"
# kernels <- runtime <- lang <- compiler; the hub and the CLI entry points may import anything.
LAYERS = {"kernels": 0, "runtime": 1, "lang": 2, "compiler": 3}
TOP = {"sglang", "sglang.cli", "sglang.launch_server", "sglang.__main__"}


def _module_name(path: Path) -> str:
    parts = ("sglang",) + path.relative_to(PKG).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) for each import statement that runs."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.startswith("sglang")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("sglang"):
                continue
            names = [a.name for a in node.names]
            # `from pkg import submodule` imports the submodule
            subs = [f"{mod}.{n}" for n in names if f"{mod}.{n}" in modules]
            out += [(s, []) for s in subs]
            out.append((mod, [n for n in names if f"{mod}.{n}" not in modules]))
    return out


def _graph() -> tuple[nx.DiGraph, list[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(files)
    private = []
    for name, path in files.items():
        for mod, names in _imports(path, set(files)):
            while mod not in files and "." in mod:
                mod = mod.rpartition(".")[0]
            if mod != name:
                g.add_edge(name, mod)
            private += [f"{name} imports {mod}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__") and mod != name]
    return g, private


def _layer(mod: str) -> int | None:
    parts = mod.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_import_graph_is_a_dag():
    g, _ = _graph()
    # a package's __init__ importing its own children is not a circle back to itself through them
    # when the child imports a sibling by its package path; keep only real module cycles.
    cycles = list(nx.simple_cycles(g))
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in cycles[:20])


def test_imports_respect_the_layers():
    g, _ = _graph()
    bad = [f"{a} -> {b}" for a, b in g.edges if a not in TOP
           and _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_private_name_crosses_modules():
    _, private = _graph()
    assert not private, "private names imported across modules:\n" + "\n".join(sorted(set(private)))
