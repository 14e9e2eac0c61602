"""Export a conversation and its flows as JSON lines, and import such a file into another
database: how a production incident is reproduced on a laptop.

A file is a header line, then one line per event in time order::

    {"format": "voxledger-export", "format_version": 1, "conversation_id": "<id>",
     "streams": {"<id>": "conversation", "<flow id>": "flow"}}
    {"stream": "<id>", "stream_type": "conversation", "version": 1,
     "topic": "voxledger:Conversation.Started", "time": "2026-11-21T14:00:01Z",
     "state": "<base64 of the stored msgpack>", "data": {<the same, readable>}}

``state`` carries the stored bytes as they are, so typed values and events of older class
versions survive exactly. ``data`` is for people; an import refuses a file whose ``data``
does not match its ``state`` rather than silently ignoring an edit.

An import checks every line (JSON, known topics, versions from 1 without gaps, references
between the streams, every event decoded and applied by the current code) and writes in one
transaction, taking snapshots as the store does: any problem and nothing is written. The
transaction holds the events table's write lock, as every append does, so concurrent
writers to that database wait until the import commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid4

import msgspec
from eventsourcing.domain import Aggregate, AggregateCreated
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import TopicError, resolve_topic
from psycopg import sql

from ...domain.conversation import Conversation
from ...domain.errors import BadInput, Conflict, VoxledgerError
from ...domain.flow import Flow
from .application import EventStore
from .history import History, plain, stream_type

FORMAT = "voxledger-export"
FORMAT_VERSION = 1
BATCH = 1000
StreamType = Literal["conversation", "flow"]


class Header(msgspec.Struct, frozen=True):
    """The first line: what the file holds."""

    format: str
    format_version: int
    conversation_id: UUID
    streams: dict[UUID, StreamType]


class Line(msgspec.Struct, frozen=True):
    """One stored event."""

    stream: UUID
    stream_type: StreamType
    version: int
    topic: str
    time: datetime
    state: bytes  # base64 in JSON
    data: dict[str, Any]


class Imported(msgspec.Struct, frozen=True):
    """What an import wrote: each stream's id in the file and in the database."""

    conversation_id: UUID
    streams: dict[UUID, UUID]
    events: int
    snapshots: int


def export_lines(history: History, conversation_id: UUID) -> Iterator[bytes]:
    """The export of a conversation and its flows, one JSON line at a time."""
    if history.kind(conversation_id) != "conversation":
        owner = history.event(conversation_id, 1).conversation_id
        raise BadInput(f"{conversation_id} is a flow; export its conversation {owner}")
    streams = history.streams_of(conversation_id)
    kinds = {s: "conversation" if s == conversation_id else "flow" for s in streams}
    yield _line(Header(FORMAT, FORMAT_VERSION, conversation_id, kinds))  # type: ignore[arg-type]
    for recorded in history.merged(streams):
        stored = recorded.stored
        yield _line(
            Line(
                stream=stored.originator_id,  # type: ignore[arg-type]
                stream_type=stream_type(recorded.event),  # type: ignore[arg-type]
                version=stored.originator_version,
                topic=stored.topic,
                time=recorded.event.timestamp,
                state=stored.state,
                data=_readable(stored.state),
            )
        )


def import_lines(store: EventStore, lines: Iterable[bytes], *, new_ids: bool = False) -> Imported:
    """Check an export and write it to the store in one transaction (all or nothing).
    With ``new_ids`` every stream gets a fresh id, and references between them follow."""
    numbered = ((n, line) for n, line in enumerate(lines, start=1) if line.strip())
    first = next(numbered, None)
    if first is None:
        raise BadInput("the file is empty; expected a voxledger export")
    header = _header(first[1])
    ids = {old: uuid4() if new_ids else old for old in header.streams}
    reader = _Reader(store, header, ids, new_ids)
    with _Writer(store, list(ids.values())) as writer:
        for n, line in numbered:
            try:
                events, snapshots = reader.read(line)
            except (VoxledgerError, ValueError, TypeError, KeyError, AttributeError) as e:
                raise BadInput(f"line {n}: {e}") from None
            writer.add(events, snapshots)
        reader.finish()
    return Imported(header.conversation_id, ids, writer.events, writer.snapshots)


# -- reading and checking ------------------------------------------------------------------


def _header(line: bytes) -> Header:
    try:
        header = msgspec.json.decode(line, type=Header)
    except msgspec.MsgspecError as e:
        raise BadInput(f"line 1: not a voxledger export header: {e}") from None
    if header.format != FORMAT or header.format_version != FORMAT_VERSION:
        raise BadInput(
            f"line 1: format {header.format!r} version {header.format_version}; "
            f"this voxledger reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    if header.streams.get(header.conversation_id) != "conversation":
        raise BadInput("line 1: the header does not list its conversation as a stream")
    return header


class _Reader:
    """Checks event lines one by one and turns them into the events to store."""

    def __init__(
        self, store: EventStore, header: Header, ids: dict[UUID, UUID], new_ids: bool
    ) -> None:
        self.store = store
        self.header = header
        self.ids = ids
        self.new_ids = new_ids
        self.aggregates: dict[UUID, Any] = {}

    def read(self, raw: bytes) -> tuple[list[StoredEvent], list[StoredEvent]]:
        """The stored event of one line, and a snapshot if the stream reached one."""
        try:
            line = msgspec.json.decode(raw, type=Line)
        except msgspec.MsgspecError as e:
            raise BadInput(f"not an event line: {e}") from None
        kind = self.header.streams.get(line.stream)
        if kind is None:
            raise BadInput(f"stream {line.stream} is not listed in the header")
        if kind != line.stream_type:
            raise BadInput(f"stream {line.stream} is a {kind}, not a {line.stream_type}")
        self._check_version(line)
        self._check_topic(line)
        if _readable(line.state) != line.data:
            raise BadInput("its data does not match its state (edit neither, or both)")
        stored = StoredEvent(line.stream, line.version, line.topic, line.state)
        event = self.store.mapper.to_domain_event(stored)
        if self.new_ids:
            event = _with_ids(event, self.ids)
            stored = self.store.mapper.to_stored_event(event)
        self._check_references(event)
        new_id = self.ids[line.stream]
        aggregate = event.mutate(self.aggregates.get(new_id))
        self.aggregates[new_id] = aggregate
        every = self.store.snapshot_every.get(type(aggregate))
        snapshots = []
        if every and aggregate.version % every == 0:
            snapshot = type(aggregate).Snapshot.take(aggregate)
            snapshots.append(self.store.mapper.to_stored_event(snapshot))
        return [stored], snapshots

    def finish(self) -> None:
        """Refuse a file that lists a stream it holds no events of."""
        for old, new in self.ids.items():
            if new not in self.aggregates:
                raise BadInput(f"stream {old} is listed in the header but has no events")

    def _check_version(self, line: Line) -> None:
        aggregate = self.aggregates.get(self.ids[line.stream])
        expected = aggregate.version + 1 if aggregate else 1
        if line.version != expected:
            where = f"after version {expected - 1}" if aggregate else "as its first event"
            raise BadInput(f"stream {line.stream} has version {line.version} {where}")

    def _check_topic(self, line: Line) -> None:
        try:
            cls = resolve_topic(line.topic)
        except TopicError:
            raise BadInput(f"unknown event topic {line.topic!r}") from None
        owner = cls.__qualname__.partition(".")[0].lower()
        if not (isinstance(cls, type) and issubclass(cls, Aggregate.Event)) or (
            owner != line.stream_type
        ):
            raise BadInput(f"{line.topic!r} is not an event of a {line.stream_type}")
        if (line.version == 1) != issubclass(cls, AggregateCreated):
            raise BadInput(f"stream {line.stream} must begin with its Started event, and only once")

    def _check_references(self, event: Any) -> None:
        streams = set(self.ids.values())
        if isinstance(event, Conversation.FlowBegan) and event.flow_id not in streams:
            raise BadInput(f"it begins flow {event.flow_id}, which the file does not hold")
        if isinstance(event, Flow.Started) and event.conversation_id not in streams:
            raise BadInput(f"its conversation {event.conversation_id} is not in the file")


def _with_ids(event: Any, ids: dict[UUID, UUID]) -> Any:
    """The event with every stream id it carries (its own, and references such as
    FlowBegan.flow_id or Flow.Started.conversation_id) replaced by the new one."""
    state = {k: ids.get(v, v) if isinstance(v, UUID) else v for k, v in vars(event).items()}
    copy = object.__new__(type(event))
    object.__setattr__(copy, "__dict__", state)
    return copy


def _readable(state: bytes) -> dict[str, Any]:
    """The stored fields exactly as stored (not upcast), as JSON values."""
    decoded = msgspec.msgpack.decode(state)
    return msgspec.json.decode(msgspec.json.encode(plain(decoded)))


def _line(value: msgspec.Struct) -> bytes:
    return msgspec.json.encode(value) + b"\n"


# -- writing ---------------------------------------------------------------------------------


class _Writer:
    """One transaction holding the events table's write lock: appends in batches, and
    rolls everything back if the block it serves raises."""

    def __init__(self, store: EventStore, stream_ids: Sequence[UUID]) -> None:
        recorder = store.recorder
        datastore = recorder.datastore
        assert store.snapshots is not None
        self.datastore = datastore
        self.stream_ids = stream_ids
        self.events_table = sql.Identifier(datastore.schema, recorder.events_table_name)
        self.snapshots_table = sql.Identifier(
            datastore.schema,
            store.snapshots.recorder.events_table_name,  # type: ignore[attr-defined]
        )
        self.channel = sql.Identifier(recorder.channel_name)
        self.pending: list[StoredEvent] = []
        self.pending_snapshots: list[StoredEvent] = []
        self.events = 0
        self.snapshots = 0

    def __enter__(self) -> _Writer:
        self._connection = self.datastore.get_connection()
        conn = self._connection.__enter__()
        self._transaction = conn.transaction()
        self._transaction.__enter__()
        self.cursor = conn.cursor()
        self.cursor.execute(
            sql.SQL("SET LOCAL lock_timeout = {}").format(
                sql.Literal(f"{self.datastore.lock_timeout}s")
            )
        )
        # The same lock every append takes: notification ids then commit in order, so a
        # projection tailing the log never passes over a row that commits later.
        self.cursor.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(self.events_table))
        self.cursor.execute(
            sql.SQL("SELECT DISTINCT originator_id FROM {} WHERE originator_id = ANY(%s)").format(
                self.events_table
            ),
            (list(self.stream_ids),),
        )
        taken = [str(row["originator_id"]) for row in self.cursor.fetchall()]
        if taken:
            self.__exit__(Conflict, None, None)
            raise Conflict(f"the database already holds {', '.join(taken)}; import with --new-ids")
        return self

    def add(self, events: list[StoredEvent], snapshots: list[StoredEvent]) -> None:
        self.pending.extend(events)
        self.pending_snapshots.extend(snapshots)
        if len(self.pending) >= BATCH or self.pending_snapshots:
            self._flush()

    def _flush(self) -> None:
        for table, rows in (
            (self.events_table, self.pending),
            (self.snapshots_table, self.pending_snapshots),
        ):
            if rows:
                self.cursor.execute(
                    sql.SQL(
                        "INSERT INTO {} (originator_id, originator_version, topic, state) "
                        "SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[])"
                    ).format(table),
                    (
                        [e.originator_id for e in rows],
                        [e.originator_version for e in rows],
                        [e.topic for e in rows],
                        [e.state for e in rows],
                    ),
                )
        self.events += len(self.pending)
        self.snapshots += len(self.pending_snapshots)
        self.pending, self.pending_snapshots = [], []

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        try:
            if kind is None:
                self._flush()
                self.cursor.execute(sql.SQL("NOTIFY {}").format(self.channel))
        finally:
            self._transaction.__exit__(kind, error, trace)
            self._connection.__exit__(kind, error, trace)
