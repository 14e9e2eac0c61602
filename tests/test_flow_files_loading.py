"""Specifications of loading user flows: YAML beside TOML and JSON, files and folders,
every problem named with its file, the code flows name, and the composition root taking
flows from arguments or from $VOXLEDGER_FLOWS and $VOXLEDGER_CODE."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pytest
import yaml

from voxledger.adapters.bootstrap import open_engine, open_flows
from voxledger.adapters.flow_files import check_files, load_code, load_definition, load_flows
from voxledger.domain.errors import BadInput, DefinitionError
from voxledger.domain.flow_definition import FlowRegistry
from voxledger.domain.intake import INTAKE_V1

FLOWS = Path(__file__).parent / "fixtures" / "flows"

HOOK_CODE = """
def shout(raw):
    return raw.strip().upper()

def greet(mode, answers):
    return f"Hello in {mode} mode"

VALIDATORS = {"shout": shout}
HOOKS = {"greet": greet}
"""

HOOKED = """
name = "hooked"
version = 1
modes = ["warm"]

[[steps]]
name = "word"
prompt_hook = "greet"
validator = { type = "custom", name = "shout" }
"""


def test_a_yaml_file_loads_like_toml_and_json(tmp_path: Path) -> None:
    survey = load_definition(FLOWS / "survey.yaml")
    assert (survey.name, survey.version, survey.modes) == ("survey", 3, ("short", "long"))
    assert survey.step("callback").field == "callback_at"
    assert survey.path("long", {"rating": 1, "contact_ok": False}) == [
        "visits", "rating", "complaint", "contact_ok",
    ]  # fmt: skip
    for suffix, dump in ((".json", json.dumps), (".yml", yaml.safe_dump)):
        copy = tmp_path / f"survey{suffix}"
        copy.write_text(dump(survey.to_mapping()), encoding="utf-8")
        assert load_definition(copy) == survey


def test_yaml_is_read_safely_without_running_its_tags(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['true']\nversion: 1\n")
    with pytest.raises(DefinitionError, match=r"evil\.yaml: cannot parse: could not determine"):
        load_definition(evil)


def test_a_data_file_needs_no_field_on_an_ask_step(tmp_path: Path) -> None:
    path = tmp_path / "short.toml"
    path.write_text('name = "short"\nversion = 1\n[[steps]]\nname = "city"\nprompt = "City?"\n')
    assert load_definition(path).fields == ("city",)


def test_a_folder_loads_every_definition_file_in_it_in_name_order(tmp_path: Path) -> None:
    shutil.copy(FLOWS / "survey.yaml", tmp_path / "b_survey.yaml")
    shutil.copy(FLOWS / "delivery.json", tmp_path / "a_delivery.json")
    (tmp_path / "notes.txt").write_text("not a flow")
    (tmp_path / "nested").mkdir()
    shutil.copy(FLOWS / "broken.toml", tmp_path / "nested" / "broken.toml")
    loaded = load_flows([tmp_path], {"phone": str})
    assert [(d.name, d.version) for d in loaded] == [("delivery", 2), ("survey", 3)]


def test_every_problem_in_every_file_is_named_with_its_file() -> None:
    paths = [FLOWS / "wrong", FLOWS / "unsound" / "problems.toml", FLOWS / "broken.toml"]
    definitions, problems = check_files(paths)
    assert definitions == []
    files = {Path(p.file).name for p in problems}
    assert files == {
        "no_steps.yaml", "unknown_key.json", "validator_option.yaml", "version_text.toml",
        "problems.toml", "broken.toml",
    }  # fmt: skip
    lines = [str(p) for p in problems]
    unknown_key = FLOWS / "wrong" / "unknown_key.json"
    assert f"{unknown_key}: flow 'wrong' v1: step 'a': Object contains unknown field `nxt`" in lines
    unsound = [p for p in problems if p.file.endswith("problems.toml")]
    assert {p.step for p in unsound} == {"size", "orphan", "loop"}
    assert len(unsound) == 8
    with pytest.raises(DefinitionError) as refused:
        load_flows(paths)
    assert [str(p) for p in refused.value.problems] == lines


def test_a_missing_path_and_an_empty_folder_are_problems(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _, problems = check_files([tmp_path / "empty", tmp_path / "absent.toml"])
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'empty'}: no .toml, .json, .yaml or .yml files in this folder",
        f"{tmp_path / 'absent.toml'}: no such file or folder",
    ]


def test_one_version_defined_twice_with_different_content_is_a_problem(tmp_path: Path) -> None:
    data = tomllib.loads((FLOWS.parent.parent.parent / "domain" / "intake.toml").read_text())
    (tmp_path / "a.json").write_text(json.dumps(data))
    (tmp_path / "b.json").write_text(json.dumps({**data, "title": "Changed"}))
    (tmp_path / "c.json").write_text(json.dumps(data))  # the same content again: no problem
    definitions, problems = check_files([tmp_path])
    assert definitions == [INTAKE_V1]
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'b.json'}: flow 'intake' v1: also defined in {tmp_path / 'a.json'} with "
        "different content; give the change a new version"
    ]


def test_flow_code_is_loaded_from_a_file_or_a_module(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "shop_hooks.py").write_text(HOOK_CODE)
    by_file = load_code([str(tmp_path / "shop_hooks.py")])
    monkeypatch.syspath_prepend(str(tmp_path))
    by_name = load_code(["shop_hooks"])
    for code in (by_file, by_name):
        assert code.validators["shout"](" hi ") == "HI"
        assert code.hooks["greet"]("warm", {}) == "Hello in warm mode"


def test_flow_code_that_fails_or_names_no_functions_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('no luck')\n")
    (tmp_path / "odd.py").write_text("HOOKS = {'x': 42}\n")
    with pytest.raises(BadInput, match=r"broken\.py: cannot load the code: RuntimeError: no luck"):
        load_code([str(tmp_path / "broken.py")])
    with pytest.raises(BadInput, match=r"odd\.py: HOOKS must be a dict of names to functions"):
        load_code([str(tmp_path / "odd.py")])
    with pytest.raises(BadInput, match="no_such_module: cannot load the code: ModuleNotFound"):
        load_code(["no_such_module"])


def test_open_flows_registers_user_flows_beside_the_built_in_ones(tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text(HOOK_CODE)
    (tmp_path / "hooked.toml").write_text(HOOKED)
    registry = open_flows(
        [tmp_path / "hooked.toml", load_definition(FLOWS / "survey.yaml")],
        code=[str(tmp_path / "hooks.py")],
    )
    assert [name for name, _ in registry.all()] == ["hooked", "intake", "survey"]
    hooked = registry.get("hooked")
    assert hooked.prompt("word", {}, "warm") == "Hello in warm mode"
    assert hooked.validate("word", "ok") == "OK"
    given = FlowRegistry([INTAKE_V1])
    assert open_flows(given) is given


def test_open_flows_reads_the_environment_when_given_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hooks.py").write_text(HOOK_CODE)
    (tmp_path / "hooked.toml").write_text(HOOKED)
    folder = tmp_path / "more"
    folder.mkdir()
    shutil.copy(FLOWS / "survey.yaml", folder)
    monkeypatch.setenv("VOXLEDGER_FLOWS", f"{tmp_path / 'hooked.toml'}:{folder}")
    monkeypatch.setenv("VOXLEDGER_CODE", str(tmp_path / "hooks.py"))
    assert [name for name, _ in open_flows().all()] == ["hooked", "intake", "survey"]
    assert [name for name, _ in open_flows([]).all()] == ["intake"]  # given: no environment


def test_user_code_cannot_be_missing_for_a_flow_that_names_it(tmp_path: Path) -> None:
    (tmp_path / "hooked.toml").write_text(HOOKED)
    with pytest.raises(DefinitionError) as refused:
        open_flows([tmp_path / "hooked.toml"], code=[])
    assert [p.reason for p in refused.value.problems] == [
        "no hook named 'greet' is registered (prompt_hook)",
        "no custom validator named 'shout' is registered",
    ]


def test_a_broken_flow_file_stops_open_engine_before_any_database_is_touched(
    tmp_path: Path,
) -> None:
    with pytest.raises(DefinitionError, match=r"broken\.toml: cannot parse"):
        open_engine("postgresql://nobody@127.0.0.1:1/none", flows=[FLOWS / "broken.toml"])


def test_open_engine_runs_flows_from_a_path(database_url: str, schema: str, clock) -> None:
    with open_engine(
        database_url, schema=schema, clock=clock, flows=FLOWS / "survey.yaml"
    ) as engine:
        cid = engine.start_conversation("test")
        reply = engine.start_flow(cid, "survey", "short")
        assert reply.step == "rating"
        reply = engine.answer(reply.flow_id, "5")
        reply = engine.answer(reply.flow_id, "Staff and prices")
        assert engine.get_flow(reply.flow_id).answers["liked"] == ["service", "prices"]
        reply = engine.answer(reply.flow_id, "no comment")
        assert reply.step == "contact_ok"
        assert engine.get_flow(reply.flow_id).answers["spend"] is None
