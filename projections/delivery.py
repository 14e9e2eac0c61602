"""The `delivery` projection: how delivery goes, per channel and hour.

How long a reply took from the message that caused it to the channel taking it (a histogram
with the metrics projection's bounds, for p50/p95/p99), how many were delivered, retried and
given up, and the failures by reason. A projection of its own beside `metrics`, so that a
deployment that already has the metrics tables gets these by the runner's usual first start,
and either can be rebuilt alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from ..domain.conversation import Conversation
from ..domain.conversation_values import DeliveryStatus
from .batch import upsert
from .metrics import BUCKETS, bucket, micros
from .outbox import ends_delivery
from .projection import Page, Tables

C = Conversation

DDL = (
    """CREATE TABLE {delivery_hourly} (
        channel text NOT NULL,
        hour timestamptz NOT NULL,
        delivered integer NOT NULL,
        retried integer NOT NULL,
        failed integer NOT NULL,
        latency_us_sum bigint NOT NULL,
        latency_us_min bigint,
        latency_us_max bigint,
        latency_histogram integer[] NOT NULL,
        PRIMARY KEY (channel, hour))""",
    """CREATE TABLE {delivery_failures} (
        channel text NOT NULL,
        hour timestamptz NOT NULL,
        reason text NOT NULL,
        code text NOT NULL,
        failures integer NOT NULL,
        PRIMARY KEY (channel, hour, reason, code))""",
    # What a later outcome needs of a message in flight: its channel and when it was caused.
    """CREATE TABLE {delivery_items} (
        conversation_id uuid NOT NULL,
        item_id text NOT NULL,
        channel text NOT NULL,
        queued_at timestamptz NOT NULL,
        PRIMARY KEY (conversation_id, item_id))""",
    # The channel of each conversation that sent something (for the statuses reported later).
    """CREATE TABLE {delivery_channels} (
        conversation_id uuid PRIMARY KEY,
        channel text NOT NULL)""",
)

HOURLY_TYPES = ("text", "timestamptz", "int4", "int4", "int4", "int8", "int8", "int8", "int4[]")
HOURLY_CONFLICT = """ON CONFLICT (channel, hour) DO UPDATE SET
    delivered = t.delivered + excluded.delivered,
    retried = t.retried + excluded.retried,
    failed = t.failed + excluded.failed,
    latency_us_sum = t.latency_us_sum + excluded.latency_us_sum,
    latency_us_min = least(t.latency_us_min, excluded.latency_us_min),
    latency_us_max = greatest(t.latency_us_max, excluded.latency_us_max),
    latency_histogram = (
        SELECT array_agg(a + b ORDER BY i)
        FROM unnest(t.latency_histogram, excluded.latency_histogram)
             WITH ORDINALITY AS x(a, b, i))"""
FAILURES_TYPES = ("text", "timestamptz", "text", "text", "int4")
FAILURES_CONFLICT = """ON CONFLICT (channel, hour, reason, code) DO UPDATE SET
    failures = t.failures + excluded.failures"""
ITEMS_TYPES = ("uuid", "text", "text", "timestamptz")
CHANNELS_TYPES = ("uuid", "text")

Key = tuple[UUID, str]


class _Hour:
    """One channel's counters for one hour, as one page adds to them."""

    __slots__ = ("delivered", "failed", "high", "histogram", "low", "retried", "total")

    def __init__(self) -> None:
        self.delivered = self.retried = self.failed = self.total = 0
        self.low: int | None = None
        self.high: int | None = None
        self.histogram = [0] * BUCKETS

    def took(self, us: int) -> None:
        self.delivered += 1
        self.total += us
        self.low = us if self.low is None else min(self.low, us)
        self.high = us if self.high is None else max(self.high, us)
        self.histogram[bucket(us / 1000)] += 1

    def values(self) -> tuple[Any, ...]:
        return (
            self.delivered, self.retried, self.failed, self.total, self.low, self.high,
            self.histogram,
        )  # fmt: skip


class Delivery:
    """Delivery latency, retries and failures per channel and hour."""

    name = "delivery"
    tables = ("delivery_hourly", "delivery_failures", "delivery_items", "delivery_channels")

    def create(self, cur: psycopg.Cursor[Any], t: Tables) -> None:
        """Create the tables."""
        for statement in DDL:
            cur.execute(sql.SQL(statement).format(**t))

    def forget(self) -> None:
        """Nothing is kept in memory between pages."""

    def apply(self, cur: psycopg.Cursor[Any], t: Tables, page: Page) -> None:
        """Count the page's outcomes, then add them to the stored counters."""
        events = [entry.event for entry in page]
        queued = {
            (e.originator_id, e.item_id): (e.channel, e.timestamp)
            for e in events
            if type(e) is C.OutboundQueued
        }
        outcomes = [e for e in events if type(e) in (C.OutboundDelivered, C.OutboundFailed)]
        earlier = {(e.originator_id, e.item_id) for e in outcomes} - set(queued)
        items = {**_load_items(cur, t, earlier), **queued}
        channels = {cid: channel for (cid, _), (channel, _) in items.items()}
        reported = [e for e in events if type(e) is C.DeliveryStatusReported]
        unknown = {e.originator_id for e in reported} - set(channels)
        channels.update(_load_channels(cur, t, unknown))
        hours: dict[tuple[str, int], _Hour] = {}
        failures: dict[tuple[str, int, str, str], int] = {}
        ended: set[Key] = set()
        for e in events:
            kind = type(e)
            key = (e.originator_id, getattr(e, "item_id", ""))
            if kind is C.OutboundDelivered and e.complete and key in items:
                channel, queued_at = items[key]
                latency_us = max(0, micros((e.timestamp - queued_at).total_seconds()))
                _hour(hours, channel, e.timestamp).took(latency_us)
            elif kind is C.OutboundFailed and key in items:
                channel = items[key][0]
                counters = _hour(hours, channel, e.timestamp)
                if e.final:
                    counters.failed += 1
                    failure = (channel, _hour_of(e.timestamp), e.reason, _code(e.code))
                    failures[failure] = failures.get(failure, 0) + 1
                else:
                    counters.retried += 1
            elif kind is C.DeliveryStatusReported and e.status == DeliveryStatus.FAILED:
                channel = channels.get(e.originator_id, "unknown")
                failure = (channel, _hour_of(e.timestamp), e.reason or "failed", _code(e.code))
                failures[failure] = failures.get(failure, 0) + 1
            if ends_delivery(e):
                ended.add(key)
        if hours:
            rows = ((c, _time(h), *n.values()) for (c, h), n in hours.items())
            upsert(cur, t["delivery_hourly"], HOURLY_TYPES, rows, HOURLY_CONFLICT)
        if failures:
            rows = ((c, _time(h), r, code, n) for (c, h, r, code), n in failures.items())
            upsert(cur, t["delivery_failures"], FAILURES_TYPES, rows, FAILURES_CONFLICT)
        in_flight = [
            (cid, item, *queued[(cid, item)]) for cid, item in queued if (cid, item) not in ended
        ]
        if in_flight:
            upsert(cur, t["delivery_items"], ITEMS_TYPES, in_flight, "ON CONFLICT DO NOTHING")
        first_seen = {cid: channel for (cid, _), (channel, _) in queued.items()}
        if first_seen:
            upsert(
                cur,
                t["delivery_channels"],
                CHANNELS_TYPES,
                first_seen.items(),
                "ON CONFLICT DO NOTHING",
            )
        gone = [key for key in ended if key not in queued]
        if gone:
            conversations, ids = zip(*gone, strict=True)
            cur.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE (conversation_id, item_id) IN "
                    "(SELECT * FROM unnest(%b::uuid[], %b::text[]))"
                ).format(t["delivery_items"]),
                (list(conversations), list(ids)),
            )


def _load_items(
    cur: psycopg.Cursor[Any], t: Tables, keys: set[Key]
) -> dict[Key, tuple[str, datetime]]:
    if not keys:
        return {}
    conversations, ids = zip(*keys, strict=True)
    cur.execute(
        sql.SQL(
            "SELECT conversation_id, item_id, channel, queued_at FROM {} "
            "WHERE (conversation_id, item_id) IN (SELECT * FROM unnest(%b::uuid[], %b::text[]))"
        ).format(t["delivery_items"]),
        (list(conversations), list(ids)),
    )
    return {(cid, item): (channel, at) for cid, item, channel, at in cur}


def _load_channels(cur: psycopg.Cursor[Any], t: Tables, ids: set[UUID]) -> dict[UUID, str]:
    if not ids:
        return {}
    cur.execute(
        sql.SQL("SELECT conversation_id, channel FROM {} WHERE conversation_id = ANY(%b)").format(
            t["delivery_channels"]
        ),
        (list(ids),),
    )
    return dict(cur.fetchall())


def _hour(hours: dict[tuple[str, int], _Hour], channel: str, at: datetime) -> _Hour:
    key = (channel, _hour_of(at))
    counters = hours.get(key)
    if counters is None:
        counters = hours[key] = _Hour()
    return counters


def _code(code: int | None) -> str:
    return "" if code is None else str(code)


def _hour_of(at: datetime) -> int:
    """Hours since the epoch: the bucket of an event's time (UTC hours)."""
    return int(at.timestamp()) // 3600


def _time(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, UTC)
