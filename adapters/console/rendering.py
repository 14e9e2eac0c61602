"""How the console writes its pages: Jinja templates (autoescaped) rendered into HTML
responses with strict security headers, and times written for the operator's zone.

Times go out as ``<time datetime="...Z">`` in UTC with the UTC in a title; the console's
script rewrites their text in the browser's zone. A zone chosen with ``?tz=`` is applied
here instead (and the script leaves those times alone), so pages read right without script.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import jinja2
from litestar import Request, Response
from markupsafe import Markup

from ...domain.errors import BadInput

HERE = Path(__file__).parent
ERASED = "[erased]"  # how the store reads personal data whose key was erased
TZ_COOKIE = "voxledger_console_tz"

# The same formats as the script's (static/console.js): one look with and without script.
TIME_FORMATS = {
    "full": "%Y-%m-%d %H:%M:%S",
    "precise": "%Y-%m-%d %H:%M:%S.{ms}",
    "stamp": "%m-%d %H:%M:%S.{ms}",
    "minute": "%Y-%m-%d %H:%M",
    "hour": "%m-%d %H:%M",
    "clock": "%H:%M",
}

# No inline script or style may run: everything the pages load comes from /console/static.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # operators' data: never kept by the browser or a proxy
}


def zone_named(name: str | None) -> tzinfo | None:
    """The zone an operator asked for by IANA name (None: none asked for)."""
    if not name:
        return None
    if name.upper() == "UTC":
        return UTC
    try:
        if name in _zones():
            return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        pass
    raise BadInput(f"unknown time zone {name!r}; use an IANA name like Europe/Berlin or UTC")


@cache
def _zones() -> frozenset[str]:
    # Only the zone database's own names: a name typed is never opened as a file path.
    return frozenset(available_timezones())


def zone_names() -> list[str]:
    """Every IANA zone name, for the zone picker."""
    return sorted(_zones())


def time_tag(at: datetime, zone: tzinfo | None, fmt: str = "full") -> Markup:
    """A moment as a ``<time>`` element: UTC in its attribute and title, the text in the
    operator's zone (UTC until the script rewrites it, when no zone was chosen)."""
    utc = at.astimezone(UTC)
    iso = utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Markup('<time datetime="{}" title="{} UTC" data-fmt="{}">{}</time>').format(
        iso, iso.removesuffix("Z"), fmt, format_time(at, zone, fmt)
    )


def format_time(at: datetime, zone: tzinfo | None, fmt: str) -> str:
    """A moment's text in a zone (UTC when None), in one of ``TIME_FORMATS``."""
    shown = at.astimezone(zone or UTC)
    return shown.strftime(TIME_FORMATS[fmt]).replace("{ms}", f"{shown.microsecond // 1000:03d}")


def number(value: float | int | None, digits: int = 0) -> str:
    """A count or measure for people: thousands separated, ``digits`` decimals."""
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def percent(part: float, whole: float) -> str:
    """``part`` as a share of ``whole``."""
    return f"{100 * part / whole:.0f}%" if whole else "—"


def short(stream_id: Any) -> str:
    """The first eight characters of an id: enough to tell streams apart on a page."""
    return str(stream_id)[:8]


@jinja2.pass_context
def _time_filter(context: jinja2.runtime.Context, at: datetime | None, fmt: str = "full") -> Any:
    if at is None:
        return Markup('<span class="null">—</span>')
    return time_tag(at, context.get("zone"), fmt)


def marked_erased(text: str) -> Markup:
    """Text with each "[erased]" in it (how erased personal data reads) marked as such."""
    return Markup.escape(text).replace(ERASED, Markup('<span class="erased">[erased]</span>'))


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a missing value is a bug, not an empty cell
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(time=_time_filter, number=number, short=short, erased=marked_erased)
    env.globals.update(percent=percent)
    return env


ENVIRONMENT = _environment()


def render(template: str, **context: Any) -> str:
    """A template rendered with its context."""
    return ENVIRONMENT.get_template(template).render(**context)


def page(
    request: Request[Any, Any, Any], template: str, status_code: int = 200, **context: Any
) -> Response[str]:
    """A whole page as an HTML response (times in ``zone`` when one is given). Its forms
    that only change how the page looks keep the rest of the request's query."""
    context.setdefault("zone", None)
    context["request_query"] = [
        (k, v) for k, v in request.query_params.multi_items() if k not in ("tz", "browser_tz")
    ]
    return Response(
        render(template, **context),
        status_code=status_code,
        media_type="text/html; charset=utf-8",
        headers=SECURITY_HEADERS,
    )
