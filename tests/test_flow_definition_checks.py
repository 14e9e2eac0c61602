"""Specifications of the checks on a flow definition: every problem is found at once and
named (flow, version, step): names, prompts and their templates, branches that can never
match, unreachable steps, dead ends, hooks."""

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from voxledger.domain.errors import DefinitionError, Problem
from voxledger.domain.flow_definition import FlowDefinition, Hook, Step
from voxledger.domain.validators import text


def ask(name: str, next=None, **extra) -> dict:
    step = {"name": name, "prompt": f"{name}?", **extra}
    return step if next is None else {**step, "next": next}


def confirm(**extra) -> dict:
    return {"name": "confirm", "kind": "confirm", "prompt": "All correct?", **extra}


def flow(*steps: dict, hooks=None, **extra) -> FlowDefinition:
    data = {"name": "t", "version": 1, "steps": list(steps), **extra}
    return FlowDefinition.from_mapping(data, hooks=hooks)


def problems(*steps: dict, hooks=None, **extra) -> list[str]:
    with pytest.raises(DefinitionError) as refused:
        flow(*steps, hooks=hooks, **extra)
    return [str(problem) for problem in refused.value.problems]


def when(*cases: dict, otherwise: str | None = None) -> dict:
    branch: dict = {"when": list(cases)}
    return branch if otherwise is None else {**branch, "else": otherwise}


SIZE = {"type": "choice", "options": ["S", "M", "L"]}


# --- every problem, each named ----------------------------------------------------------------


def test_every_problem_is_reported_at_once_in_step_order_each_naming_flow_version_and_step():
    found = problems(
        ask("a", "b", prompt="Hello {nobody}"),
        ask("b", "nowhere"),
        ask("orphan", "confirm", validator={"type": "colour"}),
        confirm(),
        modes=["x", "x"],
    )
    assert found == [
        "flow 't' v1: mode 'x' is listed twice",
        "flow 't' v1: step 'a': prompt names {nobody}, which is no field of this flow",
        "flow 't' v1: step 'b': unknown next step 'nowhere'",
        "flow 't' v1: step 'orphan': unknown validator type 'colour' (known: text, integer, "
        "date, choice, regex, yes_no, decimal, email, phone, time, datetime, "
        "multiple_choice, custom)",
        "flow 't' v1: step 'orphan': unreachable: no path from the start leads to it",
        "flow 't' v1: step 'confirm': unreachable: no path from the start leads to it",
    ]


def test_a_definition_error_carries_each_problem_as_data():
    with pytest.raises(DefinitionError) as refused:
        flow(ask("a"), ask("b"))
    assert refused.value.problems == (
        Problem(
            reason="unreachable: no path from the start leads to it", flow="t", version=1, step="b"
        ),
    )


def test_steps_of_the_wrong_shape_are_all_reported_not_only_the_first():
    found = problems(
        ask("a", "b", nxt="c"),
        {"name": "b", "prompt": 3},
        {"prompt": "nameless?"},
        ask("c"),
        titel="typo",
    )
    assert found == [
        "flow 't' v1: Object contains unknown field `titel`",
        "flow 't' v1: step 'a': Object contains unknown field `nxt`",
        "flow 't' v1: step 'b': Expected `str`, got `int` - at `$.prompt`",
        "flow 't' v1: step '#3': Object missing required field `name`",
    ]


def test_a_definition_built_in_python_reports_every_problem_too():
    with pytest.raises(DefinitionError) as refused:
        FlowDefinition(
            name="t",
            version=0,
            steps=(Step.ask("a", "?", text(), "nowhere"), Step.ask("a", "?", text(), field="x")),
        )
    assert [str(p) for p in refused.value.problems] == [
        "flow 't' v0: version must be 1 or more, not 0",
        "flow 't' v0: step 'a': duplicate step name",
        "flow 't' v0: step 'a': unknown next step 'nowhere'",
    ]


# --- names and fields -------------------------------------------------------------------------


def test_duplicate_step_names_fields_and_modes_are_problems():
    found = problems(
        ask("a", "b"),
        ask("b", "a2", field="a"),
        {"name": "a", "prompt": "again?"},
        modes=["m", "m"],
    )
    assert "flow 't' v1: mode 'm' is listed twice" in found
    assert "flow 't' v1: step 'b': duplicate field 'a', also asked by step 'a'" in found
    assert "flow 't' v1: step 'a': duplicate step name" in found


def test_a_step_needs_a_prompt_or_a_prompt_hook():
    assert problems(ask("a", prompt="")) == [
        "flow 't' v1: step 'a': it needs a prompt (or a prompt_hook)"
    ]
    hooked = flow(ask("a", prompt="", prompt_hook="greet"), hooks={"greet": lambda m, a: "Hi"})
    assert hooked.prompt("a", {}) == "Hi"


def test_a_confirm_step_cannot_be_optional_nor_collect_a_field():
    found = problems(ask("a", "confirm"), confirm(optional=True, field="ok"))
    assert found == [
        "flow 't' v1: step 'confirm': a confirm step collects no field",
        "flow 't' v1: step 'confirm': a confirm step cannot be optional",
    ]


def test_optional_steps_need_a_skip_word():
    assert problems(ask("a", optional=True), skip_words=[]) == [
        "flow 't' v1: optional steps need at least one skip word (skip_words)"
    ]
    assert problems(ask("a"), skip_words=[" "]) == ["flow 't' v1: a skip word cannot be blank"]


# --- templates --------------------------------------------------------------------------------


def test_a_template_naming_no_field_is_a_problem():
    assert problems(ask("a", "b"), ask("b", prompt="And {colour}?")) == [
        "flow 't' v1: step 'b': prompt names {colour}, which is no field of this flow"
    ]


def test_a_template_naming_a_field_asked_only_later_is_a_problem():
    assert problems(ask("a", "b", prompt="{b} then?"), ask("b")) == [
        "flow 't' v1: step 'a': prompt names {b}, but no step before this one asks it"
    ]


def test_a_template_naming_a_field_of_another_branch_is_a_problem():
    split = when({"field": "a", "equals": "x", "goto": "b"}, otherwise="c")
    assert problems(ask("a", split), ask("b"), ask("c", prompt="{b}?")) == [
        "flow 't' v1: step 'c': prompt names {b}, but no step before this one asks it"
    ]


def test_a_template_may_name_a_field_from_an_earlier_pass_of_a_loop():
    again = when({"field": "more", "equals": True, "goto": "item"})
    looping = flow(
        ask("item", "more", prompt="Another item after {item}?"),
        ask("more", again, validator="yes_no"),
    )
    assert looping.prompt("item", {"item": "tea"}) == "Another item after tea?"


def test_double_braces_are_literal_braces_not_templates():
    literal = flow(ask("a", prompt="Send {{json}} or {{a}}"))
    assert literal.prompt("a", {"a": "x"}) == "Send {json} or {a}"


# --- branches ---------------------------------------------------------------------------------


def test_a_branch_on_a_choice_value_that_is_no_option_is_a_problem():
    split = when({"field": "size", "equals": "XL", "goto": "b"}, otherwise="b")
    assert problems(ask("size", split, validator=SIZE), ask("b")) == [
        "flow 't' v1: step 'size': branch on 'size': 'XL' is not a value its choice validator "
        "gives (options: S, M, L)"
    ]


def test_a_branch_value_written_unlike_the_stored_value_names_the_stored_one():
    split = when({"field": "size", "equals": "s", "goto": "b"}, otherwise="b")
    assert problems(ask("size", split, validator=SIZE), ask("b")) == [
        "flow 't' v1: step 'size': branch on 'size': 's' is not a value its choice validator "
        "gives (the answer 's' is stored as 'S')"
    ]


@pytest.mark.parametrize(
    ("validator", "equals"),
    [
        ({"type": "integer", "min": 1, "max": 5}, 9),
        ({"type": "integer"}, "3"),
        ("yes_no", "yes"),
        ({"type": "decimal", "places": 2}, 12.5),
        ({"type": "text", "max_length": 2}, "abc"),
        ({"type": "time"}, "9pm"),
    ],
)
def test_a_branch_on_a_value_the_validator_never_gives_is_a_problem(validator, equals):
    split = when({"field": "a", "equals": equals, "goto": "b"}, otherwise="b")
    (found,) = problems(ask("a", split, validator=validator), ask("b"))
    assert found.startswith(f"flow 't' v1: step 'a': branch on 'a': {equals!r} is not a value")


@pytest.mark.parametrize(
    ("validator", "equals"),
    [
        ({"type": "integer", "min": 1, "max": 5}, 5),
        ("yes_no", False),
        ({"type": "decimal", "places": 2}, "12.50"),
        ({"type": "time"}, "21:00"),
        ({"type": "custom", "name": "upper"}, "anything"),
    ],
)
def test_a_branch_on_a_value_the_validator_gives_is_sound(validator, equals):
    split = when({"field": "a", "equals": equals, "goto": "b"}, otherwise="b")
    definition = FlowDefinition.from_mapping(
        {"name": "t", "version": 1, "steps": [ask("a", split, validator=validator), ask("b")]},
        {"upper": str.upper},
    )
    assert definition.next_step("a", None, {"a": equals}) == "b"


def test_a_branch_on_a_field_asked_after_it_or_at_the_start_is_a_problem():
    later = when({"field": "b", "equals": "x", "goto": "b"}, otherwise="b")
    assert problems(ask("a", later), ask("b")) == [
        "flow 't' v1: step 'a': branch on field 'b', which no step before this branch asks"
    ]
    start = when({"field": "a", "equals": "x", "goto": "a"}, otherwise="a")
    assert problems(ask("a"), start=start) == [
        "flow 't' v1: start: branch on field 'a' at the start, before any answer"
    ]


def test_contains_is_for_an_option_of_a_multiple_choice_field():
    dishes = {"type": "multiple_choice", "options": ["soup", "cake"]}
    sound = flow(
        ask("dishes", when({"field": "dishes", "contains": "cake", "goto": "b"}), validator=dishes),
        ask("b"),
    )
    assert sound.next_step("dishes", None, {"dishes": ["soup", "cake"]}) == "b"
    assert sound.next_step("dishes", None, {"dishes": ["soup"]}) is None
    no_option = when({"field": "dishes", "contains": "pie", "goto": "b"})
    assert problems(ask("dishes", no_option, validator=dishes), ask("b")) == [
        "flow 't' v1: step 'dishes': branch on 'dishes': 'pie' is not one of its options "
        "(soup, cake)"
    ]
    not_several = when({"field": "size", "contains": "S", "goto": "b"})
    assert problems(ask("size", not_several, validator=SIZE), ask("b")) == [
        "flow 't' v1: step 'size': branch on 'size': contains is for a multiple_choice field, "
        "not a choice one"
    ]


def test_a_case_with_no_value_matches_a_skipped_optional_step():
    skipped = when({"field": "nick", "goto": "why"}, otherwise="confirm")
    definition = flow(ask("nick", skipped, optional=True), ask("why", "confirm"), confirm())
    assert definition.next_step("nick", None, {"nick": None}) == "why"
    assert definition.next_step("nick", None, {"nick": "Bo"}) == "confirm"


def test_a_case_with_no_value_on_a_step_that_is_always_answered_is_a_problem():
    never = when({"field": "nick", "goto": "b"}, otherwise="b")
    assert problems(ask("nick", never), ask("b")) == [
        "flow 't' v1: step 'nick': branch on 'nick': a case with no equals matches a skipped "
        "answer, but step 'nick' is not optional and is always answered here"
    ]


def test_a_case_with_no_value_on_a_field_only_some_paths_ask_is_sound():
    start = when({"mode": "long", "goto": "extra"}, otherwise="last")
    no_extra = when({"field": "extra", "goto": "confirm"}, otherwise="confirm")
    definition = flow(
        ask("extra", "last"), ask("last", no_extra), confirm(), modes=["long", "short"], start=start
    )
    assert definition.path("short") == ["last", "confirm"]


def test_a_branch_case_with_equals_but_no_field_is_a_problem():
    assert problems(ask("a", when({"mode": "m", "equals": 1, "goto": "a"})), modes=["m"]) == [
        "flow 't' v1: step 'a': a branch case with equals or contains needs a field"
    ]


# --- the shape of the flow --------------------------------------------------------------------


def test_a_step_leading_only_into_a_cycle_with_no_exit_is_a_dead_end():
    found = problems(ask("a", "b"), ask("b", "c"), ask("c", "b"))
    assert found == [
        "flow 't' v1: step 'a': a dead end: every path from it runs into a cycle with no exit",
        "flow 't' v1: step 'b': in a cycle with no exit: a dead end, no path from it reaches "
        "the end",
        "flow 't' v1: step 'c': in a cycle with no exit: a dead end, no path from it reaches "
        "the end",
    ]


def test_an_unknown_next_step_is_reported_once_not_as_a_dead_end_too():
    assert problems(ask("a", "nowhere")) == ["flow 't' v1: step 'a': unknown next step 'nowhere'"]


def test_the_start_must_lead_to_a_step_in_every_case():
    start = when({"mode": "m", "goto": "a"})
    assert problems(ask("a"), modes=["m"], start=start) == [
        "flow 't' v1: start: every case must lead to a step"
    ]


# --- hooks ------------------------------------------------------------------------------------


def route(mode, answers):
    return "city" if answers.get("where") == "town" else None


def test_a_hook_chooses_the_next_step_among_its_targets_or_the_else():
    branch = {"hook": "route", "targets": ["city"], "else": "confirm"}
    definition = flow(
        ask("where", branch), ask("city", "confirm"), confirm(), hooks={"route": route}
    )
    assert definition.next_step("where", None, {"where": "town"}) == "city"
    assert definition.next_step("where", None, {"where": "farm"}) == "confirm"


def test_a_hook_choosing_a_step_it_did_not_declare_is_refused():
    sound = flow(
        ask("where", {"hook": "route", "targets": ["other"]}), ask("other"), hooks={"route": route}
    )
    with pytest.raises(DefinitionError, match="hook 'route' chose 'city', which is not one of"):
        sound.next_step("where", None, {"where": "town"})


def test_a_hook_that_fails_is_a_definition_error_naming_it():
    def broken(mode, answers):
        raise KeyError("city")

    sound = flow(ask("a", prompt_hook="broken"), hooks={"broken": broken})
    with pytest.raises(DefinitionError, match="hook 'broken' failed: KeyError: 'city'"):
        sound.prompt("a", {})


def test_a_hook_cannot_change_the_answers_it_reads():
    def meddle(mode, answers):
        answers["a"] = "changed"
        return "?"

    answers = {"a": "kept"}
    with pytest.raises(DefinitionError, match="hook 'meddle' failed: TypeError"):
        flow(ask("a", prompt_hook="meddle"), hooks={"meddle": meddle}).prompt("a", answers)
    assert answers == {"a": "kept"}


def test_unknown_hooks_and_malformed_hook_branches_are_problems():
    found = problems(
        ask("a", {"hook": "nope", "targets": ["b"]}, prompt_hook="gone"),
        ask("b", {"hook": "route", "when": [{"mode": "m", "goto": "c"}], "targets": ["c"]}),
        ask("c", {"hook": "route"}),
        modes=["m"],
        hooks={"route": route},
    )
    assert found == [
        "flow 't' v1: step 'a': no hook named 'gone' is registered (prompt_hook)",
        "flow 't' v1: step 'a': no hook named 'nope' is registered",
        "flow 't' v1: step 'b': a branch has cases (when) or a hook, not both",
        "flow 't' v1: step 'c': a hook branch lists the steps its hook may choose (targets)",
    ]


def test_a_hook_compares_by_name_so_a_definition_round_trips_through_data():
    definition = flow(ask("a", prompt_hook="greet"), hooks={"greet": lambda m, a: "Hi"})
    assert definition.step("a").prompt_hook == Hook("greet", None)
    again = FlowDefinition.from_mapping(definition.to_mapping(), hooks={"greet": print})
    assert again == definition


# --- any data at all --------------------------------------------------------------------------

KEYS = [
    "name",
    "version",
    "steps",
    "next",
    "when",
    "else",
    "field",
    "equals",
    "contains",
    "goto",
    "mode",
    "hook",
    "targets",
    "validator",
    "type",
    "options",
    "optional",
    "kind",
    "prompt",
    "prompt_hook",
    "min",
    "max",
    "places",
    "start",
    "modes",
    "skip_words",
]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10) | st.floats(allow_nan=False, width=32)
    | st.text(max_size=6) | st.sampled_from(["rating", "confirm", "liked", "yes", "integer"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(KEYS), inner,
                                                                 max_size=4),
    max_leaves=8,
)  # fmt: skip
SURVEY = yaml.safe_load(
    (Path(__file__).parent / "fixtures" / "flows" / "survey.yaml").read_text(encoding="utf-8")
)


def places(node, at=()):
    yield at
    children = ()
    if isinstance(node, dict):
        children = node.items()
    elif isinstance(node, list):
        children = enumerate(node)
    for key, child in children:
        yield from places(child, (*at, key))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_a_definition_with_anything_anywhere_is_refused_only_with_a_definition_error(data):
    definition = copy.deepcopy(SURVEY)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.sampled_from(list(places(definition))[1:]))
        parent = definition
        for key in at[:-1]:
            parent = parent[key]
        parent[at[-1]] = data.draw(VALUES)
    try:
        compiled = FlowDefinition.from_mapping(definition)
    except DefinitionError as refused:
        assert refused.problems and all(p.reason for p in refused.problems)
    else:
        assert FlowDefinition.from_mapping(compiled.to_mapping()) == compiled
