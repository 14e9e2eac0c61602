"""Reads across conversations and flows, from the projection tables only.

Projections trail the log by a moment. A caller that must see its own write waits for the
position of that write first: ``projections.wait_for(store.head())``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool

from ..domain.errors import NotFound
from .metrics import percentile
from .registry import default_projections
from .runner import TRACKING_TABLE


class ConversationRow(msgspec.Struct, frozen=True):
    """A conversation as it is now."""

    conversation_id: UUID
    status: str
    channel: str
    participant: str | None
    started_at: datetime
    last_activity: datetime
    message_count: int
    turn_count: int
    active_flow_id: UUID | None
    version: int


class FlowRow(msgspec.Struct, frozen=True):
    """A flow run as it is now: its step, its answers so far, when it expires."""

    flow_id: UUID
    conversation_id: UUID
    definition: str
    definition_version: int
    mode: str | None
    current_step: str | None
    fields: dict[str, Any]
    status: str
    started_at: datetime
    updated_at: datetime
    idle_timeout_s: float | None
    expires_at: datetime | None
    version: int


class ResponseTimes(msgspec.Struct, frozen=True):
    """Response times of completed turns, in milliseconds (percentiles interpolated)."""

    count: int
    mean_ms: float | None
    min_ms: float | None
    max_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class FlowOutcomes(msgspec.Struct, frozen=True):
    """How the runs of one flow definition ended."""

    definition: str
    started: int
    completed: int
    cancelled: int
    expired: int


class MetricsSummary(msgspec.Struct, frozen=True):
    """Totals over every conversation since a time (whole UTC hours), or over all time."""

    since: datetime | None
    conversations: int
    turns: int
    messages: int
    interruptions: int
    silences: int
    tokens_in: int
    tokens_out: int
    audio_seconds: float
    cost: float
    response: ResponseTimes
    flows: list[FlowOutcomes]


class AuditEntry(msgspec.Struct, frozen=True):
    """One event of a stream as the audit trail tells it."""

    position: int
    stream_id: UUID
    stream_type: str
    version: int
    event_type: str
    occurred_at: datetime
    summary: str
    changes: dict[str, dict[str, Any]]
    correlation_id: UUID | None
    causation_id: UUID | None


class FunnelStep(msgspec.Struct, frozen=True):
    """One step of a flow: runs that reached it, answers refused there, runs that ended
    there without completing (cancelled or expired)."""

    step: str
    reached: int
    rejected: int
    abandoned: int


class Funnel(msgspec.Struct, frozen=True):
    """A flow definition's runs, step by step, deepest steps last."""

    definition: str
    outcomes: FlowOutcomes
    steps: list[FunnelStep]


class Projections:
    """The query API over the projection tables in one schema."""

    def __init__(self, pool: ConnectionPool[Any], schema: str) -> None:
        self.pool = pool
        self.schema = schema
        projections = default_projections()
        self.names = [p.name for p in projections]
        self._tables = [t for p in projections for t in p.tables]

    def conversations(self, status: str | None = None, limit: int = 100) -> list[ConversationRow]:
        """Conversations, most recently active first, optionally only those in a status."""
        where = "WHERE status = %(status)s" if status is not None else ""
        rows = self._rows(
            f"SELECT * FROM {{current_conversations}} {where} "
            "ORDER BY last_activity DESC, conversation_id LIMIT %(limit)s",
            status=status,
            limit=limit,
        )
        return [ConversationRow(**row) for row in rows]

    def conversation(self, conversation_id: UUID) -> ConversationRow:
        """One conversation's row; NotFound if the projection has not seen it (yet)."""
        rows = self._rows(
            "SELECT * FROM {current_conversations} WHERE conversation_id = %(cid)s",
            cid=conversation_id,
        )
        if not rows:
            raise NotFound(f"the current-state projection has no conversation {conversation_id}")
        return ConversationRow(**rows[0])

    def flows(
        self, conversation_id: UUID | None = None, status: str | None = None, limit: int = 100
    ) -> list[FlowRow]:
        """Flow runs, most recently updated first, optionally of one conversation or status."""
        # Only the conditions asked for, so that the planner can use the indexes.
        conditions = [
            condition
            for condition, value in (
                ("conversation_id = %(cid)s", conversation_id),
                ("status = %(status)s", status),
            )
            if value is not None
        ]
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        rows = self._rows(
            f"SELECT * FROM {{current_flows}} {where} "
            "ORDER BY updated_at DESC, flow_id LIMIT %(limit)s",
            cid=conversation_id,
            status=status,
            limit=limit,
        )
        return [FlowRow(**row) for row in rows]

    def due_flows(self, at: datetime, limit: int | None = None) -> list[FlowRow]:
        """Active runs whose idle timeout has passed at ``at``, the longest overdue first:
        what an expiry sweep has to look at (read through the index on ``expires_at``)."""
        rows = self._rows(
            "SELECT * FROM {current_flows} WHERE expires_at < %(at)s "
            "ORDER BY expires_at, flow_id LIMIT %(limit)s",
            at=at,
            limit=limit,
        )
        return [FlowRow(**row) for row in rows]

    def idle_conversations(
        self, since: datetime, limit: int | None = None
    ) -> list[ConversationRow]:
        """Conversations not ended with nothing recorded since ``since``, the longest idle
        first: what an expiry sweep has to look at."""
        rows = self._rows(
            "SELECT * FROM {current_conversations} "
            "WHERE status <> 'ended' AND last_activity < %(since)s "
            "ORDER BY last_activity, conversation_id LIMIT %(limit)s",
            since=since,
            limit=limit,
        )
        return [ConversationRow(**row) for row in rows]

    def metrics(self, since: datetime | None = None) -> MetricsSummary:
        """Totals, and response-time percentiles, from the hour that holds ``since`` on."""
        hour = _hour_of(since)
        where = "WHERE hour >= %(hour)s" if hour is not None else ""
        (totals,) = self._rows(
            "SELECT count(DISTINCT conversation_id) AS conversations, "
            "coalesce(sum(turns), 0) AS turns, coalesce(sum(messages), 0) AS messages, "
            "coalesce(sum(interruptions), 0) AS interruptions, "
            "coalesce(sum(silences), 0) AS silences, "
            "coalesce(sum(tokens_in), 0) AS tokens_in, coalesce(sum(tokens_out), 0) AS tokens_out, "
            "coalesce(sum(audio_us), 0) AS audio_us, coalesce(sum(cost_micros), 0) AS cost_micros, "
            "coalesce(sum(response_us_sum), 0) AS response_us_sum, "
            "min(response_us_min) AS response_us_min, max(response_us_max) AS response_us_max "
            f"FROM {{metrics_hourly}} {where}",
            hour=hour,
        )
        (histogram,) = self._rows(
            "SELECT coalesce(array_agg(n ORDER BY i), '{{}}') AS counts FROM ("
            "  SELECT i, sum(c)::bigint AS n"
            "  FROM {metrics_hourly} h, unnest(h.response_histogram) WITH ORDINALITY AS u(c, i)"
            f"  {where} GROUP BY i) AS buckets",
            hour=hour,
        )
        flows = self._rows(
            "SELECT definition, sum(started)::int AS started, sum(completed)::int AS completed, "
            "sum(cancelled)::int AS cancelled, sum(expired)::int AS expired "
            f"FROM {{metrics_flows}} {where} GROUP BY definition ORDER BY definition",
            hour=hour,
        )
        return MetricsSummary(
            since=since,
            conversations=totals["conversations"],
            turns=int(totals["turns"]),
            messages=int(totals["messages"]),
            interruptions=int(totals["interruptions"]),
            silences=int(totals["silences"]),
            tokens_in=int(totals["tokens_in"]),
            tokens_out=int(totals["tokens_out"]),
            audio_seconds=int(totals["audio_us"]) / 1e6,
            cost=int(totals["cost_micros"]) / 1e6,
            response=_response_times(totals, histogram["counts"]),
            flows=[FlowOutcomes(**row) for row in flows],
        )

    def audit(self, stream_id: UUID) -> list[AuditEntry]:
        """Every event of one conversation or flow, oldest first."""
        rows = self._rows(
            "SELECT * FROM {audit_trail} WHERE stream_id = %(id)s ORDER BY version", id=stream_id
        )
        return [AuditEntry(**row) for row in rows]

    def funnel(self, definition: str) -> Funnel:
        """How far the runs of a flow definition got, and where they stopped."""
        steps = self._rows(
            "SELECT step, reached, rejected, abandoned FROM {metrics_flow_steps} "
            "WHERE definition = %(d)s "
            "ORDER BY depth_sum::float8 / greatest(reached, 1), reached DESC, step",
            d=definition,
        )
        (outcomes,) = self._rows(
            "SELECT coalesce(sum(started), 0)::int AS started, "
            "coalesce(sum(completed), 0)::int AS completed, "
            "coalesce(sum(cancelled), 0)::int AS cancelled, "
            "coalesce(sum(expired), 0)::int AS expired "
            "FROM {metrics_flows} WHERE definition = %(d)s",
            d=definition,
        )
        if not steps and not outcomes["started"]:
            raise NotFound(f"no runs of flow {definition!r} are recorded")
        return Funnel(
            definition=definition,
            outcomes=FlowOutcomes(definition=definition, **outcomes),
            steps=[FunnelStep(**row) for row in steps],
        )

    def positions(self) -> dict[str, int]:
        """Each projection's position in the log (the last event it applied)."""
        try:
            with self.pool.connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
                cur.execute(
                    sql.SQL("SELECT projection, position FROM {}").format(
                        sql.Identifier(self.schema, TRACKING_TABLE)
                    )
                )
                return dict(cur.fetchall())
        except psycopg.errors.UndefinedTable:
            return {}  # no projection has run in this schema yet

    def wait_for(self, position: int, timeout: float = 5.0, projection: str | None = None) -> None:
        """Block until every projection (or the one named) has applied the log up to
        ``position``; TimeoutError after ``timeout`` seconds."""
        names = [projection] if projection else self.names

        def behind() -> list[str]:
            positions = self.positions()
            return [n for n in names if positions.get(n, 0) < position]

        if not _poll(lambda: not behind(), timeout):
            raise TimeoutError(
                f"projections {', '.join(behind())} did not reach position {position} "
                f"within {timeout:g} s; is `voxledger project run` running?"
            )

    def _rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        tables = {name: sql.Identifier(self.schema, name) for name in self._tables}
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql.SQL(query).format(**tables), params)
            return cur.fetchall()


def _hour_of(since: datetime | None) -> datetime | None:
    if since is None:
        return None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _response_times(totals: dict[str, Any], histogram: list[int]) -> ResponseTimes:
    count = int(totals["turns"])
    if not count:
        return ResponseTimes(0, None, None, None, None, None, None)
    low, high = totals["response_us_min"] / 1000, totals["response_us_max"] / 1000
    p50, p95, p99 = (percentile(histogram, q, low, high) for q in (0.5, 0.95, 0.99))
    return ResponseTimes(
        count=count,
        mean_ms=int(totals["response_us_sum"]) / 1000 / count,
        min_ms=low,
        max_ms=high,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
    )


def _poll(condition: Callable[[], bool], timeout: float) -> bool:
    """Check ``condition`` with a pause growing from 1 ms to 50 ms until it holds or time
    runs out: cheaper than a LISTEN connection per wait, and quick for a runner that keeps
    up within milliseconds."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while not condition():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, 0.05)
    return True
