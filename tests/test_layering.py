"""Who may import whom, read from the source with `ast`: the domain imports nothing of ours
outside itself, projections never reach the edges, the edges never reach the command line,
no two modules import each other (however indirectly), and only the composition root reads
the environment."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The folders of the repository's top level and the import names they install as.
FOLDERS = {
    "domain": "voxledger.domain",
    "projections": "voxledger.projections",
    "adapters": "voxledger.adapters",
    "scripts": "voxledger.scripts",
}


@dataclass(frozen=True)
class Import:
    """One import of one of our modules: where it is written and how."""

    source: str
    target: str
    line: int
    at_import_time: bool  # at the module's top level, not inside a function
    for_typing_only: bool  # under `if TYPE_CHECKING:`


def our_modules() -> dict[str, Path]:
    """Every module of the product by import name."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            found[".".join([package, *(p for p in parts if p != "__init__")])] = path
    return found


MODULES = our_modules()


def imports_of(name: str) -> Iterator[Import]:
    """The imports of our modules one module makes, relative ones resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def walk(node: ast.AST, in_function: bool, typing_only: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for statement in child.body:
                    yield from walk_one(statement, in_function, True)
                for statement in child.orelse:
                    yield from walk_one(statement, in_function, typing_only)
            else:
                yield from walk_one(child, in_function, typing_only)

    def walk_one(node: ast.AST, in_function: bool, typing_only: bool) -> Iterator[Import]:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from walk(node, True, typing_only)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for target in targets(node):
                if target in MODULES and target != name:
                    yield Import(name, target, node.lineno, not in_function, typing_only)
        else:
            yield from walk(node, in_function, typing_only)

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        module = node.module or ""
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join([*base, *([node.module] if node.module else [])])
        # `from . import x` and `from .m import Name`: the module, or a submodule named so.
        return [module, *(f"{module}.{alias.name}" for alias in node.names)]

    yield from walk(ast.parse(path.read_text(), str(path)), False, False)


IMPORTS = [i for name in MODULES for i in imports_of(name)]


def cycles(edges: list[Import]) -> list[set[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan's
    strongly connected components of more than one module)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for edge in edges:
        graph[edge.source].add(edge.target)
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(group)

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def described(found: list[Import]) -> list[str]:
    return [f"{i.source}:{i.line} imports {i.target}" for i in found]


def test_the_reader_finds_every_module_and_the_imports_between_them() -> None:
    # The reading itself: imports known to be there, one of each kind.
    pairs = {(i.source, i.target, i.at_import_time, i.for_typing_only) for i in IMPORTS}
    root, serve = "voxledger.adapters.bootstrap", "voxledger.scripts.serve"
    history, store = "voxledger.adapters.debug.history", "voxledger.adapters.store.event_store"
    assert (root, store, True, False) in pairs  # at the top
    assert (serve, root, False, False) in pairs  # inside the function that runs the command
    assert (history, store, True, True) in pairs  # for type hints only
    assert "voxledger.adapters.http.app" in MODULES and "voxledger.domain" in MODULES


def test_no_module_imports_one_that_imports_it_back_even_inside_a_function() -> None:
    assert cycles(IMPORTS) == []


def test_nothing_imports_in_a_circle_when_modules_load() -> None:
    # Type-only imports count: a reader sees the two modules depend on each other.
    assert cycles([i for i in IMPORTS if i.at_import_time]) == []


@pytest.mark.parametrize(
    ("layer", "may_import"),
    [
        ("voxledger.domain", {"voxledger.domain"}),
        ("voxledger.projections", {"voxledger.domain", "voxledger.projections"}),
        (
            "voxledger.adapters",
            {"voxledger.domain", "voxledger.projections", "voxledger.adapters"},
        ),
    ],
)
def test_each_layer_imports_only_itself_and_the_layers_below(
    layer: str, may_import: set[str]
) -> None:
    outside = [
        i
        for i in IMPORTS
        if i.source.startswith(layer + ".") and not i.target.startswith(tuple(may_import))
    ]
    assert described(outside) == []


def test_the_projection_runner_feeds_projections_it_does_not_import() -> None:
    runner = {i.target for i in IMPORTS if i.source == "voxledger.projections.runner"}
    allowed = {"voxledger.projections.projection", "voxledger.domain.errors"}
    assert runner <= allowed | {"voxledger.domain.events", "voxledger.domain"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    a, b = "voxledger.domain.errors", "voxledger.domain.events"
    assert cycles([Import(a, b, 1, True, False), Import(b, a, 1, True, False)]) == [{a, b}]


def test_only_the_composition_root_reads_the_environment() -> None:
    readers = []
    for name, path in MODULES.items():
        if name == "voxledger.adapters.bootstrap":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            is_environ = isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
            if is_environ and ast.unparse(node).startswith("os."):
                readers.append(f"{name}:{node.lineno}")
    assert readers == []
