"""The `outbox` projection: the outbound messages whose delivery has not ended, one row each.

A row appears when a message is queued (in the save that decided it) and goes when its
delivery ends (delivered in full, or failed for good), so the table always says which
conversations have something to send, oldest first. It holds no content: the delivery
worker reads what to send from the conversation itself, so an erasure needs nothing here.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from ..domain.conversation import Conversation
from .batch import upsert
from .projection import Page, Tables

C = Conversation

DDL = (
    """CREATE TABLE {outbox_pending} (
        conversation_id uuid NOT NULL,
        item_id text NOT NULL,
        position bigint NOT NULL,
        channel text NOT NULL,
        kind text NOT NULL,
        queued_at timestamptz NOT NULL,
        PRIMARY KEY (conversation_id, item_id))""",
    "CREATE INDEX ON {outbox_pending} (channel, position)",
)
PENDING_TYPES = ("uuid", "text", "int8", "text", "text", "timestamptz")
Key = tuple[UUID, str]


def ends_delivery(event: Any) -> bool:
    """Whether the event ends an outbound message's delivery: delivered in full, or failed
    for good."""
    kind = type(event)
    return (kind is C.OutboundDelivered and event.complete) or (
        kind is C.OutboundFailed and event.final
    )


class Outbox:
    """The outbound messages still to deliver, by conversation, in log order."""

    name = "outbox"
    tables = ("outbox_pending",)

    def create(self, cur: psycopg.Cursor[Any], t: Tables) -> None:
        """Create the table."""
        for statement in DDL:
            cur.execute(sql.SQL(statement).format(**t))

    def forget(self) -> None:
        """Nothing is kept in memory between pages."""

    def apply(self, cur: psycopg.Cursor[Any], t: Tables, page: Page) -> None:
        """Add what the page queued and remove what it finished, in one statement each."""
        added: dict[Key, tuple[Any, ...]] = {}
        ended: set[Key] = set()
        for entry in page:
            e = entry.event
            if type(e) is C.OutboundQueued:
                key = (e.originator_id, e.item_id)
                added[key] = (*key, entry.position, e.channel, e.kind, e.timestamp)
            elif ends_delivery(e):
                key = (e.originator_id, e.item_id)
                if added.pop(key, None) is None:
                    ended.add(key)
        if added:
            upsert(
                cur, t["outbox_pending"], PENDING_TYPES, added.values(), "ON CONFLICT DO NOTHING"
            )
        if ended:
            conversations, items = zip(*ended, strict=True)
            cur.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE (conversation_id, item_id) IN "
                    "(SELECT * FROM unnest(%b::uuid[], %b::text[]))"
                ).format(t["outbox_pending"]),
                (list(conversations), list(items)),
            )
