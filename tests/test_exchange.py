"""One incoming message, one atomic save (Engine.exchange), and the outbox it feeds: what
the bot decides to send is recorded with the change that caused it, and each delivery's
outcome is recorded once."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID, uuid4

import pytest

from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.conversation import Conversation
from voxledger.domain.conversation_values import Address, DeliveryStatus, OutboundKind, Role
from voxledger.domain.engine import Engine
from voxledger.domain.errors import InvalidTransition, ValidationFailed
from voxledger.domain.exchange import ConversationClosed, Exchange, Inbound
from voxledger.domain.flow import FlowStatus
from voxledger.domain.flow_definition import FlowDefinition

CHAT = Address("4242", None)


def inbound(message_id: str, text: str, *, address: Address | None = CHAT) -> Inbound:
    return Inbound(
        message_id=message_id,
        text=text,
        channel="telegram",
        address=address,
        reply_to=message_id,
        participant="anna",
        chat_metadata={"chat_id": "4242"},
    )


def echo(ex: Exchange) -> None:
    ex.reply(f"you said {ex.inbound.text}", ("a", "b"))


def events_of(engine: Engine, aggregate_id: UUID) -> list[str]:
    return [entry.type for entry in engine.history(aggregate_id)]


def test_a_first_message_opens_the_conversation_and_records_message_reply_and_outbound_at_once(
    engine: Engine,
) -> None:
    cid = uuid4()
    commits = engine.store.commits
    result = engine.exchange(cid, inbound("1", "hello"), echo)
    assert engine.store.commits == commits + 1  # one atomic save
    assert result.opened and result.recorded and not result.duplicate
    assert (result.text, result.choices, result.outbound) == (
        "you said hello",
        ("a", "b"),
        ("1:reply",),
    )
    assert events_of(engine, cid) == ["Started", "MessageAdded", "MessageAdded", "OutboundQueued"]
    state = engine.get_conversation(cid)
    assert [(m.id, m.role) for m in state.messages] == [
        ("1", Role.USER),
        ("1:reply", Role.ASSISTANT),
    ]
    (item,) = state.outbox
    assert (item.kind, item.address, item.text, item.choices) == (
        OutboundKind.REPLY, CHAT, "you said hello", ("a", "b"),
    )  # fmt: skip
    assert item.reply_to == "1" and item.cause == "1"


def test_the_same_message_again_returns_the_first_reply_and_records_nothing(
    engine: Engine,
) -> None:
    cid = uuid4()
    first = engine.exchange(cid, inbound("1", "hello"), echo)
    version = engine.get_conversation(cid).version
    decided: list[str] = []
    again = engine.exchange(cid, inbound("1", "hello"), lambda ex: decided.append("x"))
    assert again.duplicate and not again.recorded and decided == []
    assert (again.text, again.choices) == (first.text, first.choices)
    assert engine.get_conversation(cid).version == version


def test_a_message_the_bot_ignores_records_nothing_not_even_the_conversation(
    engine: Engine,
) -> None:
    cid = uuid4()
    result = engine.exchange(cid, inbound("1", "chatter"), lambda ex: ex.ignore())
    assert not result.recorded
    with pytest.raises(Exception, match="no"):
        engine.get_conversation(cid)


def test_a_reply_without_an_address_is_recorded_but_nothing_is_queued(engine: Engine) -> None:
    cid = uuid4()
    result = engine.exchange(cid, inbound("1", "hello", address=None), echo)
    assert result.outbound == ()
    assert engine.get_conversation(cid).outbox == ()


def test_a_form_runs_through_exchanges_each_saving_conversation_and_form_together(
    engine: Engine,
) -> None:
    cid = uuid4()
    started = engine.exchange(
        cid,
        inbound("1", "/start"),
        lambda ex: ex.reply(ex.start_flow("intake", "interview").prompt or ""),
    )
    assert started.flow_id is not None
    answered = engine.exchange(
        cid, inbound("2", "1042"), lambda ex: ex.reply(ex.answer(ex.inbound.text).prompt or "")
    )
    assert answered.text.startswith("When was the visit?")
    assert engine.get_flow(started.flow_id).answers == {"audio_number": 1042}
    cancelled = engine.exchange(
        cid, inbound("3", "/cancel"), lambda ex: ex.reply(str(ex.cancel("bye").status))
    )
    assert cancelled.text == "cancelled" and cancelled.flow_id is None
    assert engine.get_conversation(cid).active_flow_id is None


def test_a_refused_command_inside_decide_records_nothing_of_it(engine: Engine) -> None:
    cid = uuid4()

    def undo_without_a_form(ex: Exchange) -> None:
        try:
            ex.undo()
        except InvalidTransition as refused:
            ex.reply(str(refused))

    result = engine.exchange(cid, inbound("1", "/back"), undo_without_a_form)
    assert "has no form in progress" in result.text
    assert events_of(engine, cid) == ["Started", "MessageAdded", "MessageAdded", "OutboundQueued"]


def test_a_form_idle_past_its_timeout_expires_as_the_next_message_arrives(
    engine: Engine, clock: object
) -> None:
    cid = uuid4()
    started = engine.exchange(
        cid, inbound("1", "go"), lambda ex: ex.reply(ex.start_flow("intake", "design").prompt or "")
    )
    later = engine.get_flow(started.flow_id).updated_at + timedelta(minutes=10)  # type: ignore[arg-type]
    seen: list[object] = []

    def decide(ex: Exchange) -> None:
        seen.append(ex.expired)
        ex.reply("expired" if ex.expired else "?")

    result = engine.exchange(cid, inbound("2", "1042"), decide, at=later)
    assert seen[0] is not None and result.text == "expired" and result.flow_id is None
    assert engine.get_flow(started.flow_id).status is FlowStatus.EXPIRED  # type: ignore[arg-type]


def test_an_ended_conversation_takes_no_exchange(engine: Engine) -> None:
    cid = uuid4()
    engine.exchange(cid, inbound("1", "hello"), echo)
    engine.end(cid, "done")
    with pytest.raises(ConversationClosed):
        engine.exchange(cid, inbound("2", "again"), echo)


def test_a_concurrent_writer_makes_the_exchange_run_again_on_fresh_state(
    engine: Engine, database_url: str, schema: str
) -> None:
    cid = uuid4()
    engine.exchange(cid, inbound("1", "hello"), echo)  # this engine now holds it in memory
    with open_engine(database_url, schema=schema) as other:
        other.add_message(cid, Role.USER, "meanwhile", message_id="x")
    runs: list[int] = []

    def decide(ex: Exchange) -> None:
        runs.append(1)
        ex.reply(f"messages before: {len(list(ex.newest_messages()))}")

    result = engine.exchange(cid, inbound("2", "hi"), decide)
    assert len(runs) == 2  # the stale copy lost the race; the second run saw the other write
    assert result.text == "messages before: 3"  # 1, its reply, and the other write
    assert [m.id for m in engine.get_conversation(cid).messages][-3:] == ["x", "2", "2:reply"]


def test_correcting_an_answer_changes_it_without_moving_the_form(engine: Engine) -> None:
    cid = uuid4()
    started = engine.exchange(
        cid,
        inbound("1", "go"),
        lambda ex: ex.reply(ex.start_flow("intake", "interview").prompt or ""),
    )
    for n, text in enumerate(["1042", "21.11.2026", "Ivan", "Kazan Arena"], 2):
        engine.exchange(
            cid, inbound(str(n), text), lambda ex: ex.reply(ex.answer(ex.inbound.text).prompt or "")
        )
    flow_id = started.flow_id
    assert engine.get_flow(flow_id).step == "building_type"  # type: ignore[arg-type]
    changed = engine.exchange(
        cid,
        inbound("3e", "1043"),
        lambda ex: ex.reply(ex.correct("audio_number", "1043").prompt or ""),
    )
    state = engine.get_flow(flow_id)  # type: ignore[arg-type]
    assert state.answers["audio_number"] == 1043 and state.step == "building_type"
    assert changed.text.startswith("What kind of building is Kazan Arena?")
    refused = engine.exchange(
        cid,
        inbound("4e", "zero"),
        lambda ex: ex.reply(ex.correct("audio_number", "zero").reason or ""),
    )
    assert refused.text and engine.get_flow(flow_id).answers["audio_number"] == 1043  # type: ignore[arg-type]
    assert engine.history(flow_id)[-1].type == "AnswerRejected"  # type: ignore[arg-type]


def test_delivery_outcomes_are_recorded_once_and_end_the_item(engine: Engine) -> None:
    cid = uuid4()
    engine.exchange(cid, inbound("1", "hello"), echo)
    assert engine.record_delivery_failure(cid, "1:reply", "HTTP 502", final=False)
    (item,) = engine.pending_outbound(cid).items
    assert (item.attempts, item.last_error) == (1, "HTTP 502")
    assert engine.record_delivered(cid, "1:reply", ["77"], complete=False)
    assert engine.pending_outbound(cid).items[0].sent_parts == ("77",)
    assert engine.record_delivered(cid, "1:reply", ["78"])
    assert engine.pending_outbound(cid).items == ()
    version = engine.get_conversation(cid).version
    assert not engine.record_delivered(cid, "1:reply", ["78"])  # again: nothing recorded
    assert not engine.record_delivery_failure(cid, "1:reply", "late", final=True)
    assert engine.get_conversation(cid).version == version
    state = engine.get_conversation(cid)
    assert state.keyboards == ("78",)  # the reply's buttons sit under its last part
    assert state.sent == {"77": "sent", "78": "sent"}


def test_status_reports_only_move_a_sent_message_forward(engine: Engine) -> None:
    cid = uuid4()
    engine.exchange(cid, inbound("1", "hello"), echo)
    engine.record_delivered(cid, "1:reply", ["wamid.1"])
    assert engine.record_delivery_status(cid, "wamid.1", DeliveryStatus.READ)
    assert not engine.record_delivery_status(cid, "wamid.1", DeliveryStatus.DELIVERED)
    assert not engine.record_delivery_status(cid, "wamid.other", DeliveryStatus.READ)
    assert engine.record_delivery_status(cid, "wamid.1", "failed", code=131026, reason="gone")
    assert engine.get_conversation(cid).sent["wamid.1"] == "failed"


def test_a_status_for_a_delivery_another_process_recorded_is_news_not_ignored(
    engine: Engine, database_url: str, schema: str
) -> None:
    cid = uuid4()
    engine.exchange(cid, inbound("1", "hello"), echo)  # this engine now holds it in memory
    with open_engine(database_url, schema=schema) as worker:  # the delivery worker's process
        assert worker.record_delivered(cid, "1:reply", ["wamid.9"])
    # The copy in memory knows no wamid.9; a fresh read does.
    assert engine.record_delivery_status(cid, "wamid.9", DeliveryStatus.DELIVERED)
    assert engine.get_conversation(cid).sent["wamid.9"] == "delivered"
    assert not engine.record_delivered(cid, "1:reply", ["wamid.9"])  # recorded there already


def test_a_failed_delivery_needs_a_reason(engine: Engine) -> None:
    cid = uuid4()
    engine.exchange(cid, inbound("1", "hello"), echo)
    with pytest.raises(ValidationFailed):
        engine.record_delivery_failure(cid, "1:reply", "", final=True)


def test_the_sweep_expires_a_form_and_tells_the_user_in_the_same_save(engine: Engine) -> None:
    cid = uuid4()
    started = engine.exchange(
        cid, inbound("1", "go"), lambda ex: ex.reply(ex.start_flow("intake", "design").prompt or "")
    )
    flow_id = started.flow_id
    assert flow_id is not None
    later = engine.get_flow(flow_id).updated_at + timedelta(minutes=6)
    swept = engine.sweep(later, expiring=[flow_id])
    assert swept.expired == [flow_id]
    assert events_of(engine, cid)[-2:] == ["FlowFinished", "OutboundQueued"]
    notice = engine.get_conversation(cid).outbox[-1]
    assert notice.kind is OutboundKind.NOTICE and notice.address == CHAT
    assert notice.text == "This form expired after a long pause. Send /start to begin again."
    assert engine.sweep(later, expiring=[flow_id]).expired == []


def test_a_form_whose_definition_asks_for_it_is_reminded_once_before_it_expires(
    database_url: str, schema: str
) -> None:
    reminding = FlowDefinition.from_mapping(
        {
            "name": "visit",
            "version": 1,
            "idle_timeout_s": 600,
            "remind_before_s": 120,
            "steps": [{"name": "place", "prompt": "Which place?"}],
        }
    )
    with open_engine(database_url, schema=schema, flows=[reminding]) as engine:
        cid = uuid4()
        started = engine.exchange(
            cid, inbound("1", "go"), lambda ex: ex.reply(ex.start_flow("visit").prompt or "")
        )
        flow_id = started.flow_id
        assert flow_id is not None
        at = engine.get_flow(flow_id).updated_at
        assert not engine.remind(flow_id, at=at + timedelta(seconds=400))  # not due yet
        assert engine.remind(flow_id, at=at + timedelta(seconds=490))
        assert not engine.remind(flow_id, at=at + timedelta(seconds=500))  # once
        notice = engine.get_conversation(cid).outbox[-1]
        assert notice.kind is OutboundKind.NOTICE and notice.text.endswith("Which place?")
        assert not engine.remind(flow_id, at=at + timedelta(seconds=700))  # expired by then


def test_a_reminder_needs_a_timeout_longer_than_itself() -> None:
    from voxledger.domain.errors import DefinitionError

    base = {"name": "v", "version": 1, "steps": [{"name": "a", "prompt": "A?"}]}
    with pytest.raises(DefinitionError, match="needs idle_timeout_s"):
        FlowDefinition.from_mapping({**base, "remind_before_s": 60})
    with pytest.raises(DefinitionError, match="must be less than idle_timeout_s"):
        FlowDefinition.from_mapping({**base, "idle_timeout_s": 60, "remind_before_s": 60})


def test_outbox_events_leave_the_conversation_state_equal_after_a_snapshot(engine: Engine) -> None:
    cid = uuid4()
    engine.exchange(cid, inbound("1", "hello"), echo)
    engine.record_delivered(cid, "1:reply", ["5"])
    engine.exchange(cid, inbound("2", "again"), echo)
    conversation = engine.store.load(cid)
    assert isinstance(conversation, Conversation)
    rebuilt = Conversation.from_state(conversation.state())
    assert rebuilt.state() == conversation.state()
    assert rebuilt.state().address == CHAT
