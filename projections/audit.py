"""The `audit` projection: one append-only row per event, readable by an operator.

Each row says what happened in one line and which facts of the stream the event changed,
with their old and new values. To know old values it keeps each stream's current facts in
``audit_streams`` (a JSON object per stream), written in the same transaction as the rows,
so a rebuild derives exactly the same trail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql

from ..domain.conversation import STATUS_EVENTS, Conversation
from ..domain.definition_history import FlowDefinitionHistory as History
from ..domain.events import event_data, stream_type
from ..domain.flow import STATUS_EVENTS as FLOW_STATUS_EVENTS
from ..domain.flow import Flow
from .batch import copy_rows, upsert
from .projection import Page, StreamCache, Tables, continued, status_text

C = Conversation
Facts = dict[str, Any]

DDL = (
    # Keyed by stream and version: a second copy of an event fails loudly, and a stream's
    # trail reads in order from the key alone (no second index to maintain on append).
    """CREATE TABLE {audit_trail} (
        position bigint NOT NULL,
        stream_id uuid NOT NULL,
        stream_type text NOT NULL,
        version bigint NOT NULL,
        event_type text NOT NULL,
        occurred_at timestamptz NOT NULL,
        summary text NOT NULL,
        changes jsonb NOT NULL,
        correlation_id uuid,
        causation_id uuid,
        PRIMARY KEY (stream_id, version))""",
    """CREATE TABLE {audit_streams} (
        stream_id uuid PRIMARY KEY,
        stream_type text NOT NULL,
        facts jsonb NOT NULL)""",
)

TRAIL_TYPES = (
    "int8", "uuid", "text", "int8", "text", "timestamptz", "text", "jsonb", "uuid", "uuid"
)  # fmt: skip
STREAMS_TYPES = ("uuid", "text", "jsonb")
STREAMS_CONFLICT = "ON CONFLICT (stream_id) DO UPDATE SET facts = excluded.facts"


# Facts that count or add up: they start at zero, not unset.
COUNTERS = frozenset(
    {
        "reconnects",
        "errors",
        "messages_sent",
        "messages_received",
        "bytes_sent",
        "bytes_received",
        "messages",
        "turns",
        "interruptions",
        "silences",
        "audio_seconds",
        "tokens_in",
        "tokens_out",
        "cost",
        "outbox",
    }
)


def _add(facts: Facts, name: str, amount: float) -> float:
    return facts.get(name, 0) + amount


# What each conversation event sets, besides the status: fact name -> new value.
CONVERSATION_FACTS: dict[type, Callable[[Any, Facts], Facts]] = {
    C.Started: lambda e, f: {"channel": e.channel, "participant": e.participant},
    C.ConnectionOpening: lambda e, f: {"provider": e.provider},
    C.Connected: lambda e, f: {
        "provider": e.provider,
        "connection_id": e.connection_id,
        "latency_ms": e.latency_ms,
        "reconnects": _add(f, "reconnects", int(e.reconnect)),
    },
    C.Disconnected: lambda e, f: {"listening": False, "speech_active": False, "turn": None},
    C.ErrorRecorded: lambda e, f: {
        "last_error": e.error,
        "errors": _add(f, "errors", 1),
        **({"turn": None} if e.fatal else {}),
    },
    C.TrafficRecorded: lambda e, f: {
        name: _add(f, name, getattr(e, name))
        for name in ("messages_sent", "messages_received", "bytes_sent", "bytes_received")
    },
    C.ListeningStarted: lambda e, f: {"listening": True},
    C.ListeningStopped: lambda e, f: {"listening": False, "speech_active": False},
    C.Ended: lambda e, f: {
        "end_reason": e.reason,
        "listening": False,
        "speech_active": False,
        "turn": None,
    },
    C.MessageAdded: lambda e, f: {"messages": _add(f, "messages", 1)},
    # How many outbound messages wait for delivery.
    C.OutboundQueued: lambda e, f: {"outbox": _add(f, "outbox", 1)},
    C.OutboundDelivered: lambda e, f: {"outbox": _add(f, "outbox", -1)} if e.complete else {},
    C.OutboundFailed: lambda e, f: {"outbox": _add(f, "outbox", -1)} if e.final else {},
    C.TurnStarted: lambda e, f: {"turn": e.turn_id},
    C.TurnCompleted: lambda e, f: {"turn": None, "turns": _add(f, "turns", 1)},
    C.TurnInterrupted: lambda e, f: {
        "turn": None,
        "interruptions": _add(f, "interruptions", 1),
    },
    C.SpeechStarted: lambda e, f: {"speech_active": True},
    C.SpeechEnded: lambda e, f: {
        "speech_active": False,
        "audio_seconds": _add(f, "audio_seconds", e.duration_s),
    },
    C.SilenceDetected: lambda e, f: {"silences": _add(f, "silences", 1)},
    C.LevelsRecorded: lambda e, f: {
        name: value
        for name, value in (
            ("input_level_db", e.input_level_db),
            ("output_level_db", e.output_level_db),
            ("audio_latency_ms", e.latency_ms),
        )
        if value is not None
    },
    C.UsageRecorded: lambda e, f: {
        "tokens_in": _add(f, "tokens_in", e.tokens_in),
        "tokens_out": _add(f, "tokens_out", e.tokens_out),
        "cost": _add(f, "cost", e.cost),
        "audio_seconds": _add(f, "audio_seconds", e.audio_seconds),
    },
    C.ContextUpdated: lambda e, f: {
        **{f"context.{key}": _plain(value) for key, value in e.values.items()},
        **{f"context.{key}": None for key in e.removed},
    },
    C.FlowBegan: lambda e, f: {"active_flow_id": str(e.flow_id)},
    C.FlowFinished: lambda e, f: {"active_flow_id": None},
}

# A flow's own facts; an answer field of the same name is listed as "fields.<name>".
FLOW_OWN = frozenset(
    {"conversation_id", "definition", "definition_version", "mode", "status", "step", "return_to"}
)


def field_fact(name: str) -> str:
    """The fact name under which an answer field is audited."""
    return f"fields.{name}" if name in FLOW_OWN else name


FLOW_FACTS: dict[type, Callable[[Any, Facts], Facts]] = {
    Flow.Started: lambda e, f: {
        "conversation_id": str(e.conversation_id),
        "definition": e.definition,
        "definition_version": e.definition_version,
        "mode": e.mode,
        "step": e.step,
    },
    Flow.AnswerAccepted: lambda e, f: {field_fact(e.field): _plain(e.value), "step": e.next_step},
    Flow.EditRequested: lambda e, f: {"step": e.step, "return_to": e.return_to},
    Flow.FieldEdited: lambda e, f: {
        field_fact(e.field): _plain(e.value),
        "step": e.next_step,
        "return_to": None,
    },
    Flow.AnswerWithdrawn: lambda e, f: {
        field_fact(e.field): None,
        "step": e.step,
        "return_to": None,
    },
    Flow.Completed: lambda e, f: {"step": None, "return_to": None},
    # Once the run has ended: where each of its actions stands.
    Flow.ActionStarted: lambda e, f: {f"action.{e.action}": f"attempt {e.attempt} started"},
    Flow.ActionSucceeded: lambda e, f: {f"action.{e.action}": "succeeded"},
    Flow.ActionFailed: lambda e, f: {
        f"action.{e.action}": "failed" if e.final else f"attempt {e.attempt} failed"
    },
}


def _plain(value: Any) -> Any:
    """A free-form value (an answer, a context value) as JSON would give it back."""
    return msgspec.to_builtins(value, enc_hook=str, str_keys=True)


def _with_status(
    facts_of: Callable[[Any, Facts], Facts] | None,
) -> Callable[[Any, Facts], Facts]:
    """An event's facts and, besides them, the status it leaves its stream in."""

    def new_facts(e: Any, facts: Facts) -> Facts:
        new = facts_of(e, facts) if facts_of else {}
        new["status"] = status_text(e, facts.get("status"))
        return new

    return new_facts


# Every event class -> the facts it sets (name -> new value as JSON, None: no longer set).
NEW_FACTS: dict[type, Callable[[Any, Facts], Facts]] = {
    **CONVERSATION_FACTS,
    **FLOW_FACTS,
    **{cls: _with_status(CONVERSATION_FACTS.get(cls)) for cls in STATUS_EVENTS},
    **{cls: _with_status(FLOW_FACTS.get(cls)) for cls in FLOW_STATUS_EVENTS},
}


_UNSET = object()


def changes(e: Any, facts: Facts) -> dict[str, dict[str, Any]]:
    """Apply an event to a stream's facts; what changed, as {name: {"old", "new"}}. An
    answer's field is always listed, even when the new value equals the old one."""
    new_facts = NEW_FACTS.get(type(e))
    if new_facts is None:
        return {}
    field = vars(e).get("field")  # an answer's (a failed attribute lookup costs more)
    answered = None if field is None else field_fact(field)
    changed = {}
    for name, value in new_facts(e, facts).items():
        old = facts.get(name, _UNSET)
        if old is _UNSET:
            old = 0 if name in COUNTERS else None
        if old != value or name == answered:
            changed[name] = {"old": old, "new": value}
        if value is None:
            facts.pop(name, None)
        else:
            facts[name] = value
    return changed


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value, enc_hook=str).decode()
    return text if len(text) <= 60 else text[:59] + "…"


def _also(text: str | None, prefix: str = ": ") -> str:
    return f"{prefix}{text}" if text else ""


# One line per event type, as an operator reads it.
SUMMARIES: dict[type, Callable[[Any], str]] = {
    C.Started: lambda e: f"started on {e.channel}{_also(e.participant, ' with ')}",
    C.ConnectionOpening: lambda e: f"connecting via {e.provider}",
    C.Connected: lambda e: (
        f"{'reconnected' if e.reconnect else 'connected'} via {e.provider} ({e.connection_id}"
        + (f", {e.latency_ms:g} ms)" if e.latency_ms is not None else ")")
    ),
    C.Disconnected: lambda e: f"disconnected{_also(e.reason)}",
    C.ErrorRecorded: lambda e: f"{'fatal ' if e.fatal else ''}error: {e.error}",
    C.TrafficRecorded: lambda e: (
        f"traffic: {e.messages_sent} messages sent, {e.messages_received} received, "
        f"{e.bytes_sent} bytes sent, {e.bytes_received} received"
    ),
    C.ListeningStarted: lambda e: "listening started",
    C.ListeningStopped: lambda e: "listening stopped",
    C.Ended: lambda e: f"ended{_also(e.reason)}",
    C.MessageAdded: lambda e: (
        f"{e.role} said {_show(e.content)}" + ("" if e.complete else " (streaming)")
    ),
    C.MessageCompleted: lambda e: (
        f"message {e.message_id} complete" + _also(None if e.content is None else _show(e.content))
    ),
    C.TurnStarted: lambda e: f"turn {e.turn_id} started",
    C.ResponseStarted: lambda e: f"turn {e.turn_id}: response started",
    C.TurnCompleted: lambda e: f"turn {e.turn_id} completed in {e.duration_ms:.0f} ms",
    C.TurnInterrupted: lambda e: f"turn {e.turn_id} interrupted{_also(e.reason)}",
    C.SpeechStarted: lambda e: "speech started",
    C.UserTurnEnded: lambda e: f"user turn ended after {e.utterances} utterances",
    C.SpeechEnded: lambda e: f"speech ended after {e.duration_s:.2f} s",
    C.SilenceDetected: lambda e: f"silent for {e.silence_s:.1f} s",
    C.LevelsRecorded: lambda e: (
        f"levels: in {e.input_level_db} dB, out {e.output_level_db} dB, latency {e.latency_ms} ms"
    ),
    C.UsageRecorded: lambda e: (
        f"usage: {e.tokens_in} tokens in, {e.tokens_out} out, cost {e.cost:.4f}, "
        f"{e.audio_seconds:.2f} s audio"
    ),
    C.ContextUpdated: lambda e: (
        "context: "
        + ", ".join([f"{k}={_show(v)}" for k, v in e.values.items()] + [f"-{k}" for k in e.removed])
    ),
    C.OutboundQueued: lambda e: (
        f"{e.kind} queued on {e.channel}{_also(_show(e.text) if e.text else None)}"
    ),
    C.OutboundDelivered: lambda e: (
        f"{e.item_id} {'delivered' if e.complete else 'partly delivered'}"
        + _also(", ".join(e.platform_ids) or None, " as ")
    ),
    C.OutboundFailed: lambda e: (
        f"{e.item_id} {'failed' if e.final else 'failed, to be retried'}: {e.reason}"
        + (f" ({e.code})" if e.code is not None else "")
    ),
    C.DeliveryStatusReported: lambda e: f"{e.platform_id} {e.status}{_also(e.reason or None)}",
    C.FlowBegan: lambda e: f"flow {e.definition} began ({e.flow_id})",
    C.FlowFinished: lambda e: f"flow {e.flow_id} {e.outcome}",
    Flow.Started: lambda e: (
        f"{e.definition} v{e.definition_version} started{_also(e.mode, ' in ')} at {e.step}"
    ),
    Flow.AnswerAccepted: lambda e: f"{e.step}: {e.field} = {_show(e.value)}",
    Flow.AnswerRejected: lambda e: f"{e.step}: rejected {_show(e.raw)}{_also(e.reason)}",
    Flow.EditRequested: lambda e: f"edit {e.field} at {e.step}, then back to {e.return_to}",
    Flow.FieldEdited: lambda e: f"{e.field} edited: {_show(e.previous)} -> {_show(e.value)}",
    Flow.AnswerWithdrawn: lambda e: (
        f"undo: {e.field} ({_show(e.previous)}) withdrawn, asking {e.step} again"
    ),
    Flow.ConfirmationDeclined: lambda e: f"{e.step}: confirmation declined",
    Flow.Confirmed: lambda e: "confirmed",
    Flow.Completed: lambda e: f"completed with {len(e.data)} answers",
    Flow.Cancelled: lambda e: f"cancelled at {e.step}{_also(e.reason)}",
    Flow.Expired: lambda e: f"expired at {e.step} after {e.idle_s:.0f} s idle",
    Flow.ActionStarted: lambda e: f"action {e.action}: attempt {e.attempt} started",
    Flow.ActionSucceeded: lambda e: f"action {e.action}: attempt {e.attempt} succeeded",
    Flow.ActionFailed: lambda e: (
        f"action {e.action}: attempt {e.attempt} failed{' for good' if e.final else ''}: "
        f"{_show(e.error)}"
    ),
    History.Started: lambda e: f"the versions of flow {e.name}",
    History.VersionRegistered: lambda e: (
        f"v{e.version} recorded from {e.source} (hash {e.content_hash[:12]})"
    ),
}


def summary(e: Any) -> str:
    """One readable line about an event."""
    describe = SUMMARIES.get(type(e))
    if describe is not None:
        return describe(e)
    data = event_data(e)
    return " ".join([type(e).__name__, *(f"{k}={_show(v)}" for k, v in data.items())])


class Audit:
    """The audit trail: every event with a summary and the facts it changed."""

    name = "audit"
    tables = ("audit_trail", "audit_streams")

    def __init__(self) -> None:
        self._streams: StreamCache[tuple[str, Facts]] = StreamCache()

    def create(self, cur: psycopg.Cursor[Any], t: Tables) -> None:
        """Create the tables."""
        for statement in DDL:
            cur.execute(sql.SQL(statement).format(**t))

    def forget(self) -> None:
        """Drop the facts kept in memory."""
        self._streams.clear()

    def apply(self, cur: psycopg.Cursor[Any], t: Tables, page: Page) -> None:
        """Append the page's rows (COPY) and store the facts of the streams it touched."""
        events = [e for _, e in page]
        streams = self._streams.get(continued(events), lambda ids: _load_facts(cur, t, ids))
        touched: dict[UUID, tuple[str, Facts]] = {}

        def rows() -> Iterator[tuple[Any, ...]]:
            # Made as the COPY goes: the server stores each thousand rows as the next are made.
            for position, e in page:
                stream = streams.get(e.originator_id)
                if stream is None:
                    stream = streams[e.originator_id] = (stream_type(e), {})
                touched[e.originator_id] = stream
                kind, facts = stream
                fields = vars(e)
                yield (
                    position,
                    e.originator_id,
                    kind,
                    e.originator_version,
                    type(e).__name__,
                    e.timestamp,
                    summary(e),
                    changes(e, facts),
                    fields.get("correlation_id"),
                    fields.get("causation_id"),
                )

        copy_rows(cur, t["audit_trail"], TRAIL_TYPES, rows())
        states = ((i, kind, facts) for i, (kind, facts) in touched.items())
        upsert(cur, t["audit_streams"], STREAMS_TYPES, states, STREAMS_CONFLICT)
        self._streams.trim()


def _load_facts(
    cur: psycopg.Cursor[Any], t: Tables, ids: list[UUID]
) -> dict[UUID, tuple[str, Facts]]:
    cur.execute(
        sql.SQL(
            "SELECT stream_id, stream_type, facts::text FROM {} WHERE stream_id = ANY(%b)"
        ).format(t["audit_streams"]),
        (ids,),
    )
    return {stream_id: (kind, msgspec.json.decode(facts)) for stream_id, kind, facts in cur}
