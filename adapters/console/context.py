"""What the console's handlers share, handed to each by Litestar's dependency injection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import parse_qs

from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ...domain.errors import BadInput
from .rendering import TZ_COOKIE, zone_named
from .session import Sessions
from .sources import Sources


class ConsoleContext:
    """The console's reads, its sessions, the composition root's clock, and the signal
    that the server is stopping (live tails end on it)."""

    def __init__(
        self,
        sources: Sources,
        sessions: Sessions,
        clock: Callable[[], datetime],
        closing: threading.Event,
    ) -> None:
        self.sources = sources
        self.sessions = sessions
        self.clock = clock
        self.closing = closing


def chosen_zone(request: Request[Any, Any, Any]) -> tzinfo | None:
    """The zone the operator chose (``?tz=``, remembered in a cookie); None: the
    browser's, applied by the script."""
    given = request.query_params.get("tz")
    if given is not None:
        return zone_named(given) if given not in ("", "browser") else None
    try:
        return zone_named(request.cookies.get(TZ_COOKIE))
    except BadInput:  # a stale or hand-made cookie: fall back to the browser's zone
        return None


def remember_zone(app: ASGIApp) -> ASGIApp:
    """Middleware: a zone chosen with ``?tz=`` is kept in a cookie for the next pages
    (``?tz=browser`` forgets it); an unknown zone is left to the page to refuse."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        chosen = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("tz")
        name = chosen[-1] if chosen else None
        if name is None and b"tz=" in scope.get("query_string", b""):
            name = ""  # ?tz= with nothing: forget the zone
        try:
            zone = zone_named(name) if name not in (None, "", "browser") else None
        except BadInput:
            name = None
        if name is None:
            await app(scope, receive, send)
            return
        value = f"{TZ_COOKIE}={name}; Path=/console; SameSite=Strict; Max-Age=31536000"
        if zone is None:
            value = f"{TZ_COOKIE}=; Path=/console; SameSite=Strict; Max-Age=0"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                message["headers"] = [*headers, (b"set-cookie", value.encode())]
            await send(message)

        await app(scope, receive, sending)

    return middleware
