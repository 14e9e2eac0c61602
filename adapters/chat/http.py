"""The HTTP server: Telegram's webhook, a JSON API under /v1, /healthz, and /schema.

Litestar decodes request bodies into msgspec Structs (validated once, here) and documents
them in the OpenAPI schema at /schema. Each refused request gets a 4xx JSON body
``{"error": ..., "detail": ...}`` and records nothing; an unexpected failure is a 500 with
no internals in it, logged with its traceback.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any
from uuid import UUID, uuid4

import anyio.to_thread
import msgspec
import psycopg
import structlog
from eventsourcing.persistence import PersistenceError
from litestar import Litestar, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.params import Parameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from psycopg import Error as PsycopgError

from ...domain.async_engine import AsyncEngine
from ...domain.conversation import ConversationState
from ...domain.engine import Engine, HistoryEntry
from ...domain.errors import (
    BadInput,
    Conflict,
    DefinitionError,
    Expired,
    InvalidTransition,
    NotFound,
    ValidationFailed,
    VoxledgerError,
)
from ...domain.flow import FlowState
from ...projections.queries import ConversationRow, MetricsSummary, Projections
from ..console import console_router
from . import telegram
from .bot import ChatBot, Incoming, Reply, conversation_id_for

log = structlog.get_logger("voxledger.http")

ENV_TELEGRAM_SECRET = "VOXLEDGER_TELEGRAM_SECRET"
ENV_API_TOKEN = "VOXLEDGER_API_TOKEN"
ENV_MAX_BODY = "VOXLEDGER_MAX_BODY_BYTES"
DEFAULT_MAX_BODY = 64 * 1024

# The most specific class first: each domain error has one status.
STATUS_OF_ERROR: tuple[tuple[type[VoxledgerError], int], ...] = (
    (NotFound, 404),
    (InvalidTransition, 409),
    (Expired, 409),
    (Conflict, 409),
    (ValidationFailed, 422),
    (DefinitionError, 422),
    (BadInput, 400),
)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """What the server needs besides the Engine; `from_env` reads it from the environment."""

    telegram_secret: str | None = None  # None: the webhook refuses every call
    api_token: str | None = None  # None: the /v1 API refuses every call
    max_body_bytes: int = DEFAULT_MAX_BODY
    flow: str = "intake"

    @classmethod
    def from_env(cls, flow: str = "intake") -> Settings:
        """VOXLEDGER_TELEGRAM_SECRET, VOXLEDGER_API_TOKEN, VOXLEDGER_MAX_BODY_BYTES."""
        raw_limit = os.environ.get(ENV_MAX_BODY) or str(DEFAULT_MAX_BODY)
        if not raw_limit.isdigit() or int(raw_limit) < 1:
            raise BadInput(f"{ENV_MAX_BODY} must be a positive number of bytes, not {raw_limit!r}")
        return cls(
            telegram_secret=os.environ.get(ENV_TELEGRAM_SECRET) or None,
            api_token=os.environ.get(ENV_API_TOKEN) or None,
            max_body_bytes=int(raw_limit),
            flow=flow,
        )


# -- bodies ------------------------------------------------------------------------------------

MessageId = Annotated[
    str,
    # No colon: the bot's own ids (replies, callbacks) have one, so they never collide.
    msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$"),
]
# PostgreSQL text cannot hold NUL: one in an event would stall every projection that reads it.
NO_NUL = r"^[^\x00]*$"
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=NO_NUL)]


class NewConversation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Start a conversation. With a ``chat_id`` its id is derived from channel and chat
    id, so starting it again finds the same conversation."""

    channel: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_.\-]{1,64}$")] = "api"
    chat_id: ShortText | None = None
    participant: ShortText | None = None
    metadata: dict[ShortText, ShortText | int | float | bool | None] = {}


class ConversationStarted(msgspec.Struct, frozen=True):
    """The conversation's id, and whether this request started it."""

    conversation_id: UUID
    created: bool


class NewMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A user's message to a conversation. Give a ``message_id`` to make a retry safe: the
    same id again returns the original reply and records nothing."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=NO_NUL)]
    message_id: MessageId | None = None
    user_id: ShortText | None = None
    choice: bool = False  # a menu choice (a button), not typed text


class FlowView(msgspec.Struct, frozen=True):
    """A flow run and what it asks now (None once it has ended)."""

    flow: FlowState
    prompt: str | None


class ConversationView(msgspec.Struct, frozen=True):
    """A conversation's state and the flow in progress, if any."""

    conversation: ConversationState
    flow: FlowView | None


class Health(msgspec.Struct, frozen=True):
    """The database answers; how far each projection trails the event log."""

    status: str
    database: str
    head: int | None = None
    projection_lag: dict[str, int] = {}


class ErrorBody(msgspec.Struct, frozen=True):
    """Every refused request's body: what is wrong, and the details."""

    error: str
    detail: Any = None


# -- the application ---------------------------------------------------------------------------


class Services:
    """What the route handlers share: the engine, the bot, the projections' queries."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.async_engine = AsyncEngine(engine)
        self.bot = ChatBot(engine, settings.flow)
        self.projections = projections_of(engine)

    async def in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A blocking read, off the event loop."""
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))


def projections_of(engine: Engine) -> Projections | None:
    """The query API over the projections in the event store's database and schema."""
    datastore = getattr(getattr(engine.store, "recorder", None), "datastore", None)
    if datastore is None:
        return None
    return Projections(datastore.pool, datastore.schema)


def services(request: Request[Any, Any, Any]) -> Services:
    """The shared services of the app serving this request."""
    return request.app.state["services"]


def create_app(
    engine: Engine, settings: Settings, *, closing: threading.Event | None = None
) -> ASGIApp:
    """The ASGI application: routes, authentication, size limit, errors, request logs, and
    the operator console (its live tails end when ``closing`` is set)."""
    api = Router(
        path="/v1",
        route_handlers=[
            start_conversation,
            post_message,
            read_conversation,
            read_history,
            read_flow,
            list_conversations,
            read_metrics,
        ],
        guards=[bearer_token],
        security=[{"bearer": []}],
        tags=["api"],
    )
    app = Litestar(
        route_handlers=[
            telegram_webhook,
            healthz,
            api,
            console_router(engine, settings.api_token, closing=closing),
        ],
        state=State({"services": Services(engine, settings)}),
        request_max_body_size=settings.max_body_bytes,
        exception_handlers={
            VoxledgerError: domain_error,
            HTTPException: http_error,
            UnicodeDecodeError: undecodable_body,
            ProjectionsNotBuilt: projections_not_built,
            PersistenceError: database_error,
            PsycopgError: database_error,
            Exception: unexpected_error,
        },
        openapi_config=OpenAPIConfig(
            title="voxledger",
            version="1",
            path="/schema",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer"),
                    "telegram": SecurityScheme(
                        type="apiKey",
                        name="X-Telegram-Bot-Api-Secret-Token",
                        security_scheme_in="header",
                    ),
                }
            ),
        ),
        logging_config=None,  # structlog writes the request logs (below)
    )
    return request_logs(app)


# -- authentication ------------------------------------------------------------------------------


def _matches(given: str | None, expected: str | None) -> bool:
    # Constant time: the comparison's duration must not reveal how much of a guess was right.
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def telegram_secret(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The webhook answers only calls carrying the secret set with setWebhook."""
    expected = connection.app.state["services"].settings.telegram_secret
    given = connection.headers.get("x-telegram-bot-api-secret-token")
    if expected is None:
        raise PermissionDeniedException(f"the webhook is off: {ENV_TELEGRAM_SECRET} is not set")
    if not _matches(given, expected):
        raise PermissionDeniedException("missing or wrong X-Telegram-Bot-Api-Secret-Token")


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The API answers only requests with `Authorization: Bearer <VOXLEDGER_API_TOKEN>`."""
    expected = connection.app.state["services"].settings.api_token
    if expected is None:
        raise PermissionDeniedException(f"the API is off: {ENV_API_TOKEN} is not set")
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _matches(token.strip(), expected):
        raise NotAuthorizedException(
            "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )


# -- Telegram ------------------------------------------------------------------------------------


@post(
    "/telegram/webhook",
    status_code=200,
    guards=[telegram_secret],
    security=[{"telegram": []}],
    tags=["telegram"],
    summary="Telegram Bot API webhook",
)
async def telegram_webhook(
    request: Request[Any, Any, Any], data: telegram.Update
) -> telegram.SendMessage | telegram.NoReply:
    """Answer an Update with a sendMessage call in the response body; an update with no
    text is acknowledged and ignored."""
    message = telegram.incoming(data)
    if message is None:
        return telegram.NoReply()
    reply = await _chat(services(request), message)
    return telegram.send_message(message.chat_id, reply)


async def _chat(s: Services, message: Incoming) -> Reply:
    chat_key = conversation_id_for(message.channel, message.chat_id)
    structlog.contextvars.bind_contextvars(conversation_id=str(chat_key))
    reply: Reply = await s.async_engine.run(s.bot.handle_chat, chat_key, message)
    if reply.conversation_id != chat_key:  # a later generation of the chat's conversation
        structlog.contextvars.bind_contextvars(conversation_id=str(reply.conversation_id))
    return reply


# -- the /v1 API ---------------------------------------------------------------------------------


@post("/conversations", status_code=201)
async def start_conversation(
    request: Request[Any, Any, Any], data: NewConversation
) -> Response[ConversationStarted]:
    """Start a conversation (201), or find the one a channel and chat id name (200)."""
    s = services(request)
    conversation_id = conversation_id_for(data.channel, data.chat_id) if data.chat_id else uuid4()
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    try:
        await s.async_engine.start_conversation(
            data.channel, data.participant, dict(data.metadata), conversation_id=conversation_id
        )
    except Conflict:
        if data.chat_id is None:
            raise
        return Response(ConversationStarted(conversation_id, created=False), status_code=200)
    return Response(ConversationStarted(conversation_id, created=True), status_code=201)


@post("/conversations/{conversation_id:uuid}/messages", status_code=200)
async def post_message(
    request: Request[Any, Any, Any], conversation_id: UUID, data: NewMessage
) -> Reply:
    """Send a user's message: it answers the flow in progress, or is a command or a menu
    choice; returns the bot's reply (the original one for a message id seen before)."""
    s = services(request)
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    message = Incoming(
        channel="api",
        chat_id=str(conversation_id),
        message_id=data.message_id or uuid4().hex,
        text=data.text,
        user_id=data.user_id,
        choice=data.choice,
    )
    return await s.async_engine.run(s.bot.handle, conversation_id, message)


@get("/conversations/{conversation_id:uuid}")
async def read_conversation(
    request: Request[Any, Any, Any], conversation_id: UUID
) -> ConversationView:
    """A conversation's state, with the flow in progress and what it asks now."""
    s = services(request)
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    state = await s.in_thread(s.engine.get_conversation, conversation_id)
    flow = None
    if state.active_flow_id is not None:
        flow = await _flow_view(s, state.active_flow_id)
    return ConversationView(conversation=state, flow=flow)


@get("/conversations/{conversation_id:uuid}/history")
async def read_history(
    request: Request[Any, Any, Any],
    conversation_id: UUID,
    since_version: Annotated[int | None, Parameter(ge=0)] = None,
) -> list[HistoryEntry]:
    """Every recorded event of a conversation (or a flow), oldest first."""
    s = services(request)
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    return await s.in_thread(s.engine.history, conversation_id, since_version=since_version)


@get("/flows/{flow_id:uuid}")
async def read_flow(request: Request[Any, Any, Any], flow_id: UUID) -> FlowView:
    """A flow run: its step, answers, rejected answers, and what it asks now."""
    return await _flow_view(services(request), flow_id)


async def _flow_view(s: Services, flow_id: UUID) -> FlowView:
    state: FlowState = await s.in_thread(s.engine.get_flow, flow_id)
    structlog.contextvars.bind_contextvars(conversation_id=str(state.conversation_id))
    prompt = None
    if state.is_active:
        prompt = (await s.in_thread(s.engine.flow_prompt, flow_id)).prompt
    return FlowView(flow=state, prompt=prompt)


@get("/conversations")
async def list_conversations(
    request: Request[Any, Any, Any],
    status: Annotated[str | None, Parameter(max_length=32)] = None,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> list[ConversationRow]:
    """Conversations, most recently active first, from the current-state projection."""
    projections = _projections(services(request))
    return await _read_projections(lambda: projections.conversations(status, limit))


@get("/metrics")
async def read_metrics(
    request: Request[Any, Any, Any], since: datetime | None = None
) -> MetricsSummary:
    """Totals and response-time percentiles over every conversation, from the metrics
    projection (whole UTC hours from ``since``, or all time)."""
    projections = _projections(services(request))
    return await _read_projections(lambda: projections.metrics(since))


def _projections(s: Services) -> Projections:
    if s.projections is None:
        raise NotFound("this event store has no projections to read")
    return s.projections


class ProjectionsNotBuilt(Exception):
    """The projection tables do not exist yet: no projection worker has run on this schema."""


async def _read_projections(query: Callable[[], Any]) -> Any:
    try:
        return await anyio.to_thread.run_sync(query)
    except psycopg.errors.UndefinedTable:
        raise ProjectionsNotBuilt(
            "the projection tables do not exist yet: start the projection worker "
            "(voxledger project run)"
        ) from None


# -- health ---------------------------------------------------------------------------------------


@get("/healthz", tags=["health"])
async def healthz(request: Request[Any, Any, Any]) -> Response[Health]:
    """200 when the database answers a query; each projection's lag in events."""
    s = services(request)

    def check() -> Health:
        head = s.engine.store.head()  # type: ignore[attr-defined]  # a real query
        positions = s.projections.positions() if s.projections else {}
        lag = {name: max(0, head - position) for name, position in positions.items()}
        return Health(status="ok", database="ok", head=head, projection_lag=lag)

    try:
        return Response(await anyio.to_thread.run_sync(check))
    except (PersistenceError, PsycopgError) as e:
        log.warning("health.database_unreachable", error=_first_line(e))
        return Response(Health(status="failing", database=_first_line(e)), status_code=503)


# -- errors ---------------------------------------------------------------------------------------


def domain_error(_: Request[Any, Any, Any], exc: VoxledgerError) -> Response[ErrorBody]:
    """A refused command or query: 4xx, with the domain's own explanation."""
    status = next((code for cls, code in STATUS_OF_ERROR if isinstance(exc, cls)), 400)
    return _error(status, _snake(type(exc).__name__), str(exc))


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
    return _error(503, "projections unavailable", str(exc))


def database_error(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """The database is unreachable or failed: not the client's fault, so a 503."""
    log.error("http.database_error", error=_first_line(exc))
    return _error(503, "database unavailable", None)


def unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """A bug: logged with its traceback, answered without internals."""
    log.error("http.unexpected_error", exc_info=exc)
    return _error(500, "internal error", None)


def _error(
    status: int, error: str, detail: Any, headers: dict[str, str] | None = None
) -> Response[ErrorBody]:
    return Response(ErrorBody(error, detail), status_code=status, headers=headers)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- request logs ---------------------------------------------------------------------------------


def request_logs(app: ASGIApp) -> ASGIApp:
    """One structured log line per request: method, path, status, duration, and the
    conversation id the handler bound (so a conversation's traffic can be followed)."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        structlog.contextvars.clear_contextvars()
        started = time.perf_counter()
        try:
            await app(scope, receive, sending)
        finally:
            log.info(
                "http.request",
                method=scope["method"],
                path=scope["path"],
                status=status[0],
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.clear_contextvars()

    return logged
