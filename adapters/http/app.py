"""The HTTP app: Telegram's and WhatsApp's webhooks, the JSON API under /v1, the voice routes
(Twilio Media Streams, a PCM stream, the assistant's speech on a call), health (/livez,
/readyz, /healthz), and its OpenAPI schema at /schema.

Litestar decodes request bodies into msgspec Structs (validated once, at the edge) and
documents them in the schema. Handlers get the engine, the async engine, the chat bot, the
store and the projection queries by dependency injection, from the services the
composition root built. Each refused request gets a 4xx JSON body ``{"error": ...,
"detail": ...}`` and records nothing; an unexpected failure is a 500 with no internals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import PersistenceError
from litestar import Litestar, Router
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, ControllerRouterHandler
from psycopg import Error as PsycopgError

from ...domain.errors import VoxledgerError
from ..chat import telegram
from . import api, errors
from .chat_edge import ChatEdge, Wake
from .freshness import PositionNotInLog, ProjectionsBehind
from .guards import bearer_token, telegram_secret
from .health import healthz, livez, readyz
from .lane import chat_lane
from .openapi import document
from .peers import Peers
from .request_log import request_logs
from .screening import Routes, screened, strict_body
from .settings import Settings
from .telegram import WEBHOOK_MAX_BODY, telegram_webhook
from .voice import voice_router
from .voice_workers import OtherWorkers
from .whatsapp import ROUTES as WHATSAPP_ROUTES

if TYPE_CHECKING:
    from ..services import Services

EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    VoxledgerError: errors.domain_error,
    HTTPException: errors.http_error,
    UnicodeDecodeError: errors.undecodable_body,
    errors.ProjectionsNotBuilt: errors.projections_not_built,
    ProjectionsBehind: errors.projections_behind,
    PositionNotInLog: errors.position_not_in_log,
    PersistenceError: errors.database_error,
    PsycopgError: errors.database_error,
    Exception: errors.unexpected_error,
}


def openapi() -> OpenAPIConfig:
    """The schema at /schema: its title, version, and the two ways to authenticate."""
    return OpenAPIConfig(
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
    )


def create_app(
    services: Services,
    settings: Settings,
    *,
    routes: Sequence[ControllerRouterHandler] = (),
    dependencies: Mapping[str, Provide] | None = None,
    lifespan: Sequence[Callable[[Litestar], AbstractAsyncContextManager[Any]]] = (),
    identity: telegram.BotIdentity | None = None,
    wake: Wake | None = None,
    peers: Peers | None = None,
) -> ASGIApp:
    """The ASGI application over the composition root's services: routes, authentication,
    size limit, errors, request logs. ``routes`` (routers or handlers, for instance an
    operator console) join the app's own, with ``dependencies`` beside the services;
    ``lifespan`` runs beside the app (the delivery worker); ``identity`` is the bot's on
    Telegram and ``wake`` tells the delivery worker that a conversation has mail; ``peers``
    are the other workers of several, each serving its own chats (`peers`) and holding its
    own calls (`voice_workers`)."""
    api_router = Router(
        path="/v1",
        route_handlers=api.ROUTES,
        guards=[bearer_token(settings.api_token)],
        security=[{"bearer": []}],
        tags=["api"],
    )
    webhook = Router(
        path="/",
        route_handlers=[telegram_webhook],
        guards=[telegram_secret(settings.telegram_secret)],
        # Telegram's own limit, not the API's: an update it sends must never get a 413.
        request_max_body_size=max(WEBHOOK_MAX_BODY, settings.max_body_bytes),
        exception_handlers={HTTPException: errors.refused_update},
    )
    # Checked by signature, on the raw body, in its handler.
    whatsapp = Router(path="/", route_handlers=WHATSAPP_ROUTES)
    bot = services.bot(settings.flow)
    identity = identity or telegram.BotIdentity()
    wake = wake or _nothing_to_wake
    edge = ChatEdge(services.async_engine, bot, services.store, identity, wake)
    app = Litestar(
        route_handlers=[
            webhook,
            whatsapp,
            livez,
            readyz,
            healthz,
            api_router,
            voice_router(settings),
            *routes,
        ],
        dependencies={
            "engine": _value(services.engine),
            "async_engine": _value(services.async_engine),
            "bot": _value(bot),
            "store": _value(services.store),
            "projections": _value(services.projections),
            "directory": _value(services.directory),
            "channels": _value(services.channels),
            "telegram_identity": _value(identity),
            "outbox_wake": _value(wake),
            "chat_edge": _value(edge),
            "live_streams": _value(services.live_streams),
            "clock": _value(services.clock),
            "settings": _value(settings),
            **(dependencies or {}),
        },
        request_max_body_size=settings.max_body_bytes,
        before_request=strict_body,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_config=openapi(),
        logging_config=None,  # structlog writes the request logs (request_log)
        lifespan=list(lifespan),
    )
    if peers is not None:  # a call is held by one worker; the others reach it
        OtherWorkers(peers, services.live_streams)
    document(app)  # the OpenAPI document as the server behaves
    routes = Routes.of(app)
    # The chat routes' usual requests skip the framework's request cycle (see `lane`).
    laned = chat_lane(
        app,
        edge,
        telegram_secret=settings.telegram_secret,
        api_token=settings.api_token,
        max_body_bytes=settings.max_body_bytes,
        exception_handlers=EXCEPTION_HANDLERS,
        peers=peers,
    )
    # Screened up to the largest body any route takes (Telegram's webhook takes more than the
    # API); past it, the route's own limit refuses the body (413).
    largest = max(WEBHOOK_MAX_BODY, settings.max_body_bytes)
    return request_logs(screened(laned, max_body_bytes=largest, routes=routes))


def _nothing_to_wake(conversation_id: Any = None) -> None:
    """No delivery worker runs beside this app."""


def _value(piece: Any) -> Provide:
    """A dependency that is one object for the app's whole life."""
    return Provide(lambda: piece, use_cache=True, sync_to_thread=False)
