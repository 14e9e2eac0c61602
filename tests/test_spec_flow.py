"""Specifications of the Flow aggregate alone: given a run's events, when a command, then the
events it records or the error that refuses it (no database, no Engine)."""

from __future__ import annotations

from uuid import UUID

import pytest
from spec import at, fact, given, history, refused, when

from voxledger.domain.errors import FlowExpired, InvalidTransition, ValidationFailed
from voxledger.domain.flow import STATUS_EVENTS, Flow, FlowStatus
from voxledger.domain.flow_definition import FlowDefinition
from voxledger.domain.flow_steps import Branch, Rule, Step
from voxledger.domain.validators import integer, text

F = Flow
CONVERSATION = UUID(int=42)
# Two modes; the visit mode asks the city, the call mode the client; then the confirmation.
REPORT = FlowDefinition(
    name="report",
    version=3,
    modes=("visit", "call"),
    idle_timeout_s=300.0,
    steps=(
        Step.ask("number", "Which number?", integer(min=1, max=999), "place"),
        Step.ask(
            "place",
            "Which place?",
            text(max_length=50),
            Branch(when=(Rule(mode="visit", goto="city"),), otherwise="client"),
        ),
        Step.ask("city", "Which city is {place} in?", text(max_length=50), "confirm"),
        Step.ask("client", "Who is the client?", text(max_length=50), "confirm"),
        Step.confirm("confirm", "Save report {number}?"),
    ),
)
STARTED = fact(
    F.Started,
    conversation_id=CONVERSATION,
    definition="report",
    definition_version=3,
    mode="visit",
    step="number",
    idle_timeout_s=300.0,
)
NUMBER = fact(F.AnswerAccepted, step="number", field="number", value=7, next_step="place")
PLACE = fact(F.AnswerAccepted, step="place", field="place", value="Depot", next_step="city")
CITY = fact(F.AnswerAccepted, step="city", field="city", value="Kazan", next_step="confirm")
AT_CONFIRM = (STARTED, NUMBER, PLACE, CITY)


def test_a_run_starts_at_the_first_step_of_its_mode_with_its_definitions_version() -> None:
    flow = F.begin(CONVERSATION, REPORT, "call", at=at(0), flow_id=UUID(int=1))
    assert when(flow, lambda f: None) == [
        ("Started", {"conversation_id": CONVERSATION, "definition": "report",
                     "definition_version": 3, "mode": "call", "step": "number",
                     "idle_timeout_s": 300.0}),
    ]  # fmt: skip
    assert (flow.status, flow.step) == (FlowStatus.ACTIVE, "number")


def test_a_definition_with_modes_needs_one_to_start() -> None:
    with pytest.raises(ValidationFailed, match="needs a mode: one of visit, call"):
        F.begin(CONVERSATION, REPORT, at=at(0))


def test_an_accepted_answer_is_stored_normalised_and_the_run_moves_on_by_its_mode() -> None:
    flow = given(F, STARTED, NUMBER)
    assert when(flow, lambda f: f.answer(REPORT, " Depot ", at=at(5))) == [
        ("AnswerAccepted", {"step": "place", "field": "place", "value": "Depot",
                            "next_step": "city"}),
    ]  # fmt: skip
    assert flow.answers == {"number": 7, "place": "Depot"} and flow.step == "city"


def test_a_refused_answer_is_recorded_with_its_reason_and_the_run_stays() -> None:
    flow = given(F, STARTED)
    outcome = when(flow, lambda f: f.answer(REPORT, "a lot", at=at(5)))
    assert outcome == [
        (
            "AnswerRejected",
            {
                "step": "number",
                "raw": "a lot",
                "reason": "Please send a whole number between 1 and 999.",
            },
        ),
    ]
    assert (flow.step, flow.answers) == ("number", {})
    assert [(r.step, r.raw, r.at) for r in flow.rejections] == [("number", "a lot", at(5))]


def test_an_answer_meant_for_a_step_the_run_has_left_is_refused() -> None:
    flow = given(F, STARTED, NUMBER)
    outcome = when(flow, lambda f: f.answer(REPORT, "8", expected_step="number", at=at(5)))
    assert refused(outcome, InvalidTransition, "has moved on from 'number' to 'place'")


def test_editing_a_field_from_confirm_returns_to_confirm() -> None:
    flow = given(F, *AT_CONFIRM)
    assert when(flow, lambda f: f.edit(REPORT, "number", at=at(5))) == [
        ("EditRequested", {"field": "number", "step": "number", "return_to": "confirm"}),
    ]
    assert when(flow, lambda f: f.answer(REPORT, "9", at=at(6))) == [
        ("FieldEdited", {"step": "number", "field": "number", "previous": 7, "value": 9,
                         "next_step": "confirm"}),
    ]  # fmt: skip
    assert (flow.step, flow.editing, flow.answers["number"]) == ("confirm", None, 9)


def test_an_edit_that_opens_another_branch_asks_its_unanswered_step_first() -> None:
    pets = FlowDefinition(
        name="pets",
        version=1,
        steps=(
            Step.ask(
                "count",
                "How many pets?",
                integer(min=0),
                Branch(when=(Rule(field="count", equals=0, goto="confirm"),), otherwise="names"),
            ),
            Step.ask("names", "Their names?", text(), "confirm"),
            Step.confirm("confirm", "Save?"),
        ),
    )
    started = fact(
        F.Started,
        conversation_id=CONVERSATION,
        definition="pets",
        definition_version=1,
        mode=None,
        step="count",
        idle_timeout_s=None,
    )
    none = fact(F.AnswerAccepted, step="count", field="count", value=0, next_step="confirm")
    again = fact(F.EditRequested, field="count", step="count", return_to="confirm")
    flow = given(F, started, none, again)
    assert when(flow, lambda f: f.answer(pets, "2", at=at(9))) == [
        ("FieldEdited", {"step": "count", "field": "count", "previous": 0, "value": 2,
                         "next_step": "names"}),
    ]  # fmt: skip
    assert (flow.step, flow.editing) == ("names", None)


def test_only_an_answered_field_can_be_edited() -> None:
    outcome = when(given(F, STARTED, NUMBER), lambda f: f.edit(REPORT, "city", at=at(5)))
    assert refused(outcome, ValidationFailed, "no answer to edit for 'city' (answered: number)")


def test_undo_withdraws_the_last_answer_and_asks_its_step_again() -> None:
    flow = given(F, STARTED, NUMBER, PLACE)
    assert when(flow, lambda f: f.undo(REPORT, at=at(5))) == [
        ("AnswerWithdrawn", {"step": "place", "field": "place", "previous": "Depot"}),
    ]
    assert (flow.step, flow.answers) == ("place", {"number": 7})
    flow.undo(REPORT, at=at(6))
    flow.collect_events()
    assert refused(when(flow, lambda f: f.undo(REPORT, at=at(7))), InvalidTransition, "nothing")


def test_yes_at_the_confirmation_completes_the_run_with_its_data() -> None:
    flow = given(F, *AT_CONFIRM)
    assert when(flow, lambda f: f.answer(REPORT, "yes", at=at(5))) == [
        ("Confirmed", {}),
        ("Completed", {"data": {"number": 7, "place": "Depot", "city": "Kazan"}}),
    ]
    assert (flow.status, flow.step) == (FlowStatus.COMPLETED, None)


def test_no_at_the_confirmation_is_recorded_and_the_run_waits_there() -> None:
    flow = given(F, *AT_CONFIRM)
    assert when(flow, lambda f: f.answer(REPORT, "no", at=at(5))) == [
        ("ConfirmationDeclined", {"step": "confirm"}),
    ]
    assert (flow.status, flow.step) == (FlowStatus.ACTIVE, "confirm")


def test_confirming_before_the_confirmation_step_is_refused() -> None:
    outcome = when(given(F, STARTED, NUMBER), lambda f: f.confirm(REPORT, at=at(5)))
    assert refused(outcome, InvalidTransition, "not at the confirmation")


def test_a_cancelled_run_keeps_its_step_and_takes_no_more_commands() -> None:
    flow = given(F, STARTED, NUMBER)
    assert when(flow, lambda f: f.cancel("wrong form", at=at(5))) == [
        ("Cancelled", {"step": "place", "reason": "wrong form"}),
    ]
    assert (flow.status, flow.step) == (FlowStatus.CANCELLED, "place")
    after = when(flow, lambda f: f.answer(REPORT, "x", at=at(6)))
    assert refused(after, InvalidTransition, "is cancelled")


def test_a_run_idle_past_its_timeout_expires_and_then_refuses_answers() -> None:
    flow = given(F, STARTED, NUMBER)  # its last event at 1 s; the timeout is 300 s
    assert not flow.is_idle_at(at(301))
    assert refused(when(flow, lambda f: f.expire(at=at(301))), InvalidTransition, "not idle")
    assert when(flow, lambda f: f.expire(at=at(302))) == [
        ("Expired", {"step": "place", "idle_s": 301.0}),
    ]
    assert flow.status is FlowStatus.EXPIRED
    assert refused(when(flow, lambda f: f.answer(REPORT, "Depot", at=at(303))), FlowExpired)


def test_a_run_whose_definition_sets_no_timeout_never_expires() -> None:
    patient = fact(
        F.Started,
        conversation_id=CONVERSATION,
        definition="report",
        definition_version=2,
        mode="visit",
        step="number",
        idle_timeout_s=None,
    )
    assert not given(F, patient).is_idle_at(at(10**9))


def test_only_the_start_and_the_ends_of_a_run_change_its_status() -> None:
    assert {cls.__name__ for cls in STATUS_EVENTS} == {
        "Started",
        "Completed",
        "Cancelled",
        "Expired",
    }


@pytest.mark.parametrize(
    ("end", "status"),
    [
        (fact(F.Completed, data={"number": 7}), FlowStatus.COMPLETED),
        (fact(F.Cancelled, step="place", reason=""), FlowStatus.CANCELLED),
        (fact(F.Expired, step="place", idle_s=400.0), FlowStatus.EXPIRED),
    ],
)
def test_each_end_leaves_the_run_in_its_status_for_the_run_and_the_read_models_alike(
    end: tuple[type, dict], status: FlowStatus
) -> None:
    assert given(F, STARTED, NUMBER, end).status is status
    followed = None
    for event in history(F, STARTED, NUMBER, end):
        followed = event.status_after(followed)
    assert followed == status
