"""bench/ is in layers, every import runs downward, and no modules import each other (docs/development.md, "Layout").

The layers, lowest first: ``data -> model -> training -> scoring -> run ->
study -> html -> commands``; ``config``, ``atomic_files``, ``progress`` and
``errors`` are the foundation below them all. A module may import its own layer
and lower ones, at the top of the file or inside a function, as long as no
chain of imports leads back to it (an import cycle, within a layer too).
"""

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
LAYERS = ("foundation", "data", "model", "training", "scoring", "run", "study", "html", "commands")
FOUNDATION = {"config", "atomic_files", "progress", "errors", "__init__"}
ENTRY_POINT = "__main__"  # python -m bench: the command line's own layer


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name under ``bench`` (None for a module outside bench)."""
    parts = module.split(".")
    if parts[0] != "bench":
        return None
    if len(parts) == 1 or parts[1] in FOUNDATION:
        return "foundation"
    if parts[1] == ENTRY_POINT:
        return "commands"
    if parts[1] not in LAYERS:
        raise AssertionError(f"bench.{parts[1]} is in no layer; add it to LAYERS or FOUNDATION in {__file__}")
    return parts[1]


def module_name(path: Path, root: Path) -> str:
    """The dotted name of ``path`` under the package folder ``root`` (a package's ``__init__`` is the package)."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 2 else parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool,
                     modules: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import in ``tree``, relative ones resolved, function bodies included.

    ``from package import name`` gives ``package.name`` when that is one of ``modules`` (a submodule), else
    ``package``.
    """
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".")
                base = package if is_package else package[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            # "from bench import run" imports the layer bench.run itself; "from bench.scoring import protocols"
            # the module bench.scoring.protocols.
            names = [f"{target}.{alias.name}" if target == "bench" or f"{target}.{alias.name}" in modules
                     else target for alias in node.names]
            found += [(node.lineno, name) for name in names]
    return found


def upward_imports(root: Path = BENCH) -> list[str]:
    """One line per import that runs against the layer order: module, line, both layers."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        mine = layer_of(module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in imported_modules(tree, module, path.name == "__init__.py"):
            theirs = layer_of(target)
            if theirs is not None and LAYERS.index(theirs) > LAYERS.index(mine):
                problems.append(f"{path.relative_to(root.parent)}:{line}: {module} (layer {mine}) imports {target} "
                                f"(layer {theirs}), which is above it")
    return problems


def import_graph(root: Path = BENCH) -> dict[str, dict[str, str]]:
    """``{module: {bench module it imports: "file:line" of the first such import}}`` for every module under ``root``."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    modules = frozenset(paths)
    graph: dict[str, dict[str, str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges = graph.setdefault(module, {})
        for line, target in imported_modules(tree, module, path.name == "__init__.py", modules):
            if target in modules and target not in edges:
                edges[target] = f"{path.relative_to(root.parent)}:{line}"
    return graph


def import_cycles(root: Path = BENCH) -> list[str]:
    """One line per import cycle among the modules under ``root``: its modules in import order, each import's
    file and line.

    A cycle is a strongly connected set of modules (Tarjan's algorithm); the line follows the shortest path from
    its first module (by name) around and back.
    """
    graph = import_graph(root)
    order: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = lowest[module] = len(order)
        stack.append(module)
        for target in graph[module]:
            if target not in order:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in stack:
                lowest[module] = min(lowest[module], order[target])
        if lowest[module] == order[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            components.append(component)

    for module in sorted(graph):
        if module not in order:
            visit(module)
    cycles = []
    for component in components:
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue  # one module, not importing itself
        start, members = min(component), set(component)
        came_from = {start: None}
        frontier, path = [start], None
        while path is None:  # breadth first, back to start within the component
            following = []
            for module in frontier:
                for target in sorted(graph[module]):
                    if target == start:
                        path = [module]
                        break
                    if target in members and target not in came_from:
                        came_from[target] = module
                        following.append(target)
                if path is not None:
                    break
            frontier = following
        while came_from[path[0]] is not None:
            path.insert(0, came_from[path[0]])
        path.append(start)
        where = ", ".join(graph[a][b] for a, b in zip(path, path[1:]))
        cycles.append(f"import cycle: {' -> '.join(path)} ({where})")
    return sorted(cycles)


def test_every_import_runs_down_the_layers():
    assert upward_imports() == []


def test_no_two_modules_import_each_other():
    assert import_cycles() == []


def test_the_cycle_check_names_each_cycle_with_its_imports(tmp_path):
    package = tmp_path / "bench"
    (package / "scoring").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "scoring" / "__init__.py").write_text("")
    # Two modules that import each other, the second inside a function and through its package.
    (package / "scoring" / "protocols.py").write_text("from bench.scoring.metrics import rule\n")
    (package / "scoring" / "metrics.py").write_text("def rule():\n    from bench.scoring import protocols\n")
    # Three in a ring, relative imports; and one that only imports into the ring (not part of a cycle).
    (package / "scoring" / "a.py").write_text("from . import b\n")
    (package / "scoring" / "b.py").write_text("import os\nfrom .c import x\n")
    (package / "scoring" / "c.py").write_text("\n\nimport bench.scoring.a\n")
    (package / "scoring" / "outside.py").write_text("from bench.scoring import a, protocols\n")
    assert import_cycles(package) == [
        "import cycle: bench.scoring.a -> bench.scoring.b -> bench.scoring.c -> bench.scoring.a "
        "(bench/scoring/a.py:1, bench/scoring/b.py:2, bench/scoring/c.py:3)",
        "import cycle: bench.scoring.metrics -> bench.scoring.protocols -> bench.scoring.metrics "
        "(bench/scoring/metrics.py:2, bench/scoring/protocols.py:1)",
    ]
    (package / "scoring" / "metrics.py").write_text("def rule():\n    pass\n")
    (package / "scoring" / "c.py").write_text("import bench.scoring\n")  # the package, not a module of the ring
    assert import_cycles(package) == []


def test_the_check_names_an_upward_import_with_its_line_and_both_layers(tmp_path):
    package = tmp_path / "bench"
    (package / "run").mkdir(parents=True)
    (package / "html").mkdir()
    (package / "__init__.py").write_text("")
    (package / "html" / "page.py").write_text("from bench.run.folder import PAGE_FILE\n")  # down: fine
    (package / "run" / "folder.py").write_text("PAGE_FILE = 'index.html'\n\n\ndef later():\n"
                                               "    from bench.html import page  # inside a function\n")
    (package / "run" / "relative.py").write_text("import os\nfrom ..commands import cli\nfrom . import folder\n")
    assert upward_imports(package) == [
        "bench/run/folder.py:5: bench.run.folder (layer run) imports bench.html (layer html), which is above it",
        "bench/run/relative.py:2: bench.run.relative (layer run) imports bench.commands (layer commands), "
        "which is above it",
    ]


@pytest.mark.parametrize("module, layer", [("bench.config", "foundation"), ("bench", "foundation"),
                                           ("bench.scoring.metric_names", "scoring"), ("bench.html", "html"),
                                           ("bench.__main__", "commands"),
                                           ("numpy", None)])
def test_layer_of(module, layer):
    assert layer_of(module) == layer
