"""Flow definition files: reads definitions from TOML, JSON or YAML files and folders,
compiles them, and finds every problem in them; loads the Python code (custom validators
and hooks) that definitions name."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from .. import domain
from ..domain.errors import BadInput, DefinitionError, Problem
from ..domain.flow_actions import Actions
from ..domain.flow_definition import FlowDefinition
from ..domain.flow_steps import CustomValidators, Hooks

SUFFIXES = (".toml", ".json", ".yaml", ".yml")


class _YamlError(ValueError):
    """A YAML file that does not parse (PyYAML is imported only to read one)."""


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise _YamlError(str(error)) from None


_PARSERS: Mapping[str, Callable[[str], Any]] = {
    ".toml": tomllib.loads,
    ".json": json.loads,
    ".yaml": _yaml,
    ".yml": _yaml,
}


def load_definition(
    path: str | Path,
    custom_validators: CustomValidators | None = None,
    hooks: Hooks | None = None,
    actions: Actions | None = None,
) -> FlowDefinition:
    """The flow definition in a .toml, .json, .yaml or .yml file; DefinitionError names
    the file with every problem."""
    path = Path(path)
    parse = _parser(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        raise DefinitionError(_at(str(path), f"cannot read the file: {error}")) from None
    return _compile(parse, text, str(path), custom_validators, hooks, actions)


def load_builtin(
    resource: str = "intake.toml", custom_validators: CustomValidators | None = None
) -> FlowDefinition:
    """A flow definition file shipped inside the voxledger.domain package."""
    source = builtin_source(resource)
    parse = _parser(source)
    text = (resources.files(domain) / resource).read_text(encoding="utf-8")
    return _compile(parse, text, source, custom_validators, None, None)


def builtin_source(resource: str = "intake.toml") -> str:
    """How a built-in definition's source is named: its place in the package."""
    return f"voxledger.domain/{resource}"


def definition_files(paths: Iterable[str | Path]) -> list[Path]:
    """The definition files the paths name: a file as it is; a folder's .toml, .json,
    .yaml and .yml files (not those in its subfolders), in name order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
            )
        else:
            files.append(path)
    return files


def check_files(
    paths: Iterable[str | Path],
    custom_validators: CustomValidators | None = None,
    hooks: Hooks | None = None,
    actions: Actions | None = None,
) -> tuple[list[FlowDefinition], list[Problem]]:
    """Every definition in the files and folders, and every problem found in them, each
    naming its file: a path that is not there, a folder with no definition files, what
    each file holds, one name and version defined twice with different content."""
    found, problems = _read_files(paths, custom_validators, hooks, actions)
    return [definition for definition, _ in found], problems


def _read_files(
    paths: Iterable[str | Path],
    custom_validators: CustomValidators | None,
    hooks: Hooks | None,
    actions: Actions | None,
) -> tuple[list[tuple[FlowDefinition, str]], list[Problem]]:
    paths = list(paths)
    found: list[tuple[FlowDefinition, str]] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, int], tuple[FlowDefinition, str]] = {}
    for path in map(Path, paths):
        if not path.exists():
            problems.append(_at(str(path), "no such file or folder"))
        elif path.is_dir() and not definition_files([path]):
            problems.append(_at(str(path), "no .toml, .json, .yaml or .yml files in this folder"))
    for file in definition_files(p for p in map(Path, paths) if p.exists()):
        try:
            definition = load_definition(file, custom_validators, hooks, actions)
        except DefinitionError as error:
            problems.extend(error.problems)
            continue
        key = (definition.name, definition.version)
        first = seen.setdefault(key, (definition, str(file)))
        if first[0] != definition:
            problems.append(
                Problem(
                    reason=f"also defined in {first[1]} with different content; give the change"
                    " a new version",
                    flow=definition.name,
                    version=definition.version,
                    file=str(file),
                )
            )
        elif first[1] == str(file):
            found.append((definition, str(file)))
    return found, problems


def load_flows(
    paths: Iterable[str | Path],
    custom_validators: CustomValidators | None = None,
    hooks: Hooks | None = None,
    actions: Actions | None = None,
) -> list[FlowDefinition]:
    """The definitions in these files and folders (every .toml, .json, .yaml and .yml file
    in a folder, in name order); DefinitionError names every problem and its file."""
    return [
        definition for definition, _ in load_flow_files(paths, custom_validators, hooks, actions)
    ]


def load_flow_files(
    paths: Iterable[str | Path],
    custom_validators: CustomValidators | None = None,
    hooks: Hooks | None = None,
    actions: Actions | None = None,
) -> list[tuple[FlowDefinition, str]]:
    """As `load_flows`, each definition with the file it came from."""
    found, problems = _read_files(paths, custom_validators, hooks, actions)
    if problems:
        raise DefinitionError(*problems)
    return found


class FlowCode(msgspec.Struct, frozen=True):
    """The Python code flow definitions name: custom validators, hooks and actions, by
    name."""

    validators: dict[str, Callable[[str], Any]] = {}
    hooks: dict[str, Callable[..., Any]] = {}
    actions: dict[str, Callable[..., Any]] = {}


def load_code(specs: Iterable[str]) -> FlowCode:
    """The custom validators, hooks and actions of Python modules, each a .py file or an
    importable module name that defines VALIDATORS, HOOKS and/or ACTIONS: dicts of names to
    functions."""
    validators: dict[str, Callable[[str], Any]] = {}
    hooks: dict[str, Callable[..., Any]] = {}
    actions: dict[str, Callable[..., Any]] = {}
    for spec in specs:
        module = _import(spec)
        named_kinds = (("VALIDATORS", validators), ("HOOKS", hooks), ("ACTIONS", actions))
        for attribute, into in named_kinds:
            named = getattr(module, attribute, {})
            if not isinstance(named, Mapping) or not all(
                isinstance(k, str) and callable(v) for k, v in named.items()
            ):
                raise BadInput(f"{spec}: {attribute} must be a dict of names to functions")
            for name, function in named.items():
                if into.setdefault(name, function) is not function:
                    raise BadInput(f"{spec}: {attribute} names {name!r} again")
    return FlowCode(validators, hooks, actions)


def _import(spec: str) -> Any:
    """A module by file path (ending in .py) or by import name."""
    try:
        if not spec.endswith(".py"):
            return importlib.import_module(spec)
        path = Path(spec).resolve()
        name = f"voxledger_flow_code_{path.stem}_{abs(hash(str(path))):x}"
        if name in sys.modules:
            return sys.modules[name]
        loader = importlib.util.spec_from_file_location(name, path)
        if loader is None or loader.loader is None:
            raise BadInput(f"{spec}: cannot load it as Python code")
        module = importlib.util.module_from_spec(loader)
        sys.modules[name] = module
        loader.loader.exec_module(module)
        return module
    except BadInput:
        raise
    except Exception as error:  # the user's code: any failure is one clear line
        raise BadInput(f"{spec}: cannot load the code: {type(error).__name__}: {error}") from None


def _at(source: str, reason: str) -> Problem:
    return Problem(reason=reason, file=source)


def _parser(source: str) -> Callable[[str], Any]:
    parse = _PARSERS.get(Path(source).suffix.lower())
    if parse is None:
        ends = "a flow definition file ends in .toml, .json, .yaml or .yml"
        raise DefinitionError(_at(source, ends))
    return parse


def _compile(
    parse: Callable[[str], Any],
    text: str,
    source: str,
    custom_validators: CustomValidators | None,
    hooks: Hooks | None,
    actions: Actions | None,
) -> FlowDefinition:
    try:
        data = parse(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, _YamlError) as error:
        raise DefinitionError(_at(source, f"cannot parse: {_one_line(error)}")) from None
    try:
        return FlowDefinition.from_mapping(data, custom_validators, hooks, actions)
    except DefinitionError as error:
        raise error.in_file(source) from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
