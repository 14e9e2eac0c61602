"""Given these events, when this command, then these events or this error: specifications of
an aggregate alone, with no database and no Engine (the form of the eventsourcing library's
examples and of Architecture Patterns with Python)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate, CanInitAggregate
from eventsourcing.utils import get_topic

from voxledger.domain.errors import VoxledgerError
from voxledger.domain.events import event_data

A = TypeVar("A", bound=Aggregate)
STREAM = UUID(int=0x5EC)
T0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
Fact = tuple[type, dict[str, Any]]  # an event class and what it says
Then = list[tuple[str, dict[str, Any]]]  # events as their type names and what they say


def at(seconds: float) -> datetime:
    """A moment, in seconds after the first event of a specification."""
    return T0 + timedelta(seconds=seconds)


def fact(event_class: type, **data: Any) -> Fact:
    """One past event: its class and what it says."""
    return event_class, data


def history(aggregate: type[Aggregate], *facts: Fact) -> list[Any]:
    """These events as one stream of the aggregate records them, a second apart."""
    events = []
    for version, (event_class, data) in enumerate(facts, start=1):
        meta: dict[str, Any] = {
            "originator_id": STREAM,
            "originator_version": version,
            "timestamp": at(version - 1),
        }
        if issubclass(event_class, CanInitAggregate):
            meta["originator_topic"] = get_topic(aggregate)
        events.append(event_class(**meta, **data))
    return events


def given(aggregate: type[A], *facts: Fact) -> A:
    """The aggregate rebuilt from these events, as the store rebuilds it; nothing is
    pending afterwards."""
    state: Any = None
    for event in history(aggregate, *facts):
        state = event.mutate(state)
    assert isinstance(state, aggregate)
    return state


def when(aggregate: A, command: Callable[[A], object]) -> Then | VoxledgerError:
    """The events a command records, as (type, data); or the error it was refused with,
    in which case it recorded nothing."""
    try:
        command(aggregate)
    except VoxledgerError as refused:
        assert not aggregate.pending_events, "a refused command recorded an event"
        return refused
    return [(type(e).__name__, event_data(e)) for e in aggregate.collect_events()]


def refused(outcome: Then | VoxledgerError, error: type[VoxledgerError], text: str = "") -> bool:
    """True if the command was refused with this kind of error, saying ``text``."""
    return isinstance(outcome, error) and text in str(outcome)
