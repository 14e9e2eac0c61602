"""The `current` projection: one row per conversation and one per flow run, as they are now.

A page is folded in memory: the rows of the streams it touches come from memory (kept from
earlier pages) or are read in one query, every event is applied in log order, and the rows
it changed go back in one upsert per table.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads

from ..domain.conversation import STATUS_EVENTS, Conversation
from ..domain.events import stream_type
from ..domain.flow import STATUS_EVENTS as FLOW_STATUS_EVENTS
from ..domain.flow import Flow, FlowStatus
from .batch import upsert
from .projection import Page, StreamCache, Tables, continued, status_text

C = Conversation
Fold = Callable[[dict[str, Any] | None, Any], dict[str, Any] | None]

CONVERSATION_COLUMNS = (
    "conversation_id",
    "status",
    "channel",
    "participant",
    "started_at",
    "last_activity",
    "message_count",
    "turn_count",
    "active_flow_id",
    "version",
)
FLOW_COLUMNS = (
    "flow_id",
    "conversation_id",
    "definition",
    "definition_version",
    "mode",
    "current_step",
    "fields",
    "status",
    "started_at",
    "updated_at",
    "idle_timeout_s",
    "expires_at",
    "version",
)

DDL = (
    """CREATE TABLE {current_conversations} (
        conversation_id uuid PRIMARY KEY,
        status text NOT NULL,
        channel text NOT NULL,
        participant text,
        started_at timestamptz NOT NULL,
        last_activity timestamptz NOT NULL,
        message_count integer NOT NULL,
        turn_count integer NOT NULL,
        active_flow_id uuid,
        version bigint NOT NULL)""",
    "CREATE INDEX ON {current_conversations} (status, last_activity)",
    "CREATE INDEX ON {current_conversations} (last_activity)",
    # The expiry sweep's: conversations that have not ended, by how long they have idled.
    "CREATE INDEX ON {current_conversations} (last_activity) WHERE status <> 'ended'",
    """CREATE TABLE {current_flows} (
        flow_id uuid PRIMARY KEY,
        conversation_id uuid NOT NULL,
        definition text NOT NULL,
        definition_version integer NOT NULL,
        mode text,
        current_step text,
        fields jsonb NOT NULL,
        status text NOT NULL,
        started_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        idle_timeout_s double precision,
        expires_at timestamptz,
        version bigint NOT NULL)""",
    "CREATE INDEX ON {current_flows} (conversation_id)",
    "CREATE INDEX ON {current_flows} (definition, status)",
    "CREATE INDEX ON {current_flows} (expires_at) WHERE expires_at IS NOT NULL",
)

CONVERSATION_TYPES = (
    "uuid", "text", "text", "text", "timestamptz", "timestamptz", "int4", "int4", "uuid", "int8"
)  # fmt: skip
FLOW_TYPES = (
    "uuid", "uuid", "text", "int4", "text", "text", "jsonb", "text", "timestamptz",
    "timestamptz", "float8", "timestamptz", "int8",
)  # fmt: skip

CONVERSATIONS_CONFLICT = """ON CONFLICT (conversation_id) DO UPDATE SET
    status = excluded.status, last_activity = excluded.last_activity,
    message_count = excluded.message_count, turn_count = excluded.turn_count,
    active_flow_id = excluded.active_flow_id, version = excluded.version"""

FLOWS_CONFLICT = """ON CONFLICT (flow_id) DO UPDATE SET
    current_step = excluded.current_step, fields = excluded.fields, status = excluded.status,
    updated_at = excluded.updated_at, expires_at = excluded.expires_at,
    version = excluded.version"""


def fold_conversation(row: dict[str, Any] | None, e: Any) -> dict[str, Any] | None:
    """The conversation row after one of its events (None until it has started)."""
    kind = type(e)
    if kind is C.Started:
        row = dict.fromkeys(CONVERSATION_COLUMNS)
        row.update(
            conversation_id=e.originator_id,
            channel=e.channel,
            participant=e.participant,
            started_at=e.timestamp,
            message_count=0,
            turn_count=0,
        )
    if row is None:
        return None
    if kind in STATUS_EVENTS:
        row["status"] = status_text(e, row["status"])
    row["last_activity"] = e.timestamp
    row["version"] = e.originator_version
    if kind is C.MessageAdded:
        row["message_count"] += 1
    elif kind is C.TurnCompleted:
        row["turn_count"] += 1
    elif kind is C.FlowBegan:
        row["active_flow_id"] = e.flow_id
    elif kind is C.FlowFinished:
        row["active_flow_id"] = None
    return row


def fold_flow(row: dict[str, Any] | None, e: Any) -> dict[str, Any] | None:
    """The flow row after one of its events (None until it has started)."""
    kind = type(e)
    if kind is Flow.Started:
        row = dict.fromkeys(FLOW_COLUMNS)
        row.update(
            flow_id=e.originator_id,
            conversation_id=e.conversation_id,
            definition=e.definition,
            definition_version=e.definition_version,
            mode=e.mode,
            current_step=e.step,
            fields={},
            started_at=e.timestamp,
            idle_timeout_s=e.idle_timeout_s,
        )
    if row is None:
        return None
    if kind in FLOW_STATUS_EVENTS:
        row["status"] = status_text(e, row["status"])
        if kind is Flow.Completed:  # a cancelled or expired run keeps the step it was on
            row["current_step"] = None
    if kind is Flow.AnswerAccepted or kind is Flow.FieldEdited:
        row["fields"][e.field] = e.value
        row["current_step"] = e.next_step
    elif kind is Flow.EditRequested:
        row["current_step"] = e.step
    elif kind is Flow.AnswerWithdrawn:
        row["fields"].pop(e.field, None)
        row["current_step"] = e.step
    row["updated_at"] = e.timestamp
    row["version"] = e.originator_version
    timeout = row["idle_timeout_s"]
    row["expires_at"] = (
        e.timestamp + timedelta(seconds=timeout)
        if timeout is not None and row["status"] == FlowStatus.ACTIVE
        else None
    )
    return row


class CurrentState:
    """Conversations and flow runs as they are now: status, counts, step, answers."""

    name = "current"
    tables = ("current_conversations", "current_flows")

    def create(self, cur: psycopg.Cursor[Any], t: Tables) -> None:
        """Create the two tables and their indexes."""
        for statement in DDL:
            cur.execute(sql.SQL(statement).format(**t))

    def __init__(self) -> None:
        self._conversations: StreamCache[dict[str, Any]] = StreamCache()
        self._flows: StreamCache[dict[str, Any]] = StreamCache()

    def apply(self, cur: psycopg.Cursor[Any], t: Tables, page: Page) -> None:
        """Fold the page into the rows it touches and upsert them."""
        conversations, flows = [], []
        for entry in page:
            e = entry.event
            kind = stream_type(e)
            if kind == "conversation":
                conversations.append(e)
            elif kind == "flow":
                flows.append(e)
        if conversations:
            table = t["current_conversations"]
            rows = _fold(self._conversations, cur, table, "conversation_id", conversations,
                         fold_conversation)  # fmt: skip
            values = ([row[c] for c in CONVERSATION_COLUMNS] for row in rows)
            upsert(cur, table, CONVERSATION_TYPES, values, CONVERSATIONS_CONFLICT)
        if flows:
            table = t["current_flows"]
            rows = _fold(self._flows, cur, table, "flow_id", flows, fold_flow)
            values = ([row[c] for c in FLOW_COLUMNS] for row in rows)
            upsert(cur, table, FLOW_TYPES, values, FLOWS_CONFLICT)

    def forget(self) -> None:
        """Drop the rows kept in memory."""
        self._conversations.clear()
        self._flows.clear()


def _fold(
    cache: StreamCache[dict[str, Any]],
    cur: psycopg.Cursor[Any],
    table: sql.Identifier,
    key: str,
    events: list[Any],
    fold: Fold,
) -> list[dict[str, Any]]:
    """Apply the events in order to their streams' rows (kept in memory, else read from the
    table); the rows they changed."""
    rows = cache.get(continued(events), lambda ids: _load(cur, table, key, ids))
    changed = {}
    for e in events:
        row = fold(rows.get(e.originator_id), e)
        if row is not None:
            rows[e.originator_id] = changed[e.originator_id] = row
    cache.trim()
    return list(changed.values())


def _load(
    cur: psycopg.Cursor[Any], table: sql.Identifier, key: str, ids: list[UUID]
) -> dict[UUID, dict[str, Any]]:
    with cur.connection.cursor(row_factory=dict_row, binary=True) as c:
        set_json_loads(msgspec.json.decode, context=c)
        c.execute(
            sql.SQL("SELECT * FROM {} WHERE {} = ANY(%b)").format(table, sql.Identifier(key)),
            (ids,),
        )
        return {r[key]: r for r in c}
