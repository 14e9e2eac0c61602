"""Who may call: Telegram with the webhook's secret, API clients with the bearer token. An
unset secret or token turns its routes off.

The guards are coroutines: Litestar runs a plain function guard in a worker thread, a hop
that cost about a tenth of a served message's CPU (`voxledger bench --http --profile`:
`authorize_connection`, `ThreadPoolExecutor.submit`) for a comparison of a few bytes."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from .settings import ENV_API_TOKEN, ENV_TELEGRAM_SECRET


def _matches(given: str | None, expected: str | None) -> bool:
    # Constant time: the comparison's duration must not reveal how much of a guess was right.
    if given is None or expected is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def telegram_secret(expected: str | None) -> Guard:
    """The webhook answers only calls carrying the secret set with setWebhook."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        given = connection.headers.get("x-telegram-bot-api-secret-token")
        if expected is None:
            raise PermissionDeniedException(f"the webhook is off: {ENV_TELEGRAM_SECRET} is not set")
        if not _matches(given, expected):
            raise PermissionDeniedException("missing or wrong X-Telegram-Bot-Api-Secret-Token")

    return guard


def bearer_token(expected: str | None) -> Guard:
    """The API answers only requests with `Authorization: Bearer <VOXLEDGER_API_TOKEN>`."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        require_bearer(connection, expected)

    return guard


def require_bearer(connection: ASGIConnection[Any, Any, Any, Any], expected: str | None) -> None:
    """Refuse a request or a WebSocket handshake without the API's bearer token: 403 when
    the API is off (no token set), 401 when the token is missing or wrong."""
    if expected is None:
        raise PermissionDeniedException(f"the API is off: {ENV_API_TOKEN} is not set")
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not _matches(token.strip(), expected):
        raise NotAuthorizedException(
            "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
