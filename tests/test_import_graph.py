"""The project's import graph: no cycle, and the app side stays off the edge's process modules.

Every ``import`` statement counts, wherever it is: at the top, inside a function,
under ``if TYPE_CHECKING:``. A type-only cycle is still a circle of modules that
must be read (and refactored) together.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("relay_edge", "relay_client")
# The edge's process modules: the running edge, not helpers both sides share.
EDGE_PROCESS = frozenset(f"relay_edge.{name}" for name in ("edge", "http", "ingest", "link", "cli"))
# The one exception: ``relay-client selftest`` runs a real edge in-process on loopback
# (edge + app + publisher in one command), so it needs the Edge itself.
APP_SIDE_MAY_IMPORT = {"relay_client.selftest": {"relay_edge.edge"}}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """What one import statement binds: ``from pkg import sub`` is the submodule, not pkg."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's package, one level up per extra dot
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        source = ".".join(part for part in (base, node.module) if part)
    else:
        source = node.module or ""
    return [source, *(f"{source}.{alias.name}" for alias in node.names)]


def _project_module(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports.

    A submodule's implicit import of its parent package (Python runs the
    package's ``__init__`` first) is not an edge: a package re-exporting its
    submodules is not a cycle. ``from pkg import sub`` is an edge to ``sub``
    only; ``from pkg import name`` (not a submodule) is an edge to ``pkg``.
    """
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            targets = _targets(node, module, is_package)
            if isinstance(node, ast.ImportFrom):
                source, names = targets[0], targets[1:]
                submodules = {n for n in names if n in modules}
                edges |= submodules
                if len(submodules) < len(names):
                    edges.add(_project_module(source, modules) or "")
            else:
                edges |= {_project_module(t, modules) or "" for t in targets}
        graph[module] = edges - {"", module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "relay_edge.rtmp.session" in graph["relay_edge.rtmp"]  # relative, from a package __init__
    assert "relay_edge.rtmp.messages" in graph["relay_edge.rtmp.session"]  # from . import messages as m
    assert "relay_edge.errors" in graph["relay_edge.rtmp.session"]  # from ..errors import ...
    assert "relay_edge.wire" in graph["relay_client.receiver"]  # absolute


def test_find_cycle_finds_a_type_only_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_app_side_imports_no_edge_process_module() -> None:
    graph = import_graph()
    wrong = {
        module: sorted(edges)
        for module in graph
        if module.startswith("relay_client")
        and (edges := graph[module] & EDGE_PROCESS - APP_SIDE_MAY_IMPORT.get(module, set()))
    }
    assert wrong == {}
