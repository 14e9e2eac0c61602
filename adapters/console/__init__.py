"""The operator console: server-rendered pages under /console for looking at conversations,
flows and metrics in a browser. It only reads; signing in and out are its only forms.

`console_router` is the one thing an HTTP app needs from here: templates, script and style
sheet travel inside the router (every asset is served from /console/static).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import structlog
from eventsourcing.persistence import PersistenceError
from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from ...domain.errors import BadInput, NotFound, Unavailable, VoxledgerError
from ..services import Services
from . import auth, conversations, flows, metrics
from .context import ConsoleContext, remember_zone
from .rendering import page
from .session import Sessions
from .sources import Sources

__all__ = ["console_router"]

log = structlog.get_logger("voxledger.console")
STATIC = Path(__file__).parent / "static"


def console_router(
    services: Services, api_token: str | None, *, closing: threading.Event | None = None
) -> Router:
    """The console's routes under /console, reading the store, projections and flows of
    the composition root's services. Signing in takes ``api_token`` (None: nobody can); live
    tails end when ``closing`` is set (the server begins to stop)."""
    console = ConsoleContext(
        sources=Sources.of(services),
        sessions=Sessions(api_token, services.clock),
        clock=services.clock,
        closing=closing or threading.Event(),
    )

    def signed_in(request: Request[Any, Any, Any]) -> Response | None:
        return auth.require_session(console, request)

    pages = Router(
        path="/",
        route_handlers=[
            home,
            conversations.conversation_list,
            conversations.conversation_page,
            conversations.tail,
            flows.flow_list,
            flows.flow_page,
            metrics.metrics_page,
        ],
        before_request=signed_in,
        middleware=[remember_zone],
    )
    static = create_static_files_router(
        path="/static",
        directories=[STATIC],
        cache_control=CacheControlHeader(max_age=300),
        include_in_schema=False,
        name="console-static",
    )
    return Router(
        path="/console",
        route_handlers=[auth.login_page, auth.login, auth.logout, static, pages],
        dependencies={"console": Provide(lambda: console, sync_to_thread=False)},
        exception_handlers={
            NotFound: _not_found,
            BadInput: _bad_input,
            VoxledgerError: _refused,
            HTTPException: _http_error,
            psycopg.errors.UndefinedTable: _projections_missing,
            Unavailable: _database_error,
            PersistenceError: _database_error,
            psycopg.Error: _database_error,
            Exception: _unexpected,
        },
        include_in_schema=False,
    )


@get("/", sync_to_thread=False, include_in_schema=False)
def home() -> Redirect:
    """The console's front page is its list of conversations."""
    return Redirect(auth.HOME, status_code=303)


def _error(request: Request[Any, Any, Any], status: int, title: str, message: str) -> Response:
    return page(request, "error.html", status, title=title, message=message)


def _not_found(request: Request[Any, Any, Any], exc: NotFound) -> Response:
    return _error(request, 404, "Not found", str(exc))


def _bad_input(request: Request[Any, Any, Any], exc: BadInput) -> Response:
    return _error(request, 400, "Cannot show that", str(exc))


def _refused(request: Request[Any, Any, Any], exc: VoxledgerError) -> Response:
    return _error(request, 409, "Cannot show that", str(exc))


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response:
    if exc.status_code >= 500:
        log.error("console.error", status=exc.status_code, detail=exc.detail)
        return _error(
            request, exc.status_code, "Something went wrong", "The server failed; see its log."
        )
    problems = exc.extra if isinstance(exc.extra, list) else []
    named = "; ".join(
        f"{p.get('key')}: {p.get('message')}" for p in problems if isinstance(p, dict)
    )
    return _error(request, exc.status_code, "Cannot show that", named or str(exc.detail))


def _projections_missing(request: Request[Any, Any, Any], exc: Exception) -> Response:
    return _error(
        request,
        503,
        "Projections not built yet",
        "No projection worker has run on this database yet: start one with "
        "`voxledger project run`, then reload.",
    )


def _database_error(request: Request[Any, Any, Any], exc: Exception) -> Response:
    log.error("console.database_error", error=str(exc).strip().splitlines()[0] if str(exc) else "")
    return _error(
        request, 503, "Database unavailable", "The database did not answer; try again shortly."
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response:
    log.error("console.unexpected_error", exc_info=exc)
    return _error(request, 500, "Something went wrong", "The server failed; see its log.")
