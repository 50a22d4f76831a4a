"""bench/ is in layers, and every import runs downward (docs/development.md, "Layout").

The layers, lowest first: ``data -> model -> training -> scoring -> run ->
study -> html -> commands``; ``config``, ``atomic_files``, ``progress`` and
``errors`` are the foundation below them all. A module may import its own layer
and lower ones, at the top of the file or inside a function.
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


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import in ``tree``, relative ones resolved, function bodies included."""
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
            # "from bench import run" imports the layer bench.run itself.
            names = [f"{target}.{alias.name}" for alias in node.names] if target == "bench" else [target]
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


def test_every_import_runs_down_the_layers():
    assert upward_imports() == []


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
