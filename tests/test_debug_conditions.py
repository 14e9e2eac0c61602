"""The bisect condition language and the state diff, on state values (no database)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from voxledger.adapters.debug.conditions import Condition, first_version
from voxledger.adapters.debug.diff import Change, diff
from voxledger.domain.conversation import (
    Audio,
    Connection,
    ConversationState,
    Message,
    Role,
    Status,
    Usage,
)
from voxledger.domain.errors import BadInput
from voxledger.domain.flow import FlowState, FlowStatus

T = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)


def conversation(**changes) -> ConversationState:
    values = dict(
        id=uuid4(),
        version=7,
        status=Status.CONNECTED,
        channel="voice",
        participant="alice",
        started_at=T,
        updated_at=T,
        connection=Connection(provider="twilio", error_count=2),
        audio=Audio(),
        usage=Usage(turns=3, interruptions=1),
        messages=(
            Message("m1", Role.USER, "hello", T),
            Message("m2", Role.ASSISTANT, "hi there", T),
        ),
        turns=(),
        current_turn_id=None,
        context={"city": "Berlin", "length": "long"},
        metadata={},
    )
    values.update(changes)
    return ConversationState(**values)


def flow(**changes) -> FlowState:
    values = dict(
        id=uuid4(),
        version=4,
        conversation_id=uuid4(),
        definition="intake",
        definition_version=1,
        mode="design",
        status=FlowStatus.ACTIVE,
        step="city",
        answers={"place": "Main street", "audio_number": 1042},
        rejections=(),
        editing=None,
        started_at=T,
        updated_at=T,
        idle_timeout_s=300.0,
    )
    values.update(changes)
    return FlowState(**values)


def holds(text: str, state=None, current_flow=None) -> bool:
    condition = Condition(text)
    condition.check(ConversationState, {"flow": FlowState})
    return condition.holds(state or conversation(), {"flow": lambda: current_flow})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('status == "connected"', True),
        ('status != "connected"', False),
        ("usage.turns >= 3 and usage.interruptions == 1", True),
        ("usage.turns > 3 or connection.error_count < 3", True),
        ("not (usage.turns > 3)", True),
        ("messages.length == 2", True),
        ('messages.0.content == "hello"', True),
        ('messages.-1.role == "assistant"', True),
        ("messages.5.content == null", True),
        ('status in ["error", "connected"]', True),
        ('status not in ["error", "connected"]', False),
        ('"city" in context', True),
        ('"ell" in messages.0.content', True),
        ('context.length == "long"', True),  # a key named length wins over the count
        ("usage.response_time_ms_avg == 0.0", True),  # derived properties are paths too
        ('last_user_message.content == "hello"', True),
        ("is_active", True),
        ("ended_at", False),
        ("usage.turns == true", False),  # true is not 1 here
        ('usage.turns < "4"', False),  # a number and a text do not order
        ("usage.cost >= 0.0", True),
        ('started_at >= "2026-11-21T14:00:00+00:00"', True),  # times compare as ISO text
        ("channel == 'voice' and participant != null", True),
    ],
)
def test_a_condition_reads_fields_compares_and_combines(text: str, expected: bool) -> None:
    assert holds(text) is expected


def test_flow_paths_read_the_flow_given_for_the_moment_and_are_null_without_one() -> None:
    current = flow()
    assert holds('flow.step == "city"', current_flow=current)
    assert holds('flow.answers.place == "Main street"', current_flow=current)
    assert holds('"city" not in flow.answers', current_flow=current)
    assert holds("flow.answers.audio_number > 1000", current_flow=current)
    assert holds("flow == null", current_flow=None)
    assert not holds('flow.step == "city"', current_flow=None)


def test_a_related_root_is_computed_only_when_the_condition_reads_it() -> None:
    calls = []
    condition = Condition('status == "connected" or flow.step == "x"')
    assert condition.holds(conversation(), {"flow": lambda: calls.append(1)})
    assert calls == []  # `or` stopped at its first true operand
    Condition('flow.step == "x" and flow.mode == "y"').holds(
        conversation(), {"flow": lambda: calls.append(1)}
    )
    assert calls == [1]  # once per evaluation, however many paths read it


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("usage.turn > 1", "unknown field 'usage.turn': usage has audio_seconds"),
        ("flow.stepp", "unknown field 'flow.stepp'"),
        ("usage.turns.x", "usage.turns is a single value"),
        ("messages.first", "messages is a list; use a number or length"),
        ("nothing", "unknown field 'nothing'"),
    ],
)
def test_a_path_the_state_does_not_have_is_refused_before_anything_runs(
    text: str, message: str
) -> None:
    with pytest.raises(BadInput, match=message.replace(".", r"\.").replace("(", r"\(")):
        Condition(text).check(ConversationState, {"flow": FlowState})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty condition"),
        ("status = 1", "column 8: unexpected '='"),
        ('status == "open', "text without its closing quote"),
        ("usage.turns >", "expected a value or a path, found 'the end'"),
        ("(status == 1", "expected ')'"),
        ("__class__ == 1", "unexpected '_'"),
        ("status == 1 1", "unexpected '1'"),
        ("__import__('os').system('x')", "unexpected '_'"),
    ],
)
def test_text_that_is_not_a_condition_is_refused_with_its_column(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        Condition(text)


def test_binary_search_finds_the_first_version_of_a_monotone_condition() -> None:
    tested: list[int] = []

    def from_37(version: int) -> bool:
        tested.append(version)
        return version >= 37

    assert first_version(1, 1000, from_37) == 37
    assert len(tested) <= 11  # the last version, then log2(1000) halvings
    assert first_version(1, 1000, lambda v: False) is None
    assert first_version(1, 1, lambda v: True) == 1


def test_diff_names_changed_scalars_nested_fields_and_added_or_removed_items() -> None:
    old = conversation()
    new = conversation(
        id=old.id,
        status=Status.PROCESSING,
        usage=Usage(turns=4, interruptions=1),
        messages=(*old.messages, Message("m3", Role.USER, "bye", T)),
        context={"length": "long", "mood": "calm"},
    )
    assert diff(old, new) == [
        Change("status", "changed", Status.CONNECTED, Status.PROCESSING),
        Change("usage.turns", "changed", 3, 4),
        Change("messages.2", "added", new=new.messages[2]),
        Change("context.city", "removed", old="Berlin"),
        Change("context.mood", "added", new="calm"),
    ]
    assert diff(new, new) == []


def test_diff_tells_values_apart_that_python_calls_equal() -> None:
    old, new = flow(answers={"n": 1}), flow(answers={"n": True})
    assert diff(old, flow(id=old.id, conversation_id=old.conversation_id, answers={"n": True})) == [
        Change("answers.n", "changed", 1, True)
    ]
    assert new.answers == old.answers  # which is why the diff does not trust ==
