"""The console's metrics page: messages, response-time percentiles and interruptions per
hour over a range of time, from the metrics projection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from ...domain.errors import BadInput
from ...projections.queries import MAX_SERIES_HOURS
from .charts import bars, hours_between, lines
from .context import ConsoleContext, chosen_zone
from .conversations import typed_moment
from .rendering import page, zone_named

SPANS = {"6h": 6, "24h": 24, "7d": 7 * 24, "30d": 30 * 24}


@get("/metrics", sync_to_thread=True, include_in_schema=False)
def metrics_page(
    request: Request[Any, Any, Any],
    console: NamedDependency[ConsoleContext],
    span: Annotated[str | None, QueryParameter(max_length=8)] = None,
    since: Annotated[str | None, QueryParameter(name="from", max_length=40)] = None,
    until: Annotated[str | None, QueryParameter(name="to", max_length=40)] = None,
    browser_tz: Annotated[str | None, QueryParameter(max_length=64)] = None,
) -> Response:
    """Hourly charts over a span back from now (24 hours unless chosen) or a range typed in."""
    zone = chosen_zone(request)
    projections = console.sources.projections
    problem = None
    try:
        start, end = _range(console.clock(), span, since, until, zone or zone_named(browser_tz))
        series = projections.hourly(start, end)
    except BadInput as error:
        problem = str(error)
        start, end = _range(console.clock(), "24h", None, None, UTC)
        series = []
    hours = hours_between(start, end)
    by_hour = {h.hour: h for h in series}
    rows = [by_hour.get(h) for h in hours]
    summary = projections.metrics(start, end)
    latest = projections.conversations(limit=1)
    charts = [
        bars("Messages per hour", "messages", hours,
             [r.messages if r else 0 for r in rows], zone),
        lines("Response time per hour (completed turns)", "ms", hours, {
            "p50": [r.response.p50_ms if r else None for r in rows],
            "p95": [r.response.p95_ms if r else None for r in rows],
            "p99": [r.response.p99_ms if r else None for r in rows],
        }, zone),
        bars("Interruptions per hour", "interruptions", hours,
             [r.interruptions if r else 0 for r in rows], zone),
    ]  # fmt: skip
    return page(
        request,
        "metrics.html",
        400 if problem else 200,
        title="Metrics",
        nav="metrics",
        zone=zone,
        lag=projections.lag(),
        problem=problem,
        span=span if span in SPANS else ("" if since or until else "24h"),
        spans=list(SPANS),
        since=since or "",
        until=until or "",
        start=start,
        end=end,
        summary=summary,
        charts=charts,
        table=[(h, r) for h, r in zip(hours, rows, strict=True) if r is not None],
        latest=latest[0].last_activity if latest else None,
    )


def _range(
    now: datetime, span: str | None, since: str | None, until: str | None, zone: Any
) -> tuple[datetime, datetime]:
    """From, to: whole hours around a typed range, or a span back from the end of the
    current hour."""
    typed_in = zone or UTC
    start, end = typed_moment(since, typed_in, "from"), typed_moment(until, typed_in, "to")
    if start is None and end is None:
        if span is not None and span not in SPANS:
            raise BadInput(f"span {span!r} is not one of {', '.join(SPANS)}")
        end = _next_hour(now)
        return end - timedelta(hours=SPANS[span or "24h"]), end
    end = _next_hour(end) if end is not None else _next_hour(now)
    start = start if start is not None else end - timedelta(hours=24)
    start = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    if end <= start:
        raise BadInput("to must come after from")
    if end - start > timedelta(hours=MAX_SERIES_HOURS):
        raise BadInput(f"a range spans at most {MAX_SERIES_HOURS // 24} days")
    return start, end


def _next_hour(moment: datetime) -> datetime:
    """The end of the hour that holds ``moment`` (UTC)."""
    hour = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return hour + timedelta(hours=1) if hour != moment else hour
