"""`voxledger conversations`, `metrics`, `audit ID` and `funnel FLOW`: reads across
conversations, from the projection tables."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .arguments import UsageError, stream_id, timestamp
from .output import print_fields, print_json, print_table, to_plain, warn

if TYPE_CHECKING:
    from ..projections.queries import (
        AuditEntry,
        DeliveryMetrics,
        Funnel,
        MetricsSummary,
        Projections,
    )

_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def register(commands: argparse._SubParsersAction) -> None:
    """Add the query commands."""
    conversations = commands.add_parser(
        "conversations",
        help="conversations now, most recently active first",
        description="Example: voxledger conversations --status listening --json",
    )
    conversations.add_argument("--status", help="only conversations in this status")
    conversations.add_argument(
        "--limit", type=count, default=100, help="at most this many (1 to 10000)"
    )
    conversations.add_argument("--json", action="store_true", help="print JSON")
    conversations.set_defaults(run=run_conversations)

    metrics = commands.add_parser(
        "metrics",
        help="totals, response-time percentiles, flow outcomes",
        description="Example: voxledger metrics --since 24h",
    )
    metrics.add_argument(
        "--since",
        type=since,
        metavar="T",
        help="from this time on: ISO 8601 (2026-11-21T14:00:00+00:00) or ago (90m, 24h, 7d)",
    )
    metrics.add_argument("--json", action="store_true", help="print JSON")
    metrics.set_defaults(run=run_metrics)

    audit = commands.add_parser(
        "audit",
        help="what each event of a conversation or flow changed",
        description="Example: voxledger audit 5b1c... --json",
    )
    audit.add_argument("stream_id", type=stream_id, metavar="ID")
    audit.add_argument("--json", action="store_true", help="print JSON")
    audit.set_defaults(run=run_audit)

    funnel = commands.add_parser(
        "funnel",
        help="a flow's steps: reached, rejected, abandoned",
        description="Example: voxledger funnel intake",
    )
    funnel.add_argument("definition", metavar="FLOW")
    funnel.add_argument("--json", action="store_true", help="print JSON")
    funnel.set_defaults(run=run_funnel)


def count(text: str) -> int:
    """How many rows at most: a whole number from 1 to 10000."""
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--limit takes a whole number, not {text!r}") from None
    if not 1 <= value <= 10_000:
        raise UsageError(f"--limit takes a number from 1 to 10000, not {value}")
    return value


def since(text: str) -> datetime:
    """An ISO 8601 time, or a span back from now such as 90m, 24h or 7d."""
    ago = _AGO.fullmatch(text.strip())
    if ago:
        from ..adapters.bootstrap import system_clock

        try:
            return system_clock()() - timedelta(**{_UNITS[ago[2]]: float(ago[1])})
        except OverflowError:
            raise UsageError(f"{text!r} reaches back before the year 1") from None
    try:
        return timestamp(text)
    except UsageError as e:
        if "outside the years" in str(e):
            raise
        raise UsageError(f"{text!r} is neither an ISO 8601 time nor a span like 24h") from None


@contextmanager
def _projections(args: argparse.Namespace) -> Iterator[Projections]:
    """The query API, with a note on stderr when the projections trail the log."""
    from ..adapters.bootstrap import open_projections, open_runner, open_store

    store = open_store(args.database_url)
    try:
        with open_runner(store) as runner:
            runner.setup()
        projections = open_projections(store)
        yield projections
        lag = store.head() - min(projections.positions().values(), default=0)
        if lag > 0:
            warn(f"the projections are {lag} events behind the log; run `voxledger project run`")
    finally:
        store.close()


def run_conversations(args: argparse.Namespace) -> int:
    """List conversations."""
    with _projections(args) as projections:
        rows = projections.conversations(args.status, args.limit)
        if args.json:
            print_json([to_plain(r) for r in rows])
            return 0
        print_table(
            f"{len(rows)} conversations" + (f" {args.status}" if args.status else ""),
            ["id", "status", "channel", "participant", "messages", "turns", "flow", "active"],
            (
                (
                    r.conversation_id,
                    r.status,
                    r.channel,
                    r.participant,
                    r.message_count,
                    r.turn_count,
                    r.active_flow_id,
                    r.last_activity.isoformat(timespec="seconds"),
                )
                for r in rows
            ),
        )
    return 0


def run_metrics(args: argparse.Namespace) -> int:
    """Print the totals, and delivery per channel and hour."""
    with _projections(args) as projections:
        summary = projections.metrics(args.since)
        delivery = projections.delivery(args.since)
        if args.json:
            print_json({**to_plain(summary), "delivery_hourly": to_plain(delivery.hours)})
        else:
            print_metrics(summary)
            print_delivery(delivery)
    return 0


def print_metrics(m: MetricsSummary) -> None:
    """The totals for people."""
    r = m.response
    print_fields(
        "metrics" + (f" since {m.since.isoformat(timespec='seconds')}" if m.since else ""),
        [
            ("conversations", m.conversations),
            ("turns completed", m.turns),
            ("interruptions", m.interruptions),
            ("messages", m.messages),
            ("silences", m.silences),
            (
                "response time ms",
                "-"
                if not r.count
                else f"mean {r.mean_ms:.0f}, p50 {r.p50_ms:.0f}, p95 {r.p95_ms:.0f}, "
                f"p99 {r.p99_ms:.0f}, min {r.min_ms:.0f}, max {r.max_ms:.0f}",
            ),
            ("tokens in/out", f"{m.tokens_in}/{m.tokens_out}"),
            ("audio seconds", round(m.audio_seconds, 2)),
            ("estimated cost", f"{m.cost:.4f}"),
        ],
    )
    if m.flows:
        print_table(
            "flows",
            ["flow", "started", "completed", "cancelled", "expired"],
            ((f.definition, f.started, f.completed, f.cancelled, f.expired) for f in m.flows),
        )


def print_delivery(d: DeliveryMetrics) -> None:
    """Delivery per channel, hour by hour, and the failures by reason, for people."""
    if not d.channels and not d.failures:
        return

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    rows = [
        (
            c.channel,
            "all" if c.hour is None else c.hour.isoformat(timespec="minutes"),
            c.delivered,
            c.retried,
            c.failed,
            ms(c.latency.p50_ms),
            ms(c.latency.p95_ms),
            ms(c.latency.p99_ms),
        )
        for c in [*d.channels, *d.hours]
    ]
    print_table(
        "delivery (latency from the message that caused a reply to the channel taking it)",
        ["channel", "hour", "delivered", "retried", "failed", "p50 ms", "p95 ms", "p99 ms"],
        rows,
    )
    if d.failures:
        print_table(
            "delivery failures",
            ["channel", "reason", "code", "failures"],
            ((f.channel, f.reason, f.code or "-", f.failures) for f in d.failures),
        )


def run_audit(args: argparse.Namespace) -> int:
    """Print a stream's audit trail."""
    with _projections(args) as projections:
        entries = projections.audit(args.stream_id)
        if args.json:
            print_json([to_plain(e) for e in entries])
        else:
            print_audit(args.stream_id, entries)
    return 0


def print_audit(stream_id: Any, entries: list[AuditEntry]) -> None:
    """The trail for people: one line per event, with what it changed."""
    kind = entries[0].stream_type if entries else "stream"
    print_table(
        f"audit of {kind} {stream_id}: {len(entries)} events",
        ["#", "time", "event", "summary", "changed"],
        (
            (
                e.version,
                e.occurred_at.isoformat(timespec="seconds"),
                e.event_type,
                e.summary,
                "; ".join(
                    f"{k}: {_short(c['old'])} -> {_short(c['new'])}" for k, c in e.changes.items()
                ),
            )
            for e in entries
        ),
    )


def _short(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def run_funnel(args: argparse.Namespace) -> int:
    """Print a flow's funnel."""
    with _projections(args) as projections:
        funnel = projections.funnel(args.definition)
        if args.json:
            print_json(to_plain(funnel))
        else:
            print_funnel(funnel)
    return 0


def print_funnel(f: Funnel) -> None:
    """The funnel for people."""
    o = f.outcomes
    print_table(
        f"flow {f.definition}: {o.started} started, {o.completed} completed, "
        f"{o.cancelled} cancelled, {o.expired} expired",
        ["step", "reached", "rejected answers", "abandoned here"],
        ((s.step, s.reached, s.rejected, s.abandoned) for s in f.steps),
    )
