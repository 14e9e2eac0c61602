"""The layers hold: the domain imports nothing else of ours, projections import only the
domain, the projection runner imports no projection, and no module of either folder
imports itself back through others (read from the source, not by importing it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    """`domain/flow.py` -> `domain.flow`; a package's `__init__.py` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_of(path: Path) -> set[str]:
    """The modules of ours a module imports (relative imports, as the product writes them)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:  # `from . import x` imports the module x
                if is_module(f"{target}.{alias.name}"):
                    found.add(f"{target}.{alias.name}")
            if node.module and is_module(target):
                found.add(target)
    return found - {name}


def graph(*folders: str) -> dict[str, set[str]]:
    """Each module of these folders and the modules of ours it imports."""
    return {
        module_name(path): imports_of(path)
        for folder in folders
        for path in sorted((ROOT / folder).rglob("*.py"))
    }


def cycles(modules: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others."""
    reach = {m: set() for m in modules}
    for start in modules:
        todo = list(modules[start])
        while todo:
            m = todo.pop()
            if m in modules and m not in reach[start]:
                reach[start].add(m)
                todo.extend(modules[m])
    groups = {frozenset({m, *(o for o in reach[m] if m in reach[o])}) for m in modules}
    return sorted(sorted(g) for g in groups if len(g) > 1)


def test_no_module_of_the_domain_or_the_projections_imports_itself_back() -> None:
    assert cycles(graph("domain", "projections")) == []


@pytest.mark.parametrize(
    ("folder", "allowed"),
    [("domain", {"domain"}), ("projections", {"domain", "projections"})],
)
def test_a_folder_imports_only_the_layers_beneath_it(folder: str, allowed: set[str]) -> None:
    reached = {m.split(".")[0] for imported in graph(folder).values() for m in imported}
    assert reached <= allowed


def test_the_projection_runner_feeds_projections_it_does_not_import() -> None:
    runner = graph("projections")["projections.runner"]
    assert runner <= {"projections.projection", "domain.errors", "domain.events"}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
