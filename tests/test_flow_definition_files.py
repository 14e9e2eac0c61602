"""Specifications of flow definition files: TOML and JSON, round trips and errors."""

import json
import shutil
from importlib import resources
from pathlib import Path

import pytest

from voxledger.adapters.flow_files import load_builtin, load_definition
from voxledger.domain.errors import DefinitionError
from voxledger.domain.flow_definition import FlowDefinition
from voxledger.domain.intake import INTAKE_V1

FLOWS = Path(__file__).parent / "fixtures" / "flows"


def phone(raw: str) -> str:
    digits = "".join(c for c in raw if c.isdigit())
    return "+" + digits


def test_the_packaged_intake_file_gives_the_built_in_definition():
    assert load_builtin("intake.toml") == INTAKE_V1


def test_a_toml_file_loads_from_a_path(tmp_path):
    copy = tmp_path / "intake.toml"
    with resources.as_file(resources.files("voxledger.domain") / "intake.toml") as packaged:
        shutil.copy(packaged, copy)
    assert load_definition(copy) == INTAKE_V1


def test_a_json_file_loads_with_a_custom_validator():
    delivery = load_definition(FLOWS / "delivery.json", {"phone": phone})
    assert (delivery.name, delivery.version) == ("delivery", 2)
    assert delivery.validate("phone", "8 (999) 123") == "+8999123"
    assert delivery.path("pickup", {"fragile": True}) == [
        "office",
        "fragile",
        "packing",
        "phone",
        "confirm",
    ]
    assert delivery.path("courier", {"fragile": False}) == [
        "address",
        "fragile",
        "phone",
        "confirm",
    ]


@pytest.mark.parametrize(
    "definition",
    [INTAKE_V1, load_definition(FLOWS / "delivery.json", {"phone": phone})],
    ids=["intake", "delivery"],
)
def test_a_definition_round_trips_through_a_json_file(definition, tmp_path):
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(definition.to_mapping()), encoding="utf-8")
    assert load_definition(path, {"phone": phone}) == definition


def test_a_definition_round_trips_through_data():
    assert FlowDefinition.from_mapping(INTAKE_V1.to_mapping()) == INTAKE_V1


def test_a_file_that_does_not_parse_fails_naming_the_file():
    with pytest.raises(DefinitionError, match=r"broken\.toml: cannot parse"):
        load_definition(FLOWS / "broken.toml")


def test_a_file_with_an_unknown_extension_fails_naming_the_file(tmp_path):
    ends = r"flow\.txt: .* ends in \.toml, \.json, \.yaml or \.yml"
    with pytest.raises(DefinitionError, match=ends):
        load_definition(tmp_path / "flow.txt")


def test_a_missing_file_fails_naming_the_file(tmp_path):
    with pytest.raises(DefinitionError, match=r"absent\.json: cannot read the file"):
        load_definition(tmp_path / "absent.json")


def test_a_malformed_definition_in_a_file_fails_naming_the_file_and_the_step():
    with pytest.raises(DefinitionError, match=r"delivery\.json: .*validator named 'phone'"):
        load_definition(FLOWS / "delivery.json")
    with pytest.raises(DefinitionError, match="step 'phone'"):
        load_definition(FLOWS / "delivery.json")
