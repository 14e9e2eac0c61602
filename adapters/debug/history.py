"""Reading a conversation's history from the store: its events and its flows' events, in
pages (never a whole stream in memory), merged in time order, found by time, followed live.

Per stream, versions are read by primary key, a page at a time. Finding a version by time
is a binary search over versions, one event read per probe: it assumes a stream's times
never go backwards, which holds because commands on one aggregate are saved in order with
the time each command came with.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic
from psycopg import sql
from psycopg.rows import tuple_row

from ...domain.conversation import Conversation
from ...domain.definition_history import FlowDefinitionHistory
from ...domain.errors import BadInput, NotFound
from ...domain.events import LoggedEvent, stream_type
from ...domain.flow import Flow

if TYPE_CHECKING:
    from ..store.event_store import EventStore

PAGE_SIZE = 1000
AGGREGATES: tuple[type[Aggregate], ...] = (Conversation, Flow, FlowDefinitionHistory)


class FlowBegun(NamedTuple):
    """A flow a conversation started: the conversation's version and time, the flow's id
    and its definition's name."""

    version: int
    at: datetime
    flow_id: UUID
    definition: str = ""


@cache
def event_classes() -> dict[str, list[type]]:
    """Every event class of the aggregates, by short name (Started) and by qualified name
    (Conversation.Started)."""
    found: dict[str, list[type]] = {}
    for aggregate in AGGREGATES:
        for name, value in vars(aggregate).items():
            # Only classes stored under their own name count (not the Event bases, nor
            # the Created class the library generates, which inherit a topic).
            qualified = f"{aggregate.__name__}.{name}"
            event = isinstance(value, type) and issubclass(value, Aggregate.Event)
            topic = getattr(value, "TOPIC", None)
            if event and name != "Event" and topic == f"voxledger:{qualified}":
                found.setdefault(name, []).append(value)
                found.setdefault(qualified, []).append(value)
    return found


def topics_of(type_names: Iterable[str]) -> list[str]:
    """The stored topics of the named event types; BadInput for a name no aggregate has."""
    known = event_classes()
    topics: list[str] = []
    for name in type_names:
        if name not in known:
            short = sorted({n for n in known if "." not in n})
            raise BadInput(f"no event type {name!r}; known types: {', '.join(short)}")
        topics.extend(cls.TOPIC for cls in known[name])
    return topics


class History:
    """Pages of one store's events, by stream and version, decoded with the store's mapper."""

    def __init__(self, store: EventStore, page_size: int = PAGE_SIZE) -> None:
        self.store = store
        self.page_size = page_size
        recorder = store.recorder
        schema = recorder.datastore.schema
        self.events_table = sql.Identifier(schema, recorder.events_table_name)
        self.channel = recorder.channel_name
        self._decode = store.mapper.to_domain_event

    # -- one stream --------------------------------------------------------------------------

    def events(
        self,
        stream_id: UUID,
        *,
        after: int = 0,
        upto: int | None = None,
        topics: Sequence[str] | None = None,
    ) -> Iterator[LoggedEvent]:
        """The stream's events after version ``after`` (up to ``upto``), a page at a time."""
        while True:
            page = self._page(stream_id, after, upto, topics)
            # Decoded one at a time, so an event the code cannot read fails at its place.
            for position, stored in page:
                yield LoggedEvent(position, self._decode(stored))
            if len(page) < self.page_size:
                return
            after = page[-1][1].originator_version

    def last_version(self, stream_id: UUID) -> int:
        """The stream's newest version (0 if it has no events)."""
        rows = self._rows(
            "SELECT max(originator_version) FROM {events} WHERE originator_id = %s", stream_id
        )
        return rows[0][0] or 0

    def event(self, stream_id: UUID, version: int) -> Any:
        """One event of a stream."""
        page = self._page(stream_id, version - 1, version, None)
        if not page:
            raise NotFound(f"no version {version} of {stream_id}")
        return self._decode(page[0][1])

    def kind(self, stream_id: UUID) -> str:
        """Either "conversation" or "flow", from the stream's first event; NotFound if none."""
        try:
            return stream_type(self.event(stream_id, 1))
        except NotFound:
            raise NotFound(f"no conversation or flow {stream_id}") from None

    def version_at(self, stream_id: UUID, at: datetime, *, before: bool = False) -> int:
        """The stream's last version recorded at or before ``at`` (strictly before, with
        ``before``); 0 if none (the store's binary search over versions)."""
        return self.store.version_at(stream_id, at, before=before)

    # -- a conversation and its flows --------------------------------------------------------

    def flows_of(self, conversation_id: UUID) -> list[FlowBegun]:
        """The flows a conversation began, in order (only its FlowBegan events are read)."""
        topic = get_topic(Conversation.FlowBegan)
        return [
            FlowBegun(
                r.event.originator_version, r.event.timestamp, r.event.flow_id, r.event.definition
            )
            for r in self.events(conversation_id, topics=[topic])
        ]

    def streams_of(self, stream_id: UUID) -> list[UUID]:
        """A conversation's id and its flows' ids; a flow's id alone."""
        if self.kind(stream_id) == "flow":
            return [stream_id]
        return [stream_id, *(f.flow_id for f in self.flows_of(stream_id))]

    def merged(
        self,
        stream_ids: Sequence[UUID],
        *,
        after: Mapping[UUID, int] | None = None,
        upto: Mapping[UUID, int] | None = None,
        topics: Sequence[str] | None = None,
    ) -> Iterator[LoggedEvent]:
        """The events of several streams in one sequence, by time and then position in the
        log; one page per stream in memory at a time."""
        after, upto = after or {}, upto or {}
        streams = [
            self.events(s, after=after.get(s, 0), upto=upto.get(s), topics=topics)
            for s in stream_ids
        ]
        return heapq.merge(*streams, key=lambda r: (r.event.timestamp, r.position))

    def follow(
        self,
        conversation_id: UUID,
        *,
        after: Mapping[UUID, int],
        until: Callable[[], bool],
        poll_s: float = 0.2,
    ) -> Iterator[LoggedEvent]:
        """Events of a conversation and its flows as they are appended, after the versions
        given, until ``until()`` is true. Woken by the store's NOTIFY on every append, and
        reading at least every ``poll_s`` seconds in case a notification is missed."""
        seen = dict(after)
        pool = self.store.recorder.datastore.pool
        with psycopg.connect(pool.conninfo, **{**(pool.kwargs or {}), "autocommit": True}) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            while not until():
                yield from self.newer(seen)
                for _ in conn.notifies(timeout=poll_s, stop_after=1):
                    pass

    def newer(self, seen: dict[UUID, int]) -> list[LoggedEvent]:
        """The events of the streams in ``seen`` after the versions it holds, merged in
        order; a flow begun among them joins ``seen`` with its events in their place.
        Moves ``seen`` to the versions returned."""
        found: list[LoggedEvent] = []
        while True:
            for recorded in list(self.merged(list(seen), after=seen)):
                event = recorded.event
                seen[event.originator_id] = event.originator_version
                found.append(recorded)
                if isinstance(event, Conversation.FlowBegan) and event.flow_id not in seen:
                    # Read again with the new flow: its events go in their place among
                    # the conversation's later ones, not after them.
                    seen[event.flow_id] = 0
                    break
            else:
                return found

    # -- the SQL underneath --------------------------------------------------------------------

    def _page(
        self, stream_id: UUID, after: int, upto: int | None, topics: Sequence[str] | None
    ) -> list[tuple[int, StoredEvent]]:
        query = (
            "SELECT notification_id, originator_version, topic, state FROM {events} "
            "WHERE originator_id = %s AND originator_version > %s"
        )
        params: list[Any] = [stream_id, after]
        if upto is not None:
            query += " AND originator_version <= %s"
            params.append(upto)
        if topics is not None:
            query += " AND topic = ANY(%s)"
            params.append(list(topics))
        query += " ORDER BY originator_version LIMIT %s"
        params.append(self.page_size)
        return [
            (
                position,
                StoredEvent(
                    originator_id=stream_id, originator_version=v, topic=topic, state=bytes(state)
                ),
            )
            for position, v, topic, state in self._rows(query, *params)
        ]

    def _rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        statement = sql.SQL(query).format(events=self.events_table)  # type: ignore[arg-type]
        with (
            self.store.recorder.datastore.get_connection() as conn,
            conn.cursor(row_factory=tuple_row) as cursor,
        ):
            cursor.execute(statement, params, binary=True)  # bytea as bytes, not hex text
            return cursor.fetchall()


def plain(value: Any) -> Any:
    """A JSON-ready copy of event data and states (ids, times and enums as text)."""
    return msgspec.to_builtins(value, enc_hook=str)
