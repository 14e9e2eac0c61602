"""Specifications of actions on the Flow aggregate alone (no database): a definition names
the actions of each way a run ends; each attempt's start and outcome is an event on the
run's stream, and the policy (an interrupted attempt counts, `max_attempts` in all) decides
the next attempt."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from voxledger.domain.errors import DefinitionError, InvalidTransition, ValidationFailed
from voxledger.domain.flow import Flow, FlowStatus
from voxledger.domain.flow_definition import FlowDefinition

T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)


def notify(run):
    return None


ACTIONS = {"notify": notify, "archive": notify, "goodbye": notify}

ORDER = {
    "name": "order",
    "version": 2,
    "on_complete": ["notify", "archive"],
    "on_cancel": ["goodbye"],
    "steps": [
        {"name": "item", "prompt": "Which item?", "next": "count"},
        {"name": "count", "prompt": "How many?", "validator": {"type": "integer", "min": 1}},
    ],
}


def definition(**changes) -> FlowDefinition:
    return FlowDefinition.from_mapping({**ORDER, **changes}, actions=ACTIONS)


def ended(status: FlowStatus = FlowStatus.COMPLETED) -> Flow:
    flow = Flow.begin(uuid4(), definition(), at=T0)
    flow.answer(definition(), "soup", at=T0 + timedelta(seconds=1))
    if status is FlowStatus.COMPLETED:
        flow.answer(definition(), "2", at=T0 + timedelta(seconds=2))
    else:
        flow.cancel("left", at=T0 + timedelta(seconds=2))
    flow.collect_events()
    return flow


def new_events(flow: Flow) -> list[tuple[str, dict]]:
    return [
        (type(e).__name__, {k: v for k, v in vars(e).items() if not k.startswith("origin")})
        for e in flow.collect_events()
    ]


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_definition_lists_the_actions_of_each_way_a_run_ends() -> None:
    order = definition()
    assert [a.name for a in order.actions_for("completed")] == ["notify", "archive"]
    assert [a.name for a in order.actions_for("cancelled")] == ["goodbye"]
    assert order.actions_for("expired") == () and order.actions_for("active") == ()
    assert order.to_mapping()["on_complete"] == ["notify", "archive"]


def test_an_action_no_function_is_registered_for_is_a_problem_of_the_definition() -> None:
    with pytest.raises(DefinitionError) as refused:
        FlowDefinition.from_mapping({**ORDER, "on_expire": ["nope", "notify", "notify"]},
                                    actions=ACTIONS)  # fmt: skip
    assert [str(p) for p in refused.value.problems] == [
        "flow 'order' v2: no action named 'nope' is registered (on_expire)",
        "flow 'order' v2: action 'notify' is listed twice in on_expire",
    ]


def test_starting_an_action_records_its_first_attempt_and_gives_the_run_to_the_action() -> None:
    flow = ended()
    run = flow.start_action(definition(), "notify", max_attempts=3, at=at(10))
    assert new_events(flow) == [
        ("ActionStarted", {"timestamp": at(10), "action": "notify", "attempt": 1})
    ]
    assert run is not None
    assert (run.status, run.data, run.attempt, run.action) == (
        "completed", {"item": "soup", "count": 2}, 1, "notify"
    )  # fmt: skip
    assert (run.flow_id, run.version, run.ended_at, run.key) == (
        flow.id, 2, at(2), f"{flow.id}/notify"
    )  # fmt: skip


def test_a_succeeded_action_is_never_started_again() -> None:
    flow = ended()
    flow.start_action(definition(), "notify", max_attempts=3, at=at(10))
    flow.finish_action("notify", 1, result={"ticket": 7}, max_attempts=3, at=at(11))
    assert new_events(flow)[-1] == (
        "ActionSucceeded",
        {"timestamp": at(11), "action": "notify", "attempt": 1, "result": {"ticket": 7}},
    )
    assert flow.start_action(definition(), "notify", max_attempts=3, at=at(12)) is None
    assert new_events(flow) == []
    assert flow.state().actions["notify"].done


def test_an_interrupted_attempt_counts_and_the_next_one_follows_it() -> None:
    flow = ended()
    flow.start_action(definition(), "notify", max_attempts=3, at=at(10))
    # No outcome was recorded (the subscriber died): the next subscriber tries again.
    again = flow.start_action(definition(), "notify", max_attempts=3, at=at(20))
    assert again is not None and again.attempt == 2 and again.key == f"{flow.id}/notify"
    assert [name for name, _ in new_events(flow)] == ["ActionStarted", "ActionStarted"]


def test_an_interrupted_last_attempt_is_recorded_as_a_final_failure() -> None:
    flow = ended()
    flow.start_action(definition(), "notify", max_attempts=2, at=at(10))
    flow.start_action(definition(), "notify", max_attempts=2, at=at(20))
    new_events(flow)
    assert flow.start_action(definition(), "notify", max_attempts=2, at=at(30)) is None
    assert new_events(flow) == [
        (
            "ActionFailed",
            {
                "timestamp": at(30),
                "action": "notify",
                "attempt": 2,
                "error": "interrupted: attempt 2 recorded no outcome",
                "final": True,
            },
        )
    ]
    assert flow.start_action(definition(), "notify", max_attempts=2, at=at(40)) is None
    assert new_events(flow) == []


def test_a_failed_attempt_is_tried_again_until_the_last_which_is_final() -> None:
    flow = ended()
    for attempt in (1, 2):
        run = flow.start_action(definition(), "archive", max_attempts=2, at=at(10 * attempt))
        assert run is not None and run.attempt == attempt
        flow.finish_action("archive", attempt, error="OSError: disk full", max_attempts=2,
                           at=at(10 * attempt + 1))  # fmt: skip
    finals = [data["final"] for name, data in new_events(flow) if name == "ActionFailed"]
    assert finals == [False, True]
    assert flow.start_action(definition(), "archive", max_attempts=2, at=at(30)) is None


def test_a_cancelled_run_runs_the_cancel_actions_with_its_answers_so_far() -> None:
    flow = ended(FlowStatus.CANCELLED)
    run = flow.start_action(definition(), "goodbye", max_attempts=3, at=at(10))
    assert run is not None and (run.status, run.data) == ("cancelled", {"item": "soup"})
    with pytest.raises(ValidationFailed, match=r"has no action 'notify' \(its actions: goodbye"):
        flow.start_action(definition(), "notify", max_attempts=3, at=at(11))


def test_an_active_run_runs_no_action() -> None:
    flow = Flow.begin(uuid4(), definition(), at=T0)
    with pytest.raises(InvalidTransition, match="is active; its actions run once it ends"):
        flow.start_action(definition(), "notify", max_attempts=3, at=at(1))


def test_an_outcome_for_an_attempt_that_is_not_running_is_refused() -> None:
    flow = ended()
    with pytest.raises(InvalidTransition, match="'notify' attempt 1 is not running"):
        flow.finish_action("notify", 1, max_attempts=3, at=at(1))
    flow.start_action(definition(), "notify", max_attempts=3, at=at(2))
    with pytest.raises(InvalidTransition, match="'notify' attempt 2 is not running"):
        flow.finish_action("notify", 2, max_attempts=3, at=at(3))
