"""How refusals and failures are answered: each domain error has one 4xx status, a request
Litestar refuses names what is wrong, the database's failures are a 503, and a bug is a 500
with no internals in it (its traceback goes to the log). Every body is an `ErrorBody`."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.utils.scope.state import ScopeState

from ...domain.errors import (
    BadInput,
    Conflict,
    DefinitionError,
    FlowExpired,
    InvalidTransition,
    NotFound,
    Unavailable,
    ValidationFailed,
    VersionMismatch,
    VoxledgerError,
)
from ..chat import telegram
from .bodies import BehindBody, ConflictBody, ErrorBody
from .freshness import PositionNotInLog, ProjectionsBehind
from .screening import strict_fault

log = structlog.get_logger("voxledger.http")

# Seconds a client should wait before trying again after a 503.
RETRY_AFTER_S = 5

# The most specific class first: each domain error has one status.
STATUS_OF_ERROR: tuple[tuple[type[VoxledgerError], int], ...] = (
    (Unavailable, 503),
    (NotFound, 404),
    (VersionMismatch, 409),
    (InvalidTransition, 409),
    (FlowExpired, 409),
    (Conflict, 409),
    (ValidationFailed, 422),
    (DefinitionError, 422),
    (BadInput, 400),
)


def status_of(error: VoxledgerError) -> int:
    """The HTTP status that answers a domain error (400 for one not listed)."""
    return next((code for cls, code in STATUS_OF_ERROR if isinstance(error, cls)), 400)


class ProjectionsNotBuilt(Exception):
    """The projection tables do not exist yet: no projection worker has run on this schema."""


# Seconds a read should wait before asking again when the projections were behind.
BEHIND_RETRY_AFTER_S = 1


def domain_error(_: Request[Any, Any, Any], exc: VoxledgerError) -> Response[Any]:
    """A refused command or query: 4xx, with the domain's own explanation (and, for a write
    that expected another version, the version the conversation is at)."""
    status = status_of(exc)
    if isinstance(exc, VersionMismatch):
        body = ConflictBody("version_mismatch", str(exc), current_version=exc.current_version)
        return Response(body, status_code=409)
    if status == 503:
        log.warning("http.unavailable", error=first_line(exc))
        return _error(503, "unavailable", str(exc), {"Retry-After": str(RETRY_AFTER_S)})
    return _error(status, _snake(type(exc).__name__), str(exc))


def position_not_in_log(_: Request[Any, Any, Any], exc: PositionNotInLog) -> Response[ErrorBody]:
    """A read that asked for a position no write has: 409, at once (waiting cannot help
    unless the log grows that far)."""
    return _error(409, "position not in the log", str(exc))


def projections_behind(_: Request[Any, Any, Any], exc: ProjectionsBehind) -> Response[BehindBody]:
    """A read that waited for a log position the projections had not reached: 503, with
    the position they reached and when to ask again."""
    return Response(
        BehindBody("projections behind", str(exc), position=exc.reached),
        status_code=503,
        headers={"Retry-After": str(BEHIND_RETRY_AFTER_S)},
    )


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    """A request refused before it reached a handler: auth, size, shape, routing."""
    status = exc.status_code
    if status >= 500:
        log.error("http.error", status=status, detail=exc.detail)
        return _error(status, "internal error", None)
    problems = [p for p in exc.extra if isinstance(p, dict)] if isinstance(exc.extra, list) else []
    if not problems:
        return _error(status, HTTPStatus(status).phrase.lower(), exc.detail, exc.headers)
    named = [_name_the_problem(p) for p in problems]
    sources = sorted({_source(p) for p in problems})
    detail: Any = named[0] if len(named) == 1 else named
    return _error(status, f"invalid {' and '.join(sources)}", detail, exc.headers)


def refused_update(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    """A Telegram update refused only because its text holds a NUL character (which no edge
    lets in): 200 and nothing recorded, since Telegram would otherwise redeliver it for as
    long as it tries, and it would be refused each time. Any other refusal as usual, also
    when a NUL came first among several faults (the decoder names only the first): a body
    that is no update once its NULs are set aside is refused for what else is wrong."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    if exc.status_code == 400 and any(_nul_refused(p) for p in problems):
        besides = _fault_besides_nul(request)
        if besides is None:
            log.warning("telegram.update_refused", error="text with a NUL character")
            return Response({}, status_code=200)
        exc = besides
    return http_error(request, exc)


def _fault_besides_nul(request: Request[Any, Any, Any]) -> HTTPException | None:
    """What the webhook's body is refused for, read as `strict_body` reads it, with every
    NUL character replaced (by U+FFFD: the same length in UTF-16, as Telegram counts), or
    None if nothing."""
    body = ScopeState.from_scope(request.scope).body
    if not isinstance(body, bytes):
        return None  # not read (the refusal came before the body): as before
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:  # Litestar read it as JSON; never a 500 all the same
        return ValidationException(
            "Validation failed", extra=[{"message": "JSON is malformed", "source": "body"}]
        )
    return strict_fault(_nul_replaced(decoded), telegram.Update)


def _nul_replaced(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_nul_replaced(v) for v in value]
    if isinstance(value, dict):
        return {_nul_replaced(k): _nul_replaced(v) for k, v in value.items()}
    return value


def _nul_refused(problem: Any) -> bool:
    """Whether a body problem is a text failing the NUL-free pattern."""
    message = str(problem.get("message", "")) if isinstance(problem, dict) else ""
    return "matching regex" in message and "x00]*$" in message


def _source(problem: dict[str, Any]) -> str:
    """body, query, path, header, cookie (Litestar gives an enum for some)."""
    source = problem.get("source", "request")
    return str(getattr(source, "value", source))


def _name_the_problem(problem: dict[str, Any]) -> str:
    """`body.message.chat.id: Expected `int`, got `str``: where, then what."""
    key, message = str(problem.get("key", "")), str(problem.get("message", ""))
    source = _source(problem)
    if message == repr(key):  # Litestar's KeyError: the part was not sent at all
        message = "missing"
    where = source if key in ("", "data") else f"{source}.{key}" if source else key
    return f"{where}: {message}" if where else message


def undecodable_body(_: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[ErrorBody]:
    """A body that is not UTF-8 (Litestar lets the decoder's error through)."""
    return _error(400, "bad request", f"JSON is malformed: not UTF-8 at byte {exc.start}")


def projections_not_built(
    _: Request[Any, Any, Any], exc: ProjectionsNotBuilt
) -> Response[ErrorBody]:
    """Reads across conversations wait for the projection worker: 503, saying so."""
    return _error(503, "projections unavailable", str(exc), {"Retry-After": str(RETRY_AFTER_S)})


def database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """The database is unreachable: not the client's fault, so a 503 to retry later. Any
    other database error is a statement that should never have been sent: a bug (500)."""
    if not lost_connection(exc):
        return unexpected_error(request, exc)
    log.error("http.database_error", error=first_line(exc))
    return _error(503, "unavailable", "database unavailable", {"Retry-After": str(RETRY_AFTER_S)})


def lost_connection(error: BaseException) -> bool:
    """Whether a database error says the server could not be reached or went away."""
    from eventsourcing.persistence import InterfaceError, OperationalError
    from psycopg import InterfaceError as PsycopgInterfaceError
    from psycopg import OperationalError as PsycopgOperationalError

    lost = (OperationalError, InterfaceError, PsycopgOperationalError, PsycopgInterfaceError)
    return isinstance(error, lost)


def unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """A bug: logged with its traceback, answered without internals."""
    log.error("http.unexpected_error", exc_info=exc)
    return _error(500, "internal error", None)


def first_line(error: BaseException) -> str:
    """An error's first line (its type's name if it has no message): enough for a log or a
    health report, never a traceback."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _error(
    status: int, error: str, detail: Any, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(ErrorBody(error, detail), status_code=status, headers=headers)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")
