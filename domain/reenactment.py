"""Events recorded elsewhere (an imported file) enter a log only as this code's commands
would have recorded them: each event is re-enacted, by running on the state before it the
command that records it, and must come out exactly as it went in. A command that records
several events (an answer that completes a run) is run once, for the first of them, and the
file's next events must be the rest. The state is built by the commands themselves, so
every guard applies: no message after the end, no answer its validator refuses, no step
the definition does not lead to. Besides, its values obey what every command's input obeys
(no NUL, 64-bit integers, finite numbers) and its times never go backwards in a stream.

An event whose personal values were erased or redacted ("[erased]") cannot be re-enacted:
no command can be run on a value that is gone. It is taken as recorded (its values and time
checked), and so is the end of the command it belongs to."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
from eventsourcing.domain import Aggregate

from .commands import check_values
from .conversation import Conversation
from .errors import ValidationFailed
from .events import fields_of
from .flow import Flow
from .flow_definition import FlowDefinition, FlowRegistry

# The moments an event may carry: long before any conversation voxledger records, and
# far enough ahead that no clock reaches it by mistake.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
ERASED = "[erased]"  # how an erased or redacted personal text reads

Redo = Callable[[Any, Any, datetime, "Reenactment"], None]


def _answer_text(value: Any) -> str:
    """An accepted value as the text that answers its step again (its JSON form, bare)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_answer_text(v) for v in value)
    return msgspec.json.encode(value).decode().strip('"')


_CONVERSATION: dict[type, Redo] = {
    Conversation.ConnectionOpening: lambda c, e, at, _: c.begin_connecting(e.provider, at=at),
    Conversation.Connected: lambda c, e, at, _: c.connect(
        e.provider, e.connection_id, e.latency_ms, at=at
    ),
    Conversation.Disconnected: lambda c, e, at, _: c.disconnect(e.reason, at=at),
    Conversation.ErrorRecorded: lambda c, e, at, _: c.record_error(e.error, fatal=e.fatal, at=at),
    Conversation.TrafficRecorded: lambda c, e, at, _: c.record_traffic(
        messages_sent=e.messages_sent,
        messages_received=e.messages_received,
        bytes_sent=e.bytes_sent,
        bytes_received=e.bytes_received,
        at=at,
    ),
    Conversation.ListeningStarted: lambda c, e, at, _: c.listen(at=at),
    Conversation.ListeningStopped: lambda c, e, at, _: c.stop_listening(at=at),
    Conversation.Ended: lambda c, e, at, _: c.end(e.reason, at=at),
    Conversation.MessageAdded: lambda c, e, at, _: c.add_message(
        e.message_id, e.role, e.content, e.metadata, e.audio_duration_s, complete=e.complete, at=at
    ),
    Conversation.MessageCompleted: lambda c, e, at, _: c.complete_message(
        e.message_id, e.content, at=at
    ),
    Conversation.TurnStarted: lambda c, e, at, _: c.start_turn(e.turn_id, e.user_message_id, at=at),
    Conversation.ResponseStarted: lambda c, e, at, _: c.start_response(at=at),
    Conversation.TurnCompleted: lambda c, e, at, _: c.complete_turn(e.assistant_message_id, at=at),
    Conversation.TurnInterrupted: lambda c, e, at, _: c.interrupt_turn(e.reason, at=at),
    Conversation.SpeechStarted: lambda c, e, at, _: c.record_speech_started(at=at),
    Conversation.SpeechEnded: lambda c, e, at, _: c.record_speech_ended(
        e.duration_s, e.peak_dbfs, e.mean_dbfs, at=at
    ),
    Conversation.UserTurnEnded: lambda c, e, at, _: c.record_user_turn_ended(e.utterances, at=at),
    Conversation.SilenceDetected: lambda c, e, at, _: c.record_silence(e.silence_s, at=at),
    Conversation.LevelsRecorded: lambda c, e, at, _: c.record_levels(
        e.input_level_db, e.output_level_db, e.latency_ms, at=at
    ),
    Conversation.UsageRecorded: lambda c, e, at, _: c.record_usage(
        tokens_in=e.tokens_in,
        tokens_out=e.tokens_out,
        cost=e.cost,
        audio_seconds=e.audio_seconds,
        at=at,
    ),
    Conversation.ContextUpdated: lambda c, e, at, _: c.update_context(
        e.values, list(e.removed), at=at
    ),
    Conversation.FlowBegan: lambda c, e, at, _: c.begin_flow(e.flow_id, e.definition, at=at),
    Conversation.FlowFinished: lambda c, e, at, _: c.finish_flow(e.flow_id, e.outcome, at=at),
}

_FLOW: dict[type, Redo] = {
    Flow.AnswerAccepted: lambda f, e, at, r: f.answer(
        r.definition_of(f), _answer_text(e.value), at=at
    ),
    Flow.FieldEdited: lambda f, e, at, r: f.answer(
        r.definition_of(f), _answer_text(e.value), at=at
    ),
    Flow.AnswerRejected: lambda f, e, at, r: f.answer(r.definition_of(f), e.raw, at=at),
    Flow.ConfirmationDeclined: lambda f, e, at, r: f.answer(r.definition_of(f), "no", at=at),
    Flow.Confirmed: lambda f, e, at, r: f.confirm(r.definition_of(f), at=at),
    Flow.EditRequested: lambda f, e, at, r: f.edit(r.definition_of(f), e.field, at=at),
    Flow.AnswerWithdrawn: lambda f, e, at, r: f.undo(r.definition_of(f), at=at),
    Flow.Cancelled: lambda f, e, at, r: f.cancel(e.reason, at=at),
    Flow.Expired: lambda f, e, at, r: f.expire(at=at),
}


class Reenactment:
    """Builds streams from events recorded elsewhere, each one re-enacted by its command
    (one instance per import: it remembers each stream's state and expected events)."""

    def __init__(self, flows: FlowRegistry) -> None:
        self.flows = flows
        self._expected: dict[Any, list[Any]] = {}  # per stream: the rest of a command's events
        self._as_recorded: set[Any] = set()  # streams whose last event was taken as recorded

    def definition_of(self, flow: Flow) -> FlowDefinition:
        """The definition a run started with (it must be known here too)."""
        return self.flows.get(flow.definition, flow.definition_version)

    def admit(self, aggregate: Aggregate | None, event: Any) -> Aggregate:
        """The stream's state after the event, as its command records it; a domain error
        (ValidationFailed, InvalidTransition, NotFound) says why the event is refused."""
        self._check_values(aggregate, event)
        stream = event.originator_id
        if _redacted(event):
            self._expected.pop(stream, None)
            self._as_recorded.add(stream)
            return event.mutate(aggregate)
        expected = self._expected.get(stream)
        if expected:
            recorded = expected.pop(0)
            _same(recorded, event)
            assert aggregate is not None
            return aggregate
        if aggregate is None:
            created = self._create(event)
            _same(created.collect_events()[0], event)
            return created
        redo = (_CONVERSATION if isinstance(aggregate, Conversation) else _FLOW).get(type(event))
        if redo is None:
            if stream in self._as_recorded:  # the rest of a command taken as recorded
                return event.mutate(aggregate)
            raise ValidationFailed(
                f"{type(event).__qualname__} is recorded only after the command before it"
            )
        self._as_recorded.discard(stream)
        redo(aggregate, event, event.timestamp, self)
        first, *rest = aggregate.collect_events()
        _same(first, event)
        if rest:
            self._expected[event.originator_id] = rest
        return aggregate

    def finish(self) -> None:
        """Refuse a stream that ends part way through a command's events."""
        for stream, rest in self._expected.items():
            if rest:
                missing = ", ".join(type(e).__qualname__ for e in rest)
                raise ValidationFailed(f"stream {stream} ends before its {missing}")

    def _create(self, event: Any) -> Aggregate:
        at = event.timestamp
        if isinstance(event, Conversation.Started):
            return Conversation.start(
                event.channel,
                event.participant,
                event.metadata,
                at=at,
                conversation_id=event.originator_id,
            )
        if isinstance(event, Flow.Started):
            definition = self.flows.get(event.definition, event.definition_version)
            return Flow.begin(
                event.conversation_id, definition, event.mode, at=at, flow_id=event.originator_id
            )
        raise ValidationFailed(f"a stream cannot begin with {type(event).__qualname__}")

    @staticmethod
    def _check_values(aggregate: Aggregate | None, event: Any) -> None:
        at = event.timestamp
        if not isinstance(at, datetime) or at.tzinfo is None:
            raise ValidationFailed("its time has no time zone")
        if not EARLIEST <= at < LATEST:
            raise ValidationFailed(
                f"its time {at.isoformat()} is outside {EARLIEST.year} to {LATEST.year - 1}"
            )
        if aggregate is not None and at < aggregate.modified_on:
            raise ValidationFailed(
                f"its time {at.isoformat()} is before the stream's previous event "
                f"({aggregate.modified_on.isoformat()}): times never go backwards"
            )
        check_values(*(getattr(event, name) for name in fields_of(type(event))))


def _redacted(event: Any) -> bool:
    """Whether a personal value of the event reads as erased (or was redacted)."""
    return any(getattr(event, name, None) == ERASED for name in getattr(event, "PERSONAL", ()))


def _same(recorded: Any, given: Any) -> None:
    """Refuse an event that differs from what the command recorded."""
    if type(recorded) is not type(given):
        raise ValidationFailed(
            f"the command records {type(recorded).__qualname__} here, "
            f"not {type(given).__qualname__}"
        )
    names = ("originator_version", *fields_of(type(given)))
    personal = getattr(type(given), "PERSONAL", ())
    for name in names:
        ours, theirs = getattr(recorded, name), getattr(given, name)
        if name in personal and theirs in (ERASED, {}, []):
            continue  # erased or redacted: the value is gone, its place is kept
        if msgspec.to_builtins(ours) != msgspec.to_builtins(theirs):
            raise ValidationFailed(
                f"{type(given).__qualname__}.{name} is {_shown(theirs)}; "
                f"the command records {_shown(ours)}"
            )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."
