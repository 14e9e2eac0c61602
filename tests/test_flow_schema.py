"""Specifications of the JSON Schema of flow files: a valid draft 2020-12 schema that
accepts every sound definition file, refuses misshapen ones, and describes every key."""

from __future__ import annotations

import inspect
import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from voxledger.domain.flow_definition import FlowDefinition
from voxledger.domain.flow_schema import DIALECT, VALIDATOR_TYPES, flow_schema
from voxledger.domain.intake import INTAKE_V1
from voxledger.domain.validators import BUILT_INS

ROOT = Path(__file__).resolve().parent.parent
FLOWS = ROOT / "tests" / "fixtures" / "flows"


def read(path: Path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def checker() -> jsonschema.Draft202012Validator:
    schema = flow_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_is_a_draft_2020_12_schema(checker) -> None:
    assert checker.schema["$schema"] == DIALECT == "https://json-schema.org/draft/2020-12/schema"


@pytest.mark.parametrize(
    "path",
    [ROOT / "domain" / "intake.toml", FLOWS / "delivery.json", FLOWS / "survey.yaml",
     FLOWS / "unsound" / "problems.toml"],
    ids=lambda p: p.name,
)  # fmt: skip
def test_every_definition_file_of_the_right_shape_passes_the_schema(checker, path: Path) -> None:
    assert list(checker.iter_errors(read(path))) == []


@pytest.mark.parametrize("path", sorted((FLOWS / "wrong").iterdir()), ids=lambda p: p.name)
def test_a_misshapen_definition_file_fails_the_schema(checker, path: Path) -> None:
    assert list(checker.iter_errors(read(path))) != []


@pytest.mark.parametrize(
    "change",
    [
        {"version": 0},
        {"name": ""},
        {"steps": [{"name": "a", "prompt": "?", "validator": {"type": "colour"}}]},
        {"steps": [{"name": "a", "prompt": "?", "validator": {"type": "choice"}}]},
        {"steps": [{"name": "a", "prompt": "?", "validator": "choice"}]},
        {"steps": [{"name": "a", "prompt": "?", "validator": {"type": "phone",
                                                              "default_prefix": "44"}}]},
        {"steps": [{"name": "a", "prompt": "?", "kind": "form"}]},
        {"steps": [{"name": "a", "prompt": "?", "next": {"when": [{"mode": "x"}]}}]},
        {"idle_timeout_s": 0},
    ],
)  # fmt: skip
def test_the_schema_refuses_what_loading_refuses(checker, change: dict) -> None:
    data = {**INTAKE_V1.to_mapping(), **change}
    assert list(checker.iter_errors(data)) != []
    with pytest.raises(Exception):  # noqa: B017 - DefinitionError, or msgspec's own
        FlowDefinition.from_mapping(data)


def test_every_definition_written_back_as_data_passes_the_schema(checker) -> None:
    for path in (FLOWS / "survey.yaml", ROOT / "domain" / "intake.toml"):
        definition = FlowDefinition.from_mapping(read(path))
        assert list(checker.iter_errors(definition.to_mapping())) == []


def test_every_key_and_every_validator_type_is_described() -> None:
    definitions = flow_schema()["$defs"]
    for name, schema in definitions.items():
        assert schema.get("description"), name
        for key, property_schema in schema.get("properties", {}).items():
            assert property_schema.get("description"), f"{name}.{key}"
    for table in definitions["Validator"]["oneOf"][1:]:
        assert table["description"]
        for key, option in table["properties"].items():
            assert key == "type" or option.get("description"), f"{table['title']}.{key}"


def test_the_schema_names_every_validator_type_with_exactly_its_options() -> None:
    assert set(VALIDATOR_TYPES) == {*BUILT_INS, "custom"}
    for name, factory in BUILT_INS.items():
        _, options, required = VALIDATOR_TYPES[name]
        parameters = inspect.signature(factory).parameters
        assert set(options) == set(parameters), name
        assert set(required) == {
            p for p, v in parameters.items() if v.default is inspect.Parameter.empty
        }, name
