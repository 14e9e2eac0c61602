"""Export a conversation and its flows as JSON lines, and import such a file into another
database: how a production incident is reproduced on a laptop.

A file is a header line, then one line per event in time order::

    {"format": "voxledger-export", "format_version": 1, "conversation_id": "<id>",
     "streams": {"<id>": "conversation", "<flow id>": "flow"}}
    {"stream": "<id>", "stream_type": "conversation", "version": 1,
     "topic": "voxledger:Conversation.Started", "time": "2026-11-21T14:00:01Z",
     "state": "<base64 msgpack>", "data": {<the same, readable>}}

``state`` is the event as this code reads it (upcast to the current class version), in the
store's own msgpack form but with personal data in plaintext: sealed values are bound to
the source database's keys and stream ids, so they are opened on export and sealed again
with the target's keys on import. Typed values (ids, times, structs) survive exactly. An
erased stream exports its redactions; ``--redact`` redacts every personal value. ``data``
is for people; an import refuses a file whose ``data`` does not match its ``state`` rather
than silently ignoring an edit.

An import checks every line (JSON, known topics, versions from 1 without gaps, references
between the streams, no field the event class does not have) and re-enacts every event with
the command that records it (`domain.reenactment`): imported events obey the same rules as
commands, and a refusal names the line. It writes in one transaction, with the streams' new
data keys and snapshots: any problem and nothing of the file is written. From its first
append the transaction holds the appends' lock, as every append does, so other writers to
that log wait until the import commits.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import Any, Literal
from uuid import UUID, uuid4

import msgspec
from eventsourcing.domain import AggregateCreated
from eventsourcing.persistence import IntegrityError, Mapper, StoredEvent
from psycopg import sql
from psycopg.rows import tuple_row

from ...domain.conversation import Conversation
from ...domain.errors import BadInput, Conflict, VoxledgerError
from ...domain.events import fields_of
from ...domain.flow import Flow
from ...domain.flow_definition import FlowRegistry
from ...domain.reenactment import Reenactment
from ..store.event_store import EventStore
from ..store.mapper import ERASED_TEXT
from .history import History, event_classes, plain, stream_type

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


def export_lines(
    history: History, conversation_id: UUID, *, redact: bool = False
) -> Iterator[bytes]:
    """The export of a conversation and its flows, one JSON line at a time; with
    ``redact``, every personal value replaced by its redaction."""
    if history.kind(conversation_id) != "conversation":
        owner = history.event(conversation_id, 1).conversation_id
        raise BadInput(f"{conversation_id} is a flow; export its conversation {owner}")
    streams = history.streams_of(conversation_id)
    kinds = {s: "conversation" if s == conversation_id else "flow" for s in streams}
    yield _line(Header(FORMAT, FORMAT_VERSION, conversation_id, kinds))  # type: ignore[arg-type]
    portable = _portable(history.store)
    for recorded in history.merged(streams):
        event = _redacted(recorded.event) if redact else recorded.event
        stored = portable.to_stored_event(event)
        yield _line(
            Line(
                stream=stored.originator_id,  # type: ignore[arg-type]
                stream_type=stream_type(event),  # type: ignore[arg-type]
                version=stored.originator_version,
                topic=stored.topic,
                time=event.timestamp,
                state=stored.state,
                data=_readable(stored.state),
            )
        )


def import_lines(
    store: EventStore, lines: Iterable[bytes], flows: FlowRegistry, *, new_ids: bool = False
) -> Imported:
    """Check an export and write it to the store in one transaction (all or nothing); its
    flows must run definitions ``flows`` knows. With ``new_ids`` every stream gets a fresh
    id, and references between them follow."""
    numbered = ((n, line) for n, line in enumerate(lines, start=1) if line.strip())
    first = next(numbered, None)
    if first is None:
        raise BadInput("the file is empty; expected a voxledger export")
    header = _header(first[1])
    ids = {old: uuid4() if new_ids else old for old in header.streams}
    reader = _Reader(store, header, ids, new_ids, flows)
    n = 1
    try:
        with (
            store.keys.collecting() as new_keys,
            _transaction(store, list(ids.values()), new_keys) as batches,
        ):
            for n, line in numbered:
                try:
                    events, snapshots = reader.read(line)
                except Exception as e:
                    # Whatever stops the current code reading or applying a line refuses
                    # the file: the transaction rolls back and nothing is written.
                    raise BadInput(f"line {n}: {e}") from None
                batches.add(events, snapshots)
            try:
                reader.finish()
            except VoxledgerError as e:
                raise BadInput(f"line {n}: {e}") from None
    except IntegrityError:
        store.keys.withdrawn(new_keys.items())
        # Checked first, so only a writer that created one of the ids meanwhile gets here.
        raise Conflict(
            "a stream of the file was written meanwhile; import with --new-ids"
        ) from None
    except BaseException:
        store.keys.withdrawn(new_keys.items())
        raise
    store.keys.issued(new_keys.items())
    return Imported(header.conversation_id, ids, batches.events, batches.snapshots)


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
        self,
        store: EventStore,
        header: Header,
        ids: dict[UUID, UUID],
        new_ids: bool,
        flows: FlowRegistry,
    ) -> None:
        self.store = store
        self.header = header
        self.ids = ids
        self.new_ids = new_ids
        self.portable = _portable(store)
        self.aggregates: dict[UUID, Any] = {}
        # Each stream's last version read (its state may be ahead: a command's later events
        # are applied with its first, and the file's next lines must be those).
        self.versions: dict[UUID, int] = {}
        self.reenactment = Reenactment(flows)

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
        event = self.portable.to_domain_event(
            StoredEvent(line.stream, line.version, line.topic, line.state)
        )
        unknown = set(vars(event)) - _EVENT_METADATA - set(fields_of(type(event)))
        if unknown:
            raise BadInput(f"{line.topic} has no field {', '.join(sorted(unknown))}")
        if self.new_ids:
            event = _with_ids(event, self.ids)
        self._check_references(event)
        new_id = self.ids[line.stream]
        # The command that records the event, run on the stream as built so far.
        aggregate = self.reenactment.admit(self.aggregates.get(new_id), event)
        self.aggregates[new_id] = aggregate
        self.versions[new_id] = line.version
        # Sealed again here: with this database's key for the stream (under its new id).
        stored = self.store.mapper.to_stored_event(event)
        snapshots = []
        if aggregate.version == line.version and self.store.snapshot_due(
            type(aggregate), line.version, 1
        ):
            snapshot = type(aggregate).Snapshot.take(aggregate)
            snapshots.append(self.store.mapper.to_stored_event(snapshot))
        return [stored], snapshots

    def finish(self) -> None:
        """Refuse a file that lists a stream it holds no events of, or that ends part way
        through what one command records."""
        self.reenactment.finish()
        for old, new in self.ids.items():
            if new not in self.aggregates:
                raise BadInput(f"stream {old} is listed in the header but has no events")

    def _check_version(self, line: Line) -> None:
        last = self.versions.get(self.ids[line.stream], 0)
        expected = last + 1
        if line.version != expected:
            where = f"after version {last}" if last else "as its first event"
            raise BadInput(f"stream {line.stream} has version {line.version} {where}")

    def _check_topic(self, line: Line) -> None:
        # Only topics of known event classes: a topic names a module to import, and a
        # file must not make this process import whatever it names.
        cls = _known_topics().get(line.topic)
        if cls is None:
            raise BadInput(f"unknown event topic {line.topic!r}")
        if cls.__qualname__.partition(".")[0].lower() != line.stream_type:
            raise BadInput(f"{line.topic!r} is not an event of a {line.stream_type}")
        if (line.version == 1) != issubclass(cls, AggregateCreated):
            raise BadInput(f"stream {line.stream} must begin with its Started event, and only once")

    def _check_references(self, event: Any) -> None:
        streams = set(self.ids.values())
        if isinstance(event, Conversation.FlowBegan) and event.flow_id not in streams:
            raise BadInput(f"it begins flow {event.flow_id}, which the file does not hold")
        if isinstance(event, Flow.Started) and event.conversation_id not in streams:
            raise BadInput(f"its conversation {event.conversation_id} is not in the file")


# The library keeps these beside an event's own fields (a created event names its class).
_EVENT_METADATA = {"originator_id", "originator_version", "timestamp", "originator_topic"}


@cache
def _known_topics() -> dict[str, type]:
    return {cls.TOPIC: cls for classes in event_classes().values() for cls in classes}


def _portable(store: EventStore) -> Mapper[UUID]:
    """The store's mapper without its key ring: it writes personal data in plaintext and
    reads plaintext rows (a sealed value, from elsewhere, it refuses)."""
    portable = copy.copy(store.mapper)
    portable.keys = None  # type: ignore[attr-defined]
    return portable


def _redacted(event: Any) -> Any:
    """The event with its personal values (``PERSONAL``) replaced by redactions of the
    same shape, as an erased stream reads."""
    changes = {}
    for name in getattr(type(event), "PERSONAL", ()):
        value = getattr(event, name, None)
        if isinstance(value, (dict, list)):
            changes[name] = type(value)()
        elif value is not None:
            changes[name] = ERASED_TEXT
    return _copy_with(event, changes)


def _with_ids(event: Any, ids: dict[UUID, UUID]) -> Any:
    """The event with every stream id it carries (its own, and references such as
    FlowBegan.flow_id or Flow.Started.conversation_id) replaced by the new one."""
    return _copy_with(
        event, {k: ids[v] for k, v in vars(event).items() if isinstance(v, UUID) and v in ids}
    )


def _copy_with(event: Any, changes: dict[str, Any]) -> Any:
    # Events are frozen: a copy with other field values is built the way the mapper
    # builds a decoded one.
    copy_ = object.__new__(type(event))
    object.__setattr__(copy_, "__dict__", {**vars(event), **changes})
    return copy_


def _readable(state: bytes) -> dict[str, Any]:
    """The fields of a line's state, as JSON values."""
    decoded = msgspec.msgpack.decode(state)
    return msgspec.json.decode(msgspec.json.encode(plain(decoded)))


def _line(value: msgspec.Struct) -> bytes:
    return msgspec.json.encode(value) + b"\n"


# -- writing ---------------------------------------------------------------------------------


class _Batches:
    """Events and snapshots waiting to be written, a batch at a time."""

    def __init__(
        self,
        cursor: Any,
        append: str,
        snapshots: sql.Identifier,
        new_keys: dict[UUID, bytes],
    ) -> None:
        self.cursor = cursor
        self.append = append
        self.command_id = uuid4()  # the import is one command: its events share an id
        self.new_keys = new_keys  # keys sealed with so far; each written with its events
        self.written_keys: set[UUID] = set()
        self.insert_snapshots = sql.SQL(
            "INSERT INTO {} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[])"
        ).format(snapshots)
        self.pending: list[StoredEvent] = []
        self.pending_snapshots: list[StoredEvent] = []
        self.events = 0
        self.snapshots = 0

    def add(self, events: list[StoredEvent], snapshots: list[StoredEvent]) -> None:
        self.pending.extend(events)
        self.pending_snapshots.extend(snapshots)
        # A snapshot of a long conversation is large: write it at once, keep memory flat.
        if len(self.pending) >= BATCH or snapshots:
            self.flush()

    def flush(self) -> None:
        # Binary parameters: a bytea array sent as text would escape every byte.
        if self.pending:
            keys = [(s, k) for s, k in self.new_keys.items() if s not in self.written_keys]
            self.written_keys.update(s for s, _ in keys)
            params = (
                *_columns(self.pending),
                [self.command_id] * len(self.pending),
                [stream for stream, _ in keys],
                [key for _, key in keys],
                False,
            )
            self.cursor.execute(self.append, params, binary=True)
            self.events += len(self.pending)
        if self.pending_snapshots:
            self.cursor.execute(self.insert_snapshots, _columns(self.pending_snapshots))
            self.snapshots += len(self.pending_snapshots)
        self.pending, self.pending_snapshots = [], []


def _columns(rows: list[StoredEvent]) -> tuple[list[Any], ...]:
    return (
        [e.originator_id for e in rows],
        [e.originator_version for e in rows],
        [e.topic for e in rows],
        [e.state for e in rows],
    )


@contextmanager
def _transaction(
    store: EventStore, stream_ids: Sequence[UUID], new_keys: dict[UUID, bytes]
) -> Iterator[_Batches]:
    """One transaction for the whole import: if the block raises, nothing is written.

    Events go through the store's append function, as every save does: it takes the appends'
    lock (so notification ids commit in order for readers tailing the log),
    sends the NOTIFY, and works for a role that may append but not insert directly."""
    recorder, snapshots = store.recorder, store.snapshots
    assert snapshots is not None
    datastore = recorder.datastore
    events_table = sql.Identifier(datastore.schema, recorder.events_table_name)
    snapshots_table = sql.Identifier(
        datastore.schema,
        snapshots.recorder.events_table_name,  # type: ignore[attr-defined]
    )
    with (
        datastore.get_connection() as conn,
        conn.transaction(),
        conn.cursor(row_factory=tuple_row) as cursor,
    ):
        cursor.execute(
            sql.SQL("SELECT DISTINCT originator_id FROM {} WHERE originator_id = ANY(%s)").format(
                events_table
            ),
            (list(stream_ids),),
        )
        held = {row[0] for row in cursor.fetchall()}
        taken = [str(stream) for stream in stream_ids if stream in held]
        if taken:
            raise Conflict(f"the database already holds {', '.join(taken)}; import with --new-ids")
        append = recorder.append_statement  # type: ignore[attr-defined]
        batches = _Batches(cursor, append, snapshots_table, new_keys)
        yield batches
        batches.flush()
