"""Replay: rebuild conversations and flows from their events with the code as it is now,
and check what was derived from those events before: the stored snapshots, and the rows
of the current-state projection.

This is how an operator learns that new code (new upcasters, changed apply methods) still
reads old events the way the old code did. Each difference names the event after which it
appears: a snapshot is compared with the state folded up to its version; a projection row
with the state at the last event the projection had applied (the events it has not reached
yet are lag, not a difference).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg import sql
from psycopg.rows import dict_row

from ...domain.conversation import Conversation
from ...domain.flow import Flow
from ...projections.current import CurrentState
from ...projections.runner import TRACKING_TABLE
from ..store.event_store import EventStore
from ..store.mapper import CorruptEvent, ErasedState
from .diff import diff
from .history import History, plain

_TABLES = dict(zip(("conversation", "flow"), CurrentState.tables, strict=True))
_KEYS = {"conversation": "conversation_id", "flow": "flow_id"}


class Difference(msgspec.Struct, frozen=True):
    """Something stored that the events, replayed now, do not agree with."""

    stream_id: UUID
    stream_type: str
    source: str  # "events" (cannot be replayed), "snapshot" or "projection"
    version: int  # the event after which the difference appears
    event_type: str | None
    path: str
    replayed: Any = None  # what the events say
    stored: Any = None  # what the snapshot or the row says


class Tally(msgspec.Struct):
    """What a replay went through."""

    streams: int = 0
    events: int = 0
    snapshots: int = 0
    rows: int = 0
    differences: int = 0
    projection: bool = True  # False when the schema has no current-state projection


class Replayer:
    """Replays streams of one store and yields every difference it finds."""

    def __init__(self, store: EventStore, history: History | None = None) -> None:
        self.store = store
        self.history = history or History(store)
        self.tally = Tally()
        datastore = store.recorder.datastore
        self.schema = datastore.schema
        assert store.snapshots is not None  # the store is configured with snapshots on
        snapshots = store.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
        self._snapshots = sql.Identifier(self.schema, snapshots)
        self._position: int | None = self._projection_position()
        self.tally.projection = self._position is not None

    def all_streams(self) -> Iterator[UUID]:
        """Every conversation, then every flow."""
        yield from self.store.ids_of(Conversation.Started)
        yield from self.store.ids_of(Flow.Started)

    def check(self, stream_id: UUID, *, verify: bool = True) -> Iterator[Difference]:
        """Fold the stream's events; with ``verify``, compare its snapshots and its
        projection row with the folded state."""
        kind = self.history.kind(stream_id)
        self.tally.streams += 1
        snapshot_versions = self._snapshot_versions(stream_id) if verify else set()
        row = self._row(kind, stream_id) if verify and self._position is not None else None
        expected: tuple[int, str, dict[str, Any]] | None = None
        aggregate: Any = None
        version = 0
        events = self.history.events(stream_id)
        while True:
            try:
                recorded = next(events, None)
            except CorruptEvent as e:
                yield self._found(stream_id, kind, "events", version + 1, None, "", str(e), None)
                return  # nothing after an unreadable event can be trusted
            if recorded is None:
                break
            event = recorded.event
            version, event_type = event.originator_version, type(event).__name__
            try:
                aggregate = event.mutate(aggregate)
            except Exception as e:  # any failure of an apply method is what replay looks for
                message = f"cannot apply: {type(e).__name__}: {e}"
                yield self._found(stream_id, kind, "events", version, event_type, "", message)
                return
            self.tally.events += 1
            if version in snapshot_versions:
                yield from self._compare_snapshot(kind, aggregate, event_type)
            if self._position is not None and recorded.position <= self._position:
                expected = (version, event_type, _row_of(aggregate))
        if verify and self._position is not None:
            yield from self._compare_row(stream_id, kind, expected, row)

    # -- snapshots ---------------------------------------------------------------------------

    def _compare_snapshot(self, kind: str, aggregate: Any, event_type: str) -> Iterator[Difference]:
        self.tally.snapshots += 1
        assert self.store.snapshots is not None
        v = aggregate.version
        try:
            (snapshot,) = self.store.snapshots.get(aggregate.id, gt=v - 1, lte=v)
            stored = snapshot.state  # type: ignore[attr-defined]
        except ErasedState:
            # Sealed with a key erased since: nothing in it can be read, so nothing in it
            # can disagree (the store loads such a stream from its events).
            self.tally.snapshots -= 1
            return
        except (CorruptEvent, ValueError, AttributeError) as e:
            yield self._found(aggregate.id, kind, "snapshot", v, event_type, "", None, f"{e}")
            return
        for change in diff(aggregate.state(), stored):
            yield self._found(
                aggregate.id, kind, "snapshot", v, event_type, change.path, change.old, change.new
            )

    def _snapshot_versions(self, stream_id: UUID) -> set[int]:
        rows = self._query(
            sql.SQL("SELECT originator_version FROM {} WHERE originator_id = %s").format(
                self._snapshots
            ),
            stream_id,
        )
        return {r["originator_version"] for r in rows}

    # -- projection rows ---------------------------------------------------------------------

    def _compare_row(
        self,
        stream_id: UUID,
        kind: str,
        expected: tuple[int, str, dict[str, Any]] | None,
        row: dict[str, Any] | None,
    ) -> Iterator[Difference]:
        if expected is None and row is None:
            return  # the projection has not reached this stream yet
        self.tally.rows += 1
        if expected is None:
            yield self._found(stream_id, kind, "projection", 0, None, "(row)", None, "a row")
            return
        version, event_type, wanted = expected
        if row is None:
            yield self._found(stream_id, kind, "projection", version, event_type, "(row)", "a row")
            return
        for column, value in wanted.items():
            if column in row and not _same(value, row[column]):
                yield self._found(
                    stream_id, kind, "projection", version, event_type, column, value, row[column]
                )

    def _row(self, kind: str, stream_id: UUID) -> dict[str, Any] | None:
        table = sql.Identifier(self.schema, _TABLES[kind])
        rows = self._query(
            sql.SQL("SELECT * FROM {} WHERE {} = %s").format(table, sql.Identifier(_KEYS[kind])),
            stream_id,
        )
        return rows[0] if rows else None

    def _projection_position(self) -> int | None:
        """How far the current-state projection has applied the log; None without one."""
        table = sql.Identifier(self.schema, _TABLES["conversation"]).as_string()
        if self._query(sql.SQL("SELECT to_regclass(%s) AS t"), table)[0]["t"] is None:
            return None
        tracking = sql.Identifier(self.schema, TRACKING_TABLE)
        rows = self._query(
            sql.SQL("SELECT position FROM {} WHERE projection = %s").format(tracking),
            CurrentState.name,
        )
        return rows[0]["position"] if rows else 0

    # -- plumbing ----------------------------------------------------------------------------

    def _found(
        self,
        stream_id: UUID,
        kind: str,
        source: str,
        version: int,
        event_type: str | None,
        path: str,
        replayed: Any,
        stored: Any,
    ) -> Difference:
        self.tally.differences += 1
        return Difference(stream_id, kind, source, version, event_type, path, replayed, stored)

    def _query(self, statement: sql.Composable, *params: Any) -> list[dict[str, Any]]:
        with (
            self.store.recorder.datastore.get_connection() as conn,
            conn.cursor(row_factory=dict_row) as cursor,
        ):
            cursor.execute(statement, params)
            return cursor.fetchall()


def _row_of(aggregate: Any) -> dict[str, Any]:
    """The current-state row the projection should hold for this aggregate: the same facts,
    computed from the aggregate instead of from the events one by one."""
    if isinstance(aggregate, Conversation):
        return {
            "conversation_id": aggregate.id,
            "status": str(aggregate.status),
            "channel": aggregate.channel,
            "participant": aggregate.participant,
            "started_at": aggregate.created_on,
            "last_activity": aggregate.modified_on,
            "message_count": len(aggregate.messages),
            "turn_count": aggregate.usage.turns,
            "active_flow_id": aggregate.active_flow_id,
            "version": aggregate.version,
        }
    state = aggregate.state()
    return {
        "flow_id": state.id,
        "conversation_id": state.conversation_id,
        "definition": state.definition,
        "definition_version": state.definition_version,
        "mode": state.mode,
        "current_step": state.step,
        "fields": state.answers,
        "status": str(state.status),
        "started_at": state.started_at,
        "updated_at": state.updated_at,
        "idle_timeout_s": state.idle_timeout_s,
        "expires_at": state.expires_at,
        "version": state.version,
    }


def _same(replayed: Any, stored: Any) -> bool:
    if isinstance(replayed, datetime) and isinstance(stored, datetime):
        return replayed == stored  # the same instant, whatever time zone the session uses
    return bool(plain(replayed) == plain(stored))
