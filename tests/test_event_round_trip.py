"""Stored data is sacred: every event class keeps its topic, its name, its fields with their
types and what of it is personal; and every one of them, written through the real store
(personal fields sealed), reads back equal to what was written."""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec

from voxledger.adapters.debug.history import History, event_classes
from voxledger.adapters.store.recorder import Append
from voxledger.domain.conversation import Conversation
from voxledger.domain.conversation_snapshot import ConversationSnapshot
from voxledger.domain.definition_history import FlowDefinitionHistory
from voxledger.domain.engine import Engine
from voxledger.domain.events import fields_of
from voxledger.domain.flow import Flow

T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)

# Every stored event type: its topic -> its own fields with their types, and its personal
# fields (sealed in the log, erasable). Old logs name these; none of it may change.
STORED = {
    "voxledger:Conversation.Connected": ("provider: str, connection_id: str, latency_ms: float | None, reconnect: bool", ()),  # noqa: E501
    "voxledger:Conversation.ConnectionOpening": ("provider: str", ()),
    "voxledger:Conversation.ContextUpdated": ("values: dict[str, Any], removed: list[str]", ("values", "removed")),  # noqa: E501
    "voxledger:Conversation.DeliveryStatusReported": ("platform_id: str, status: str, code: int | None, reason: str", ()),  # noqa: E501
    "voxledger:Conversation.Disconnected": ("reason: str", ("reason",)),
    "voxledger:Conversation.Ended": ("reason: str", ("reason",)),
    "voxledger:Conversation.ErrorRecorded": ("error: str, fatal: bool", ("error",)),
    "voxledger:Conversation.FlowBegan": ("flow_id: UUID, definition: str", ()),
    "voxledger:Conversation.FlowFinished": ("flow_id: UUID, outcome: str", ()),
    "voxledger:Conversation.LevelsRecorded": ("input_level_db: float | None, output_level_db: float | None, latency_ms: float | None", ()),  # noqa: E501
    "voxledger:Conversation.ListeningStarted": ("", ()),
    "voxledger:Conversation.ListeningStopped": ("", ()),
    "voxledger:Conversation.MessageAdded": ("message_id: str, role: str, content: str, metadata: dict[str, Any], audio_duration_s: float | None, complete: bool", ("message_id", "content", "metadata")),  # noqa: E501
    "voxledger:Conversation.MessageCompleted": ("message_id: str, content: str | None", ("message_id", "content")),  # noqa: E501
    "voxledger:Conversation.OutboundDelivered": ("item_id: str, platform_ids: list[str], complete: bool", ()),  # noqa: E501
    "voxledger:Conversation.OutboundFailed": ("item_id: str, reason: str, code: int | None, final: bool", ()),  # noqa: E501
    "voxledger:Conversation.OutboundQueued": ("item_id: str, kind: str, channel: str, to: str, thread: str | None, text: str, choices: list[str], reply_to: str | None, reference: str | None, cause: str", ("to", "text")),  # noqa: E501
    "voxledger:Conversation.ResponseStarted": ("turn_id: str", ()),
    "voxledger:Conversation.SilenceDetected": ("silence_s: float", ()),
    "voxledger:Conversation.SpeechEnded": ("duration_s: float, peak_dbfs: float | None, mean_dbfs: float | None", ()),  # noqa: E501
    "voxledger:Conversation.SpeechStarted": ("", ()),
    "voxledger:Conversation.Started": ("channel: str, participant: str | None, metadata: dict[str, Any]", ("participant", "metadata")),  # noqa: E501
    "voxledger:Conversation.TrafficRecorded": ("messages_sent: int, messages_received: int, bytes_sent: int, bytes_received: int", ()),  # noqa: E501
    "voxledger:Conversation.TurnCompleted": ("turn_id: str, assistant_message_id: str | None, duration_ms: float, status: str", ("assistant_message_id",)),  # noqa: E501
    "voxledger:Conversation.TurnInterrupted": ("turn_id: str, reason: str, status: str", ("reason",)),  # noqa: E501
    "voxledger:Conversation.TurnStarted": ("turn_id: str, user_message_id: str | None", ("user_message_id",)),  # noqa: E501
    "voxledger:Conversation.UsageRecorded": ("tokens_in: int, tokens_out: int, cost: float, audio_seconds: float", ()),  # noqa: E501
    "voxledger:Conversation.UserTurnEnded": ("utterances: int", ()),
    "voxledger:Flow.ActionFailed": ("action: str, attempt: int, error: str, final: bool", ("error",)),  # noqa: E501
    "voxledger:Flow.ActionStarted": ("action: str, attempt: int", ()),
    "voxledger:Flow.ActionSucceeded": ("action: str, attempt: int, result: Any", ("result",)),
    "voxledger:Flow.AnswerAccepted": ("step: str, field: str, value: Any, next_step: str | None", ("value",)),  # noqa: E501
    "voxledger:Flow.AnswerRejected": ("step: str, raw: str, reason: str", ("raw", "reason")),
    "voxledger:Flow.AnswerWithdrawn": ("step: str, field: str, previous: Any", ("previous",)),
    "voxledger:Flow.Cancelled": ("step: str | None, reason: str", ("reason",)),
    "voxledger:Flow.Completed": ("data: dict[str, Any]", ("data",)),
    "voxledger:Flow.ConfirmationDeclined": ("step: str", ()),
    "voxledger:Flow.Confirmed": ("", ()),
    "voxledger:Flow.EditRequested": ("field: str, step: str, return_to: str", ()),
    "voxledger:Flow.Expired": ("step: str | None, idle_s: float", ()),
    "voxledger:Flow.FieldEdited": ("step: str, field: str, previous: Any, value: Any, next_step: str | None", ("previous", "value")),  # noqa: E501
    "voxledger:Flow.Started": ("conversation_id: UUID, definition: str, definition_version: int, mode: str | None, step: str, idle_timeout_s: float | None", ()),  # noqa: E501
    "voxledger:FlowDefinitionHistory.Started": ("name: str", ()),
    "voxledger:FlowDefinitionHistory.VersionRegistered": ("version: int, content_hash: str, content: str, source: str", ()),  # noqa: E501
}  # fmt: skip


def stored_event_classes() -> dict[str, type]:
    """Every event class stored under its own topic, by topic."""
    return {
        classes[0].TOPIC: classes[0]
        for name, classes in event_classes().items()
        if "." in name  # the qualified names: each class once
    }


def shown(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return repr(tp).replace("typing.", "").replace("uuid.", "")


def test_every_event_class_keeps_its_topic_name_fields_types_and_personal_data() -> None:
    found = {}
    for topic, cls in stored_event_classes().items():
        hints = typing.get_type_hints(cls)  # the mapper converts fields by these
        fields = ", ".join(f"{name}: {shown(hints[name])}" for name in fields_of(cls))
        found[topic] = (fields, tuple(getattr(cls, "PERSONAL", ())))
        aggregate, _, name = topic.removeprefix("voxledger:").partition(".")
        assert (cls.__name__, cls.__qualname__) == (name, f"{aggregate}.{name}")
    assert found == STORED


def sample(tp: Any) -> Any:
    """A value of a field's type, never empty (so that a personal one is sealed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return sample(next(a for a in typing.get_args(tp) if a is not type(None)))
    if tp is str:
        return "Ivan Petrov, +7 999 123-45-67"
    if tp is bool:
        return True
    if tp is int:
        return 42
    if tp is float:
        return 12.5
    if tp is UUID:
        return uuid4()
    if typing.get_origin(tp) is list:
        return ["a", "b"]
    if typing.get_origin(tp) is dict:
        return {"chat_id": "4242", "nested": {"n": [1, 2.5, None, True]}}
    assert tp is Any, tp
    return {"answer": ["x", 3], "when": "2026-11-21"}


def test_every_event_class_written_through_the_store_reads_back_equal(engine: Engine) -> None:
    store = engine.store
    streams = {Conversation: uuid4(), Flow: uuid4(), FlowDefinitionHistory: uuid4()}
    written: dict[UUID, list[Any]] = {stream: [] for stream in streams.values()}
    by_aggregate = {a.__name__: a for a in streams}
    classes = stored_event_classes()
    for topic in sorted(classes, key=lambda t: (not t.endswith(".Started"), t)):  # Started first
        cls = classes[topic]
        aggregate = by_aggregate[topic.removeprefix("voxledger:").partition(".")[0]]
        stream = streams[aggregate]
        hints = typing.get_type_hints(cls)
        data = {name: sample(hints[name]) for name in fields_of(cls)}
        meta: dict[str, Any] = {
            "originator_id": stream,
            "originator_version": len(written[stream]) + 1,
            "timestamp": T0,
        }
        if "originator_topic" in {f.name for f in dataclasses.fields(cls)}:
            meta["originator_topic"] = aggregate.TOPIC
        written[stream].append(cls(**meta, **data))
    with store.keys.collecting() as new_keys:  # type: ignore[attr-defined]
        rows = [store.mapper.to_stored_event(e) for events in written.values() for e in events]
    # Each stream with something personal to seal gets its key, which goes in with its events.
    sealed = {
        e.originator_id for events in written.values() for e in events if getattr(e, "PERSONAL", ())
    }
    assert set(new_keys) == sealed and streams[Conversation] in sealed
    assert {row.topic for row in rows} == set(STORED)
    for row in rows:  # every personal value is sealed in the log
        state = msgspec.msgpack.decode(row.state)
        for name in STORED[row.topic][1]:
            assert isinstance(state[name], msgspec.msgpack.Ext) and state[name].code == 1
    store.recorder.append([Append(rows, uuid4(), tuple(new_keys.items()))])  # type: ignore[attr-defined]
    store.keys.issued(new_keys.items())  # type: ignore[attr-defined]
    history = History(store)  # type: ignore[arg-type]
    for stream, events in written.items():
        assert list(store.stream(stream)) == events
        assert [logged.event for logged in history.events(stream)] == events


def test_a_conversation_snapshot_reads_back_as_the_state_it_was_taken_from(engine: Engine) -> None:
    cid = engine.start_conversation("voice", "alice", {"k": 1}, at=T0)
    engine.add_message(cid, "user", "hello", at=T0)
    engine.start_turn(cid, at=T0)
    engine.update_context(cid, {"city": "Kazan"}, at=T0)
    conversation = engine.store.load(cid)
    snapshot = ConversationSnapshot.take(conversation)
    assert snapshot.TOPIC == "voxledger:Conversation.Snapshot"
    stored = engine.store.mapper.to_stored_event(snapshot)
    read = engine.store.mapper.to_domain_event(stored)
    assert isinstance(read, ConversationSnapshot)
    rebuilt = read.mutate(None)
    assert isinstance(rebuilt, Conversation)
    assert rebuilt.state() == conversation.state()
