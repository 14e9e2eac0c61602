"""Flow definition files: reads a definition from TOML or JSON and compiles it."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .. import domain
from ..domain.errors import DefinitionError
from ..domain.flow_definition import FlowDefinition

_PARSERS: Mapping[str, Callable[[str], Any]] = {".toml": tomllib.loads, ".json": json.loads}

CustomValidators = Mapping[str, Callable[[str], Any]]


def load_definition(
    path: str | Path, custom_validators: CustomValidators | None = None
) -> FlowDefinition:
    """The flow definition in a .toml or .json file; DefinitionError names the file."""
    path = Path(path)
    parse = _parser(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as error:
        raise DefinitionError(f"{path}: cannot read the file: {error}") from None
    return _compile(parse, text, str(path), custom_validators)


def load_builtin(
    resource: str = "intake.toml", custom_validators: CustomValidators | None = None
) -> FlowDefinition:
    """A flow definition file shipped inside the voxledger.domain package."""
    source = f"voxledger.domain/{resource}"
    parse = _parser(source)
    text = (resources.files(domain) / resource).read_text(encoding="utf-8")
    return _compile(parse, text, source, custom_validators)


def _parser(source: str) -> Callable[[str], Any]:
    parse = _PARSERS.get(Path(source).suffix.lower())
    if parse is None:
        raise DefinitionError(f"{source}: a flow definition file ends in .toml or .json")
    return parse


def _compile(
    parse: Callable[[str], Any],
    text: str,
    source: str,
    custom_validators: CustomValidators | None,
) -> FlowDefinition:
    try:
        data = parse(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise DefinitionError(f"{source}: cannot parse: {error}") from None
    try:
        return FlowDefinition.from_mapping(data, custom_validators)
    except DefinitionError as error:
        raise DefinitionError(f"{source}: {error}") from None
