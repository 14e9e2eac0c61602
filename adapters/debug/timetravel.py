"""Time travel over one conversation or flow: its state at a version or a moment, and the
first version at which a condition holds (bisect).

States come from ``store.load(id, version)``: the latest snapshot at or below the version,
then at most the snapshot interval of events. A moment becomes a version by binary search
over the stream's event times (see ``History.version_at``), so neither scans a stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from ...domain.conversation import Conversation, ConversationState
from ...domain.errors import BadInput, NotFound
from ...domain.events import LoggedEvent
from ...domain.flow import Flow, FlowState
from ..store.event_store import EventStore
from .conditions import Condition, Roots, first_version
from .history import History

Point = int | datetime
STATE_TYPES: dict[type[Aggregate], type[msgspec.Struct]] = {
    Conversation: ConversationState,
    Flow: FlowState,
}
_KINDS = {"conversation": ConversationState, "flow": FlowState}
# State fields that the aggregate keeps under the library's names.
_RENAMED = {"started_at": "created_on", "updated_at": "modified_on"}


class Found(msgspec.Struct, frozen=True):
    """Where a condition first holds (version None if it never does), and how many
    versions were tested to find out."""

    condition: str
    mode: str
    version: int | None
    at: datetime | None
    event_type: str | None
    tested: int
    last_version: int


def state_document(state: ConversationState) -> dict[str, Any]:
    """A conversation's state as JSON data, with its derived facts (as `show --json` and
    `at --json` print it)."""
    document = _json_ready(state)
    document["is_active"] = state.is_active
    document["current_turn_active"] = state.current_turn_active
    document["usage"]["response_time_ms_avg"] = state.usage.response_time_ms_avg
    return document


def document(state: ConversationState | FlowState) -> dict[str, Any]:
    """A conversation's or flow's state as JSON data, with its derived facts: what
    `voxledger at ID --json` prints, and what the console shows."""
    if isinstance(state, ConversationState):
        return state_document(state)
    plain = _json_ready(state)
    plain["is_active"] = state.is_active
    plain["expires_at"] = _json_ready(state.expires_at)
    return plain


def _json_ready(value: Any) -> Any:
    # Through JSON and back: exactly the values a JSON reader of the CLI's output gets.
    return msgspec.json.decode(msgspec.json.encode(value, enc_hook=str))


class TimeTravel:
    """States of one store's conversations and flows at versions and moments."""

    def __init__(self, store: EventStore, history: History | None = None) -> None:
        self.store = store
        self.history = history or History(store)

    def version_of(self, stream_id: UUID, point: Point) -> int:
        """The version a point names: a version number (checked), or the last version
        recorded at or before a moment (NotFound before the stream began)."""
        last = self.history.last_version(stream_id)
        if last == 0:
            raise NotFound(f"no conversation or flow {stream_id}")
        if isinstance(point, datetime):
            version = self.history.version_at(stream_id, point)
            if version == 0:
                first = self.history.event(stream_id, 1)
                raise NotFound(
                    f"{stream_id} did not exist yet at {point.isoformat()}; "
                    f"its first event is at {first.timestamp.isoformat()}"
                )
            return version
        if not 1 <= point <= last:
            raise BadInput(f"{stream_id} has versions 1 to {last}; there is no version {point}")
        return point

    def aggregate_at(self, stream_id: UUID, point: Point) -> Aggregate:
        """The conversation or flow aggregate as it was at a version or moment."""
        return self.store.load(stream_id, self.version_of(stream_id, point))

    def state_at(self, stream_id: UUID, point: Point) -> ConversationState | FlowState:
        """The conversation's or flow's state as it was at a version or moment."""
        return self.aggregate_at(stream_id, point).state()  # type: ignore[attr-defined]

    # -- bisect ------------------------------------------------------------------------------

    def bisect(self, stream_id: UUID, condition: Condition, *, linear: bool = False) -> Found:
        """The first version at which the condition holds: by binary search over versions
        (right for a monotone condition), or by folding every event in order (``linear``).
        ``flow.*`` paths read the conversation's active flow, or its most recent one, as
        it stood at the time of the conversation's version."""
        kind = self.history.kind(stream_id)
        condition.check(_KINDS[kind], {"flow": FlowState})
        last = self.history.last_version(stream_id)
        tested = 0
        if linear:
            version = None
            for version_now, subject, related in self._scan(stream_id, kind):
                tested += 1
                if condition.holds(subject, related):
                    version = version_now
                    break
        else:
            flows = self.history.flows_of(stream_id) if kind == "conversation" else []

            def holds(version: int) -> bool:
                nonlocal tested
                tested += 1
                aggregate = self.store.load(stream_id, version)
                return condition.holds(*self._subject(aggregate, kind, flows))

            version = first_version(1, last, holds)
        event = self.history.event(stream_id, version) if version else None
        return Found(
            condition=condition.text,
            mode="linear" if linear else "binary",
            version=version,
            at=event.timestamp if event else None,
            event_type=type(event).__name__ if event else None,
            tested=tested,
            last_version=last,
        )

    def _subject(self, aggregate: Any, kind: str, flows: list[Any]) -> tuple[Any, Roots]:
        view = Live(aggregate)
        if kind == "flow":
            return view, {"flow": lambda: view}

        def flow() -> Live | None:
            flow_id = aggregate.active_flow_id or next(
                (f.flow_id for f in reversed(flows) if f.version <= aggregate.version), None
            )
            if flow_id is None:
                return None
            version = self.history.version_at(flow_id, aggregate.modified_on)
            return Live(self.store.load(flow_id, version)) if version else None

        return view, {"flow": flow}

    def _scan(self, stream_id: UUID, kind: str) -> Iterator[tuple[int, Any, Roots]]:
        """Every version of a stream in order, folded one event at a time, with the
        conversation's current flow folded forward alongside it."""
        aggregate: Any = None
        followers: dict[UUID, _Follower] = {}
        latest_flow: UUID | None = None
        for recorded in self.history.events(stream_id):
            event = recorded.event
            aggregate = event.mutate(aggregate)
            view = Live(aggregate)
            if kind == "flow":
                yield event.originator_version, view, {"flow": lambda view=view: view}
                continue
            if isinstance(event, Conversation.FlowBegan):
                latest_flow = event.flow_id
            flow_id = aggregate.active_flow_id or latest_flow

            def flow(flow_id: UUID | None = flow_id, moment: datetime = event.timestamp) -> Any:
                if flow_id is None:
                    return None
                if flow_id not in followers:
                    followers[flow_id] = _Follower(self.history.events(flow_id))
                folded = followers[flow_id].at(moment)
                return Live(folded) if folded is not None else None

            yield event.originator_version, view, {"flow": flow}


class Live:
    """An aggregate read as its state value, without the copy of every message and turn
    that ``state()`` makes: fields come from the aggregate, derived properties from one
    ``state()`` call made only if a condition asks for one."""

    def __init__(self, aggregate: Any) -> None:
        self._aggregate = aggregate
        self._fields = STATE_TYPES[type(aggregate)].__struct_fields__
        self._state: Any = None

    def __getattr__(self, name: str) -> Any:
        if name in self._fields:
            return getattr(self._aggregate, _RENAMED.get(name, name))
        if self._state is None:
            self._state = self._aggregate.state()
        return getattr(self._state, name)


class _Follower:
    """A flow folded forward in time as a scan of its conversation moves on."""

    def __init__(self, events: Iterator[LoggedEvent]) -> None:
        self.events = events
        self.aggregate: Any = None
        self.next = next(events, None)

    def at(self, moment: datetime) -> Any:
        while self.next is not None and self.next.event.timestamp <= moment:
            self.aggregate = self.next.event.mutate(self.aggregate)
            self.next = next(self.events, None)
        return self.aggregate
