"""Reads across conversations and flows, from the projection tables only.

Projections trail the log by a moment. A caller that must see its own write waits for the
position of that write first: ``projections.wait_for(store.head())``.
"""

from __future__ import annotations

import re
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

from ..domain.errors import BadInput, NotFound
from .metrics import BUCKETS, percentile
from .registry import default_projections
from .runner import EVENTS_TABLE, TRACKING_TABLE


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


class Latency(msgspec.Struct, frozen=True):
    """How long replies took, in milliseconds, from the message that caused each to the
    channel taking it (percentiles interpolated)."""

    count: int
    mean_ms: float | None
    min_ms: float | None
    max_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class ChannelDelivery(msgspec.Struct, frozen=True):
    """How delivery went on one channel, in one UTC hour (or over the whole period asked
    for, when ``hour`` is None): delivered, attempts retried, given up, and the latency."""

    channel: str
    hour: datetime | None
    delivered: int
    retried: int
    failed: int
    latency: Latency


class DeliveryFailure(msgspec.Struct, frozen=True):
    """Outbound messages one channel gave up on (or reported failed) for one reason."""

    channel: str
    reason: str
    code: str
    failures: int


class DeliveryMetrics(msgspec.Struct, frozen=True):
    """Delivery per channel (over the period and hour by hour) and failures by reason."""

    since: datetime | None
    channels: list[ChannelDelivery]
    hours: list[ChannelDelivery]
    failures: list[DeliveryFailure]


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
    delivery: list[ChannelDelivery] = []  # per channel over the period
    delivery_failures: list[DeliveryFailure] = []


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


class FunnelEdge(msgspec.Struct, frozen=True):
    """A way on between two steps (None: the start, or the end) and how many runs took it
    (each run once, however often it went that way)."""

    source: str | None
    target: str | None
    runs: int


class Funnel(msgspec.Struct, frozen=True):
    """A flow definition's runs (of one version, or of every version), step by step,
    deepest steps last, and the ways on they took."""

    definition: str
    outcomes: FlowOutcomes
    steps: list[FunnelStep]
    version: int | None = None  # None: every version
    edges: list[FunnelEdge] = []


class ConversationSearch(msgspec.Struct, frozen=True, kw_only=True):
    """What to look for among the conversations; every condition given must hold."""

    text: str | None = None  # part of the participant (any case), or the start of the id
    status: str | None = None
    channel: str | None = None
    active_from: datetime | None = None  # still active at or after this moment
    active_until: datetime | None = None  # begun at or before this moment


class ConversationPage(msgspec.Struct, frozen=True):
    """One page of a search, most recently active first: its rows, how many match in all,
    and whether pages of more recently (``newer``) or less recently active ones exist."""

    rows: list[ConversationRow]
    total: int
    newer: bool
    older: bool


# Where a page of conversations ends: (last activity, id) of its last (or first) row.
PageKey = tuple[datetime, UUID]


class HourlyMetrics(msgspec.Struct, frozen=True):
    """One UTC hour across every conversation: traffic, turns and their response times."""

    hour: datetime
    conversations: int
    messages: int
    turns: int
    interruptions: int
    silences: int
    response: ResponseTimes


class VersionFunnel(msgspec.Struct, frozen=True):
    """The runs of one version of a flow definition: how they ended, and step by step how
    far they got (steps ordered by how deep into a run they are reached)."""

    definition: str
    version: int
    outcomes: FlowOutcomes
    active: int
    steps: list[FunnelStep]


class ProjectionLag(msgspec.Struct, frozen=True):
    """How far one projection trails the log, and how long ago (by the database's clock)
    it last applied a page."""

    name: str
    position: int
    head: int
    behind: int
    idle_s: float | None


# The longest span of hours a series is read for: a month.
MAX_SERIES_HOURS = 31 * 24


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

    def metrics(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> MetricsSummary:
        """Totals, and response-time percentiles, from the hour that holds ``since`` on
        (and, given ``until``, of the hours that begin before it)."""
        hour = _hour_of(since)
        bounds = [
            condition
            for condition, value in (("hour >= %(hour)s", hour), ("hour < %(until)s", until))
            if value is not None
        ]
        where = "WHERE " + " AND ".join(bounds) if bounds else ""
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
            until=until,
        )
        (histogram,) = self._rows(
            "SELECT coalesce(array_agg(n ORDER BY i), '{{}}') AS counts FROM ("
            "  SELECT i, sum(c)::bigint AS n"
            "  FROM {metrics_hourly} h, unnest(h.response_histogram) WITH ORDINALITY AS u(c, i)"
            f"  {where} GROUP BY i) AS buckets",
            hour=hour,
            until=until,
        )
        flows = self._rows(
            "SELECT definition, sum(started)::int AS started, sum(completed)::int AS completed, "
            "sum(cancelled)::int AS cancelled, sum(expired)::int AS expired "
            f"FROM {{metrics_flows}} {where} GROUP BY definition ORDER BY definition",
            hour=hour,
            until=until,
        )
        delivery = self.delivery(since, until, hourly=False)
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
            delivery=delivery.channels,
            delivery_failures=delivery.failures,
        )

    def delivery(
        self, since: datetime | None = None, until: datetime | None = None, *, hourly: bool = True
    ) -> DeliveryMetrics:
        """Delivery per channel from the hour that holds ``since`` on (and before
        ``until``): totals with latency percentiles, the same per hour (unless not
        ``hourly``), and the failures by reason."""
        hour = _hour_of(since)
        bounds = [
            condition
            for condition, value in (("hour >= %(hour)s", hour), ("hour < %(until)s", until))
            if value is not None
        ]
        where = "WHERE " + " AND ".join(bounds) if bounds else ""
        sums = (
            "sum(delivered)::int AS delivered, sum(retried)::int AS retried, "
            "sum(failed)::int AS failed, sum(latency_us_sum)::bigint AS latency_us_sum, "
            "min(latency_us_min) AS latency_us_min, max(latency_us_max) AS latency_us_max"
        )
        histograms = (
            "SELECT channel{hour}, array_agg(n ORDER BY i) AS counts FROM ("
            "  SELECT channel{hour}, i, sum(c)::bigint AS n FROM {{delivery_hourly}} h, "
            "  unnest(h.latency_histogram) WITH ORDINALITY AS u(c, i) "
            f"  {where} GROUP BY channel{{hour}}, i) AS b GROUP BY channel{{hour}}"
        )
        totals = self._rows(
            f"SELECT channel, {sums} FROM {{delivery_hourly}} {where} "
            "GROUP BY channel ORDER BY channel",
            hour=hour,
            until=until,
        )
        counts = {
            row["channel"]: row["counts"]
            for row in self._rows(histograms.format(hour=""), hour=hour, until=until)
        }
        channels = [_channel_delivery(row, None, counts.get(row["channel"])) for row in totals]
        hours: list[ChannelDelivery] = []
        if hourly:
            per_hour = self._rows(
                f"SELECT channel, hour, {sums} FROM {{delivery_hourly}} {where} "
                "GROUP BY channel, hour ORDER BY channel, hour",
                hour=hour,
                until=until,
            )
            hour_counts = {
                (row["channel"], row["hour"]): row["counts"]
                for row in self._rows(histograms.format(hour=", hour"), hour=hour, until=until)
            }
            hours = [
                _channel_delivery(row, row["hour"], hour_counts.get((row["channel"], row["hour"])))
                for row in per_hour
            ]
        failures = self._rows(
            "SELECT channel, reason, code, sum(failures)::int AS failures "
            f"FROM {{delivery_failures}} {where} GROUP BY channel, reason, code "
            "ORDER BY channel, failures DESC, reason",
            hour=hour,
            until=until,
        )
        return DeliveryMetrics(
            since=since,
            channels=channels,
            hours=hours,
            failures=[DeliveryFailure(**row) for row in failures],
        )

    def outbox(self, channels: list[str], limit: int = 100) -> list[tuple[UUID, str]]:
        """The conversations with outbound messages still to deliver on these channels, the
        one waiting longest first: (conversation id, channel)."""
        rows = self._rows(
            "SELECT conversation_id, channel FROM {outbox_pending} "
            "WHERE channel = ANY(%(channels)s) GROUP BY conversation_id, channel "
            "ORDER BY min(position) LIMIT %(limit)s",
            channels=channels,
            limit=limit,
        )
        return [(row["conversation_id"], row["channel"]) for row in rows]

    def audit(self, stream_id: UUID) -> list[AuditEntry]:
        """Every event of one conversation or flow, oldest first."""
        rows = self._rows(
            "SELECT * FROM {audit_trail} WHERE stream_id = %(id)s ORDER BY version", id=stream_id
        )
        return [AuditEntry(**row) for row in rows]

    def funnel(self, definition: str, version: int | None = None) -> Funnel:
        """How far the runs of a flow definition (of one version, or of all) got, where
        they stopped, and which ways on they took."""
        only = "" if version is None else " AND version = %(v)s"
        steps = self._rows(
            "SELECT step, sum(reached)::int AS reached, sum(rejected)::int AS rejected, "
            "sum(abandoned)::int AS abandoned, sum(depth_sum)::float8 AS depth "
            f"FROM {{metrics_flow_steps}} WHERE definition = %(d)s{only} GROUP BY step "
            "ORDER BY sum(depth_sum)::float8 / greatest(sum(reached), 1), sum(reached) DESC, step",
            d=definition,
            v=version,
        )
        (outcomes,) = self._rows(
            "SELECT coalesce(sum(started), 0)::int AS started, "
            "coalesce(sum(completed), 0)::int AS completed, "
            "coalesce(sum(cancelled), 0)::int AS cancelled, "
            "coalesce(sum(expired), 0)::int AS expired "
            f"FROM {{metrics_flows}} WHERE definition = %(d)s{only}",
            d=definition,
            v=version,
        )
        if not steps and not outcomes["started"]:
            wanted = f"{definition!r}" if version is None else f"{definition!r} v{version}"
            raise NotFound(f"no runs of flow {wanted} are recorded")
        edges = self._rows(
            "SELECT nullif(source, '') AS source, nullif(target, '') AS target, "
            f"sum(runs)::int AS runs FROM {{metrics_flow_edges}} WHERE definition = %(d)s{only} "
            "GROUP BY source, target ORDER BY source, target",
            d=definition,
            v=version,
        )
        return Funnel(
            definition=definition,
            outcomes=FlowOutcomes(definition=definition, **outcomes),
            steps=[
                FunnelStep(row["step"], row["reached"], row["rejected"], row["abandoned"])
                for row in steps
            ],
            version=version,
            edges=[FunnelEdge(**row) for row in edges],
        )

    def search_conversations(
        self,
        search: ConversationSearch,
        *,
        limit: int = 50,
        after: PageKey | None = None,
        before: PageKey | None = None,
    ) -> ConversationPage:
        """A page of the conversations that match, most recently active first: the first
        page, the one after the row ``after`` names, or the one before ``before``."""
        if not 1 <= limit <= 1000:
            raise BadInput(f"a page holds 1 to 1000 conversations, not {limit}")
        conditions, params = _search_conditions(search)
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        (counted,) = self._rows(
            f"SELECT count(*) AS n FROM {{current_conversations}} {where}", **params
        )
        key = before or after
        if key is not None:
            # Keyset paging: stable while rows above the page move.
            direction = ">" if before else "<"
            page_bound = f"(last_activity, conversation_id) {direction} (%(key_at)s, %(key_id)s)"
            conditions = [*conditions, page_bound]
            params.update(key_at=key[0], key_id=key[1])
        order = "ASC" if before else "DESC"
        where = "WHERE " + " AND ".join(conditions) if conditions else ""
        rows = self._rows(
            f"SELECT * FROM {{current_conversations}} {where} "
            f"ORDER BY last_activity {order}, conversation_id {order} LIMIT %(limit)s",
            **params,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        if before:
            rows.reverse()
        return ConversationPage(
            rows=[ConversationRow(**row) for row in rows],
            total=counted["n"],
            newer=more if before else after is not None,
            older=True if before else more,
        )

    def statuses(self) -> dict[str, int]:
        """How many conversations are in each status now."""
        rows = self._rows(
            "SELECT status, count(*) AS n FROM {current_conversations} GROUP BY status "
            "ORDER BY status"
        )
        return {row["status"]: row["n"] for row in rows}

    def channels(self) -> list[str]:
        """The channels conversations came in on, by name."""
        rows = self._rows(
            "SELECT channel FROM {current_conversations} GROUP BY channel ORDER BY channel"
        )
        return [row["channel"] for row in rows]

    def hourly(self, since: datetime, until: datetime) -> list[HourlyMetrics]:
        """Per UTC hour, from the hour that holds ``since`` to the last one that begins
        before ``until``: traffic and response-time percentiles (hours without any
        activity are left out)."""
        hour = _hour_of(since)
        assert hour is not None
        if until <= hour:
            raise BadInput("the end of the time range must come after its start")
        if (until - hour).total_seconds() > MAX_SERIES_HOURS * 3600:
            raise BadInput(f"a series spans at most {MAX_SERIES_HOURS // 24} days")
        where = "WHERE hour >= %(hour)s AND hour < %(until)s"
        totals = self._rows(
            "SELECT hour, count(*) AS conversations, coalesce(sum(messages), 0) AS messages, "
            "coalesce(sum(turns), 0) AS turns, coalesce(sum(interruptions), 0) AS interruptions, "
            "coalesce(sum(silences), 0) AS silences, "
            "coalesce(sum(response_us_sum), 0) AS response_us_sum, "
            "min(response_us_min) AS response_us_min, max(response_us_max) AS response_us_max "
            f"FROM {{metrics_hourly}} {where} GROUP BY hour ORDER BY hour",
            hour=hour,
            until=until,
        )
        histograms = self._rows(
            "SELECT hour, array_agg(n ORDER BY i) AS counts FROM ("
            "  SELECT hour, i, sum(c)::bigint AS n"
            "  FROM {metrics_hourly} h, unnest(h.response_histogram) WITH ORDINALITY AS u(c, i)"
            f"  {where} GROUP BY hour, i) AS buckets GROUP BY hour",
            hour=hour,
            until=until,
        )
        counts = {row["hour"]: row["counts"] for row in histograms}
        return [
            HourlyMetrics(
                hour=row["hour"],
                conversations=row["conversations"],
                messages=int(row["messages"]),
                turns=int(row["turns"]),
                interruptions=int(row["interruptions"]),
                silences=int(row["silences"]),
                response=_response_times(row, counts.get(row["hour"], [0] * BUCKETS)),
            )
            for row in totals
        ]

    def funnel_by_version(self, definition: str) -> list[VersionFunnel]:
        """How far the runs of each version of a flow definition got, and where they
        stopped, oldest version first (the metrics projection's funnel of each version)."""
        versions = self._rows(
            "SELECT DISTINCT version FROM {metrics_flows} WHERE definition = %(d)s "
            "ORDER BY version",
            d=definition,
        )
        funnels = []
        for row in versions:
            funnel = self.funnel(definition, row["version"])
            o = funnel.outcomes
            funnels.append(
                VersionFunnel(
                    definition=definition,
                    version=row["version"],
                    outcomes=o,
                    active=o.started - o.completed - o.cancelled - o.expired,
                    steps=funnel.steps,
                )
            )
        return funnels

    def lag(self) -> list[ProjectionLag]:
        """Each projection's distance behind the log's head, in events, and the seconds
        since it last applied a page; empty before any projection worker has run here."""
        tracking = sql.Identifier(self.schema, TRACKING_TABLE)
        events = sql.Identifier(self.schema, EVENTS_TABLE)
        try:
            with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    sql.SQL(
                        "SELECT t.projection AS name, t.position, h.head, "
                        "extract(epoch FROM now() - t.updated_at)::float8 AS idle_s "
                        "FROM {} t, (SELECT coalesce(max(notification_id), 0) AS head "
                        "FROM {}) h WHERE t.projection = ANY(%s) ORDER BY t.projection"
                    ).format(tracking, events),
                    (self.names,),
                )
                rows = cur.fetchall()
        except psycopg.errors.UndefinedTable:
            return []
        return [ProjectionLag(behind=max(0, row["head"] - row["position"]), **row) for row in rows]

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


def id_prefix_bounds(text: str) -> tuple[UUID, UUID] | None:
    """The lowest and highest ids that begin with these hex digits (dashes ignored);
    None if the text cannot be the start of an id."""
    digits = text.strip().replace("-", "").lower()
    if not re.fullmatch(r"[0-9a-f]{1,32}", digits):
        return None
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


def _search_conditions(search: ConversationSearch) -> tuple[list[str], dict[str, Any]]:
    """The WHERE conditions of a search, and their parameters."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    text = (search.text or "").strip()
    if text:
        # Backslash is LIKE's escape character: a % or _ typed is matched as itself.
        escaped = re.sub(r"([\\%_])", r"\\\1", text)
        options = ["participant ILIKE %(pattern)s"]
        params["pattern"] = f"%{escaped}%"
        bounds = id_prefix_bounds(text)
        if bounds is not None:
            # A range of the primary key, not a text match: the index finds it.
            options.append("conversation_id BETWEEN %(id_low)s AND %(id_high)s")
            params.update(id_low=bounds[0], id_high=bounds[1])
        conditions.append("(" + " OR ".join(options) + ")")
    for condition, name, value in (
        ("status = %(status)s", "status", search.status),
        ("channel = %(channel)s", "channel", search.channel),
        ("last_activity >= %(active_from)s", "active_from", search.active_from),
        ("started_at <= %(active_until)s", "active_until", search.active_until),
    ):
        if value is not None:
            conditions.append(condition)
            params[name] = value
    return conditions, params


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


def _channel_delivery(
    row: dict[str, Any], hour: datetime | None, histogram: list[int] | None
) -> ChannelDelivery:
    delivered = int(row["delivered"])
    latency = Latency(0, None, None, None, None, None, None)
    if delivered:
        counts = histogram or [0] * BUCKETS
        low, high = row["latency_us_min"] / 1000, row["latency_us_max"] / 1000
        p50, p95, p99 = (percentile(counts, q, low, high) for q in (0.5, 0.95, 0.99))
        mean = int(row["latency_us_sum"]) / 1000 / delivered
        latency = Latency(delivered, mean, low, high, p50, p95, p99)
    return ChannelDelivery(
        channel=row["channel"],
        hour=hour,
        delivered=delivered,
        retried=int(row["retried"]),
        failed=int(row["failed"]),
        latency=latency,
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
