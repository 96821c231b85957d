"""export/'s modules import each other without a circle (imports inside functions count).

A circle (quantize.py and graph_edits.py used to import each other) makes the import order
matter and a module impossible to read alone; the pipeline loads each kind's exporter by
name (`pipeline.EXPORTERS`) for the same reason, since the exporters import the pipeline.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_import_direction import PACKAGE, _imports, _module

EXPORT = PACKAGE / "export"


def import_graph(root: Path) -> dict[str, set[str]]:
    """{module: the modules under ``root``'s package it imports} (a package counts as its ``__init__``)."""
    modules = {_module(path): path for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for target, _line in _imports(path):
            # ``from . import staging`` names the module; ``from .pipeline import x`` the module too
            while target and target not in modules:
                target = target.rsplit(".", 1)[0] if "." in target else ""
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle in ``graph`` (its modules in order, the first repeated), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node):], node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            cycle = visit(target, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for node in sorted(graph):
        cycle = visit(node, [])
        if cycle:
            return cycle
    return None


def test_export_has_no_import_circle() -> None:
    graph = import_graph(EXPORT)
    assert "ortmodels.export.decoder.exporter" in graph and "ortmodels.export.pipeline" in graph
    # The package's __init__ re-exports the pipeline; that edge is one way.
    cycle = find_cycle({m: t - {"ortmodels.export"} for m, t in graph.items()})
    assert cycle is None, "import circle in export/: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
