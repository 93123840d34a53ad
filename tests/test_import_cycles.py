"""No two modules of ``layerscope.app`` import each other, however indirectly.

Why a test: import-linter's contracts order packages and a few layers, but a cycle between two
modules of one layer (a command module and the grammar, the App and its commands) passes them;
a cycle means neither module can be read, tested or split without the other. Every import
counts: at module level, inside a function, under ``TYPE_CHECKING`` (an import in a function
still ties the two modules; only the moment it runs differs). The command line's table of lazily
loaded commands ("module:function" strings) is no import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import layerscope.app as app_package

APP = Path(app_package.__file__).parent


def modules_under(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package in ``root``, by its dotted name (a package by its own)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = path
    return modules


def imported_by(module: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The modules of ``modules`` that ``module`` imports anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                anchor = module.split(".")[: None if path.name == "__init__.py" else -1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import name` imports the module package.name when there is one
            names = [f"{base}.{alias.name}" for alias in node.names]
            names = [name if name in modules else base for name in names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # a name inside a module: that module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    modules = modules_under(root, package)
    return {name: imported_by(name, path, modules) for name, path in modules.items()}


def cycles(graph: Mapping[str, set[str]]) -> Iterator[list[str]]:
    """Each group of modules that import each other (a strongly connected component of two or
    more), as one cycle through them: the first module again at its end."""
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is small
        index[node] = lowest[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                lowest[node] = min(lowest[node], lowest[target])
            elif target in stack:
                lowest[node] = min(lowest[node], index[target])
        if lowest[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    for component in components:
        start = min(component)
        paths = {start: [start]}
        frontier = [start]
        while frontier:  # breadth first, inside the component, back to the start
            node = frontier.pop(0)
            for target in sorted(graph[node] & component):
                if target == start:
                    yield [*paths[node], start]
                    frontier = []
                    break
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    frontier.append(target)


def test_the_app_has_no_import_cycle():
    graph = import_graph(APP, "layerscope.app")
    assert len(graph) > 40
    assert "layerscope.app.cli.arguments" in graph["layerscope.app.cli.grammar"]  # sees imports
    found = [" -> ".join(cycle) for cycle in cycles(graph)]
    assert not found, "modules of app/ that import each other:\n" + "\n".join(found)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "first.py").write_text("from pkg.sub import second\n")
    (package / "sub" / "second.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..third import Thing\n"
    )
    (package / "third.py").write_text("def later():\n    import pkg.first\n")
    (package / "apart.py").write_text("COMMANDS = {'run': 'first:run'}\n")
    graph = import_graph(package, "pkg")
    assert graph["pkg.apart"] == set()
    assert list(cycles(graph)) == [["pkg.first", "pkg.sub.second", "pkg.third", "pkg.first"]]
