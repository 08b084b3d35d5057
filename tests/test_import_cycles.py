"""No import cycles among the project's own modules (``testbed`` and ``analysis``).

An AST walk of every module: every ``import`` statement counts, wherever it is (module level,
inside a function, under ``if TYPE_CHECKING:``), so a cycle cannot hide behind a lazy import.
``from package import name`` is an edge to ``package.name`` when that is a module, else to the
package; relative imports are resolved against the importing module's package. Implicit imports
of parent packages (``import a.b.c`` runs ``a/__init__`` first) are not edges: they are not
something a module chooses, and a package's ``__init__`` importing its own submodules is fine.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("testbed", "analysis")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the project's packages."""
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _base_package(module: str, path: Path) -> str:
    """The package a relative import in ``module`` is resolved against."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``module`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()

    def add(name: str) -> None:
        # the longest project module that ``name`` names (``a.b.c.attr`` -> ``a.b.c``)
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _base_package(module, path)
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                add(sub if sub in modules else target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path ``a -> b -> ... -> a``) per strongly connected component."""
    return [_cycle_in(graph, set(c)) for c in tangles(graph)]


def tangles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (each sorted)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:  # Tarjan
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return components


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, staying inside the component."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle in component {sorted(component)}")


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The walk itself: function-level, relative, ``from . import x`` and TYPE_CHECKING imports."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg import b\n",
        "pkg/b.py": "from .sub import c\n",
        "pkg/sub/__init__.py": "from . import d\n",
        "pkg/sub/c.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n"
        ),
        "pkg/sub/d.py": "import pkg.sub.c as c_module\nfrom .. import missing_name\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    modules = {}
    for path in sorted(tmp_path.rglob("*.py")):
        parts = list(path.relative_to(tmp_path).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    graph = {name: imports_of(name, path, modules) for name, path in modules.items()}
    assert graph == {
        "pkg": set(),
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub.c"},
        "pkg.sub": {"pkg.sub.d"},
        "pkg.sub.c": {"pkg.a"},
        "pkg.sub.d": {"pkg.sub.c", "pkg"},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "testbed.scenario" in graph and "analysis.load" in graph  # the walk found the project
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among the project's modules:\n" + "\n".join(
        "  " + " -> ".join(c) + f"  (modules in this tangle: {', '.join(members)})"
        for c, members in zip(cycles, tangles(graph))
    )
