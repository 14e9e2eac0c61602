"""Specifications of flow definitions: checks at load time, branching, paths and prompts."""

import pytest

from voxledger.domain.errors import DefinitionError, NotFound, ValidationFailed
from voxledger.domain.flow_definition import Branch, FlowDefinition, FlowRegistry, Rule, Step
from voxledger.domain.intake import INTAKE_V1, builtin_registry
from voxledger.domain.validators import integer, text, yes_no


def ask(name: str, next=None, **extra) -> dict:
    step = {"name": name, "field": name, "prompt": f"{name}?", **extra}
    return step if next is None else {**step, "next": next}


def confirm(**extra) -> dict:
    return {"name": "confirm", "kind": "confirm", "prompt": "All correct?", **extra}


def flow(*steps: dict, **extra) -> FlowDefinition:
    return FlowDefinition.from_mapping({"name": "t", "version": 1, "steps": list(steps), **extra})


def fails(message: str):
    return pytest.raises(DefinitionError, match=message)


# --- malformed definitions fail when loaded -------------------------------------------------


def test_a_definition_with_no_steps_fails():
    with fails("flow 't' v1: it has no steps"):
        flow()


def test_a_definition_with_an_unknown_next_step_fails_naming_the_step():
    with fails("step 'a': unknown next step 'nowhere'"):
        flow(ask("a", "nowhere"))


def test_a_definition_with_an_unknown_step_in_a_branch_fails_naming_the_step():
    branch = {"when": [{"field": "a", "equals": "x", "goto": "nowhere"}], "else": "b"}
    with fails("step 'a': unknown next step 'nowhere'"):
        flow(ask("a", branch), ask("b"))


def test_a_definition_with_an_unreachable_step_fails_naming_the_step():
    with fails("step 'b': unreachable"):
        flow(ask("a"), ask("b"))


def test_a_definition_with_a_cycle_with_no_exit_fails_naming_the_step():
    with fails("step 'a': in a cycle with no exit"):
        flow(ask("a", "b"), ask("b", "a"))


def test_a_cycle_with_an_exit_is_allowed():
    again = {"when": [{"field": "b", "equals": "again", "goto": "a"}]}
    looping = flow(ask("a", "b"), ask("b", again))
    assert looping.next_step("b", None, {"b": "again"}) == "a"
    assert looping.next_step("b", None, {"b": "done"}) is None
    assert looping.path(None, {"b": "again"}) == ["a", "b"]


def test_a_definition_asking_a_field_twice_fails_naming_the_step():
    with fails("step 'b': duplicate field 'a', also asked by step 'a'"):
        flow(ask("a", "b"), ask("b", field="a"))


def test_a_definition_with_two_steps_of_one_name_fails_naming_the_step():
    with fails("step 'a': duplicate step name"):
        flow(ask("a", "a"), ask("a", field="other"))


def test_a_confirm_step_that_is_not_last_fails_naming_the_step():
    with fails("step 'confirm': a confirm step must be last on every path"):
        flow(ask("a", "confirm"), confirm(next="b"), ask("b"))


def test_an_ask_step_without_a_field_collects_a_field_named_like_the_step():
    nameless = flow({"name": "a", "prompt": "?"})
    assert nameless.step("a").field == "a" and nameless.fields == ("a",)
    assert FlowDefinition.from_mapping(nameless.to_mapping()) == nameless


def test_an_ask_step_with_an_empty_field_fails_naming_the_step():
    with fails("step 'a': an ask step needs a field"):
        flow({"name": "a", "field": "", "prompt": "?"})


def test_a_branch_on_an_unknown_mode_fails_naming_the_step_and_the_modes():
    branch = {"when": [{"mode": "desing", "goto": "b"}], "else": "b"}
    with fails(r"step 'a': unknown mode 'desing' in branch \(modes: design\)"):
        flow(ask("a", branch), ask("b"), modes=["design"])


def test_a_branch_on_a_field_no_step_asks_fails_naming_the_step():
    branch = {"when": [{"field": "colour", "equals": "red", "goto": "b"}]}
    with fails("step 'a': branch on unknown field 'colour'"):
        flow(ask("a", branch), ask("b"))


def test_a_definition_with_version_zero_fails():
    with fails("version must be 1 or more, not 0"):
        flow(ask("a"), version=0)


def test_an_unknown_validator_type_fails_naming_the_step_and_the_type():
    with fails("step 'a': unknown validator type 'colour'"):
        flow(ask("a", validator={"type": "colour"}))


def test_a_misspelt_key_fails_naming_the_step():
    with fails("step 'a': Object contains unknown field `nxt`"):
        flow(ask("a", nxt="b"))


def test_a_definition_built_in_python_runs_the_same_checks():
    with fails("step 'a': unknown next step 'nowhere'"):
        FlowDefinition(name="t", version=1, steps=(Step.ask("a", "?", text(), "nowhere"),))


# --- moving through a definition --------------------------------------------------------------


def test_the_intake_path_in_design_mode_asks_the_city():
    assert INTAKE_V1.path("design") == [
        "audio_number",
        "date",
        "employee",
        "place",
        "building_type",
        "zone",
        "city",
        "confirm",
    ]


def test_the_intake_path_in_interview_mode_asks_the_client():
    assert INTAKE_V1.path("interview") == [
        "audio_number",
        "date",
        "employee",
        "place",
        "building_type",
        "zone",
        "client_name",
        "confirm",
    ]


def test_a_branch_by_answer_chooses_the_next_step():
    school = {
        "when": [{"field": "building", "equals": "school", "goto": "pupils"}],
        "else": "confirm",
    }
    survey = flow(ask("building", school), ask("pupils", "confirm"), confirm())
    assert survey.next_step("building", None, {"building": "school"}) == "pupils"
    assert survey.next_step("building", None, {"building": "office"}) == "confirm"
    assert survey.path(None, {"building": "school"}) == ["building", "pupils", "confirm"]


def test_the_first_step_can_branch_by_mode():
    start = {"when": [{"mode": "pickup", "goto": "office"}], "else": "address"}
    parcel = flow(
        ask("address", "confirm"),
        ask("office", "confirm"),
        confirm(),
        modes=["courier", "pickup"],
        start=start,
    )
    assert parcel.first_step("pickup") == "office"
    assert parcel.first_step("courier") == "address"
    assert INTAKE_V1.first_step() == "audio_number"


def test_the_step_after_the_confirm_step_is_the_end():
    assert INTAKE_V1.next_step("confirm", "design", {}) is None


def test_a_run_in_a_mode_the_flow_does_not_have_is_refused():
    with pytest.raises(ValidationFailed, match="no mode 'audit' \\(modes: interview, design\\)"):
        INTAKE_V1.first_step("audit")


def test_asking_for_an_unknown_step_names_it():
    with pytest.raises(NotFound, match="flow 'intake' v1 has no step 'colour'"):
        INTAKE_V1.step("colour")


def test_a_step_validates_its_answer_with_its_validator():
    assert INTAKE_V1.validate("audio_number", " 17 ") == 17
    assert INTAKE_V1.validate("building_type", "Warehouse") == "industrial"
    assert INTAKE_V1.validate("confirm", "да") is True
    with pytest.raises(ValidationFailed, match="between 1 and 99999"):
        INTAKE_V1.validate("audio_number", "100000")


def test_the_fields_are_listed_in_step_order():
    assert INTAKE_V1.fields == (
        "audio_number",
        "date",
        "employee",
        "place",
        "building_type",
        "zone",
        "city",
        "client_name",
    )


def test_a_prompt_fills_in_the_answers_so_far():
    assert INTAKE_V1.prompt("city", {"place": "Lyceum 5"}) == "Which city is Lyceum 5 in?"
    assert INTAKE_V1.prompt("city", {}) == "Which city is {place} in?"


def test_the_confirm_prompt_lists_every_answer_labelled_in_step_order():
    answers = {
        "client_name": "ACME",
        "audio_number": 17,
        "date": "2026-11-21",
        "employee": "Anna",
        "place": "Lyceum 5",
        "building_type": "school",
        "zone": "Hall",
    }
    assert INTAKE_V1.prompt("confirm", answers) == (
        "Please check the report for audio 17. Reply yes to save it, or no to change something."
        "\n\nAudio number: 17\nDate: 2026-11-21\nEmployee: Anna\nPlace: Lyceum 5"
        "\nBuilding type: school\nZone: Hall\nClient name: ACME"
    )


def test_the_confirm_summary_uses_a_step_label_and_shows_yes_or_no():
    survey = FlowDefinition(
        name="t",
        version=1,
        steps=(
            Step.ask("n", "How many?", integer(), "lift", label="Number of floors"),
            Step.ask("lift", "Is there a lift?", yes_no(), "confirm"),
            Step.confirm("confirm", "Correct?"),
        ),
    )
    assert survey.prompt("confirm", {"n": 3, "lift": False}).splitlines()[2:] == [
        "Number of floors: 3",
        "Lift: no",
    ]


def test_a_definition_built_in_python_equals_the_same_definition_from_data():
    built = FlowDefinition(
        name="t",
        version=1,
        modes=("a",),
        steps=(
            Step.ask("x", "x?", text(), Branch(when=(Rule(mode="a", goto="y"),), otherwise=None)),
            Step.ask("y", "y?", text()),
        ),
    )
    assert built == flow(
        ask("x", {"when": [{"mode": "a", "goto": "y"}]}, validator={"type": "text"}),
        ask("y"),
        modes=["a"],
    )
    assert FlowDefinition.from_mapping(built.to_mapping()) == built


# --- the registry keeps every version ---------------------------------------------------------


def test_the_registry_keeps_every_version_and_gives_the_latest_by_default():
    v2 = FlowDefinition.from_mapping({**INTAKE_V1.to_mapping(), "version": 2, "title": "New"})
    registry = builtin_registry()
    registry.register(v2)
    assert registry.get("intake") is v2
    assert registry.latest("intake") is v2
    assert registry.get("intake", 1) is INTAKE_V1  # a run started on v1 keeps it
    assert registry.all() == [("intake", (1, 2))]


def test_registering_the_same_version_again_with_the_same_content_changes_nothing():
    registry = builtin_registry()
    registry.register(FlowDefinition.from_mapping(INTAKE_V1.to_mapping()))
    assert registry.get("intake") is INTAKE_V1


def test_registering_the_same_version_again_with_different_content_fails():
    changed = FlowDefinition.from_mapping({**INTAKE_V1.to_mapping(), "title": "Changed"})
    with fails("flow 'intake' v1 is already registered with different content"):
        builtin_registry().register(changed)


def test_getting_an_unknown_definition_names_what_is_registered():
    registry = FlowRegistry([INTAKE_V1, flow(ask("a"))])
    registered = r"\(registered: intake v1; t v1\)"
    with pytest.raises(NotFound, match=rf"no flow definition 'intake' v3 {registered}"):
        registry.get("intake", 3)
    with pytest.raises(NotFound, match=r"no flow definition 'survey' \(registered: none\)"):
        FlowRegistry().latest("survey")
