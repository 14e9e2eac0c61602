"""What every recorded event carries besides its own data; how an aggregate records an event
from its own fields; and the one way the rest of the code reads events: what one says, the
kind of stream it belongs to, its place in the log, which events change a status.

An event's metadata says where it sits (its stream, version and time; a stream's first
event also names its aggregate's topic); its own fields say what happened.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

import msgspec
from eventsourcing.domain import Aggregate

# The fields every event has, whatever happened: not part of what the event says.
EVENT_METADATA = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic"})


class LoggedEvent(NamedTuple):
    """A decoded event and its position (notification id) in the log."""

    position: int
    event: Any


class HistoryEntry(msgspec.Struct, frozen=True):
    """One recorded event of a conversation or flow, as operators read it: its version,
    time, type and what it says (the Engine's `history` and the HTTP API show these)."""

    version: int
    timestamp: datetime
    type: str
    data: dict[str, Any]

    @classmethod
    def of(cls, event: Any) -> HistoryEntry:
        """The entry for one event."""
        return cls(
            version=event.originator_version,
            timestamp=event.timestamp,
            type=type(event).__name__,
            data=event_data(event),
        )


def event_data(event: Any) -> dict[str, Any]:
    """What an event says, without its stream, version and time."""
    return {k: v for k, v in vars(event).items() if k not in EVENT_METADATA}


def stream_type(event: Any) -> str:
    """The kind of stream an event belongs to: "conversation" or "flow"."""
    return stream_type_of(type(event))


@cache
def stream_type_of(event_class: type) -> str:
    """The kind of stream the events of this class belong to: "conversation" or "flow"."""
    # Event classes are nested in their aggregate: Conversation.Started, Flow.AnswerAccepted.
    return event_class.__qualname__.partition(".")[0].lower()


@cache
def fields_of(event_class: type) -> tuple[str, ...]:
    """An event class's own fields, in the order the class declares them."""
    return tuple(f.name for f in dataclasses.fields(event_class) if f.name not in EVENT_METADATA)


def data_of(event_class: type, *values: Any) -> dict[str, Any]:
    """An event's own fields, named: the values given in the order its class declares them
    (so each field is written once, in its class)."""
    names = fields_of(event_class)
    if len(values) != len(names):
        raise TypeError(f"{event_class.__qualname__} takes {', '.join(names) or 'no fields'}")
    return dict(zip(names, values, strict=True))


def trigger(aggregate: Aggregate, event_class: type, *values: Any, at: datetime) -> None:
    """Record an event on an aggregate at a time, from the values of its own fields in the
    order its class declares them: built, applied and kept pending, as the library's
    ``trigger_event`` does (an event built from values in order costs less than by name).
    Not for a stream's first event, which the aggregate's ``_create`` records."""
    # An event's fields begin with its stream, version and time (the library's DomainEvent).
    event = event_class(aggregate.id, aggregate.version + 1, at, *values)
    event.mutate(aggregate)
    aggregate.pending_events.append(event)


def status_events(aggregate: type) -> frozenset[type]:
    """The aggregate's event classes that may change its status: those whose
    ``status_after`` is their own, not the one of the aggregate's base ``Event``."""
    unchanged = aggregate.Event.status_after  # type: ignore[attr-defined]
    return frozenset(
        cls
        for cls in vars(aggregate).values()
        if isinstance(cls, type)
        and issubclass(cls, Aggregate.Event)
        and cls.status_after is not unchanged  # type: ignore[attr-defined]
    )
