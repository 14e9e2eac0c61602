"""The chat lane: the two routes every chat message takes (Telegram's webhook and the message
API) answered without the framework's per-request work, when the request is the usual one.

Litestar's request cycle (routing, guards, the signature model, dependencies, the body read
twice, the response object) took a quarter of the served webhook's CPU, more than the
exchange itself (`voxledger bench --http --profile`: self time in ``litestar``). A request
takes the lane only when it is exactly what its route expects: POST, the route's credential,
a JSON content type, no query string, a body within the route's limit that decodes strictly
into the route's body type. Anything else (a refusal, a lenient number such as ``3.0``, an
Idempotency-Key the route refuses) goes on to the Litestar route with its body replayed,
so every refusal is answered, and documented, by one piece of code. What the lane does with
a request is what the Litestar handler does: both call the same function
(`telegram.answer_update`, `api.message_reply`), and a failure is answered by the app's own
exception handlers.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ..chat import telegram
from .api import message_reply
from .bodies import MESSAGE_ID, NewMessage
from .chat_edge import ChatEdge
from .telegram import WEBHOOK_MAX_BODY, answer_update

WEBHOOK = "/telegram/webhook"
MESSAGES = re.compile(r"/v1/conversations/([0-9a-fA-F-]{36})/messages")
IDEMPOTENCY_KEY = re.compile(MESSAGE_ID)

_UPDATE = msgspec.json.Decoder(telegram.Update, strict=True)
_MESSAGE = msgspec.json.Decoder(NewMessage, strict=True)
_ENCODER = msgspec.json.Encoder()
_JSON = (b"content-type", b"application/json")
_TWICE = b"\x00twice"  # a header sent more than once (no header value holds a NUL)

Handlers = Mapping[type[BaseException], Callable[[Any, Any], Any]]


class _Declined(Exception):
    """The request is not one the lane takes: the app answers it."""


def chat_lane(
    app: ASGIApp,
    edge: ChatEdge,
    *,
    telegram_secret: str | None,
    api_token: str | None,
    max_body_bytes: int,
    exception_handlers: Handlers,
) -> ASGIApp:
    """``app`` with the webhook and the message route taken first by the lane (see above);
    ``exception_handlers`` are the app's, by exception class."""
    secret = telegram_secret.encode() if telegram_secret else None
    bearer = api_token.encode() if api_token else None

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["query_string"]:
            await app(scope, receive, send)
            return
        path = scope["path"]
        answer: Callable[[bytes], Awaitable[msgspec.Struct]]
        if path == WEBHOOK:
            if secret is None or not _content_is_json(scope):
                await app(scope, receive, send)
                return
            given = _header(scope, b"x-telegram-bot-api-secret-token")
            if given in (None, _TWICE) or not hmac.compare_digest(given, secret):
                await app(scope, receive, send)
                return
            limit = max(WEBHOOK_MAX_BODY, max_body_bytes)

            async def answer(body: bytes) -> msgspec.Struct:
                update = _decoded(_UPDATE, body)
                return await answer_update(edge, update)

        else:
            matched = MESSAGES.fullmatch(path)
            if matched is None or bearer is None or not _content_is_json(scope):
                await app(scope, receive, send)
                return
            authorization = _header(scope, b"authorization")
            if authorization in (None, _TWICE):
                await app(scope, receive, send)
                return
            scheme, _, token = authorization.partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), bearer):
                await app(scope, receive, send)
                return
            key = _header(scope, b"idempotency-key")
            if key is _TWICE or (
                key is not None
                and not (len(key) <= 128 and IDEMPOTENCY_KEY.match(key.decode("latin-1")))
            ):
                await app(scope, receive, send)
                return
            try:
                conversation_id = UUID(matched.group(1))
            except ValueError:
                await app(scope, receive, send)
                return
            limit = max_body_bytes

            async def answer(body: bytes) -> msgspec.Struct:
                message = _decoded(_MESSAGE, body)
                idempotency = key.decode("latin-1") if key is not None else None
                return await message_reply(edge, conversation_id, message, idempotency)

        received: list[Message] = []
        body = await _body(receive, received, limit)
        if body is None:
            await app(scope, _replaying(received, receive), send)
            return
        try:
            reply = await answer(body)
        except _Declined:
            await app(scope, _replaying(received, receive), send)
            return
        except Exception as error:  # answered as the app answers it
            status, headers, content = _failure(exception_handlers, error)
            await _respond(send, status, headers, content)
            return
        await _respond(send, 200, [_JSON], _ENCODER.encode(reply))

    return lane


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The value of the header of this name (lower case), if any; `_TWICE` if it came
    more than once (which one counts is the app's to say)."""
    found = None
    for key, value in scope["headers"]:
        if key == name:
            if found is not None:
                return _TWICE
            found = value
    return found


def _content_is_json(scope: Scope) -> bool:
    content_type = _header(scope, b"content-type")
    if content_type is None or content_type is _TWICE:
        return False
    return content_type.partition(b";")[0].strip().lower() == b"application/json"


async def _body(receive: Receive, received: list[Message], limit: int) -> bytes | None:
    """The whole body, or None if it is not there in full within ``limit`` bytes (the
    client left, or sent more): the messages read so far are in ``received``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        received.append(message)
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _decoded(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # the app names what is wrong
        raise _Declined from None


def _replaying(received: list[Message], receive: Receive) -> Receive:
    """``receive`` as it was before the lane read from it."""
    pending = list(received)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def _failure(handlers: Handlers, error: Exception) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers and body the app's exception handler gives this error."""
    handler = next(handlers[cls] for cls in type(error).__mro__ if cls in handlers)
    response = handler(None, error)
    headers = [_JSON, *((k.lower().encode(), v.encode()) for k, v in response.headers.items())]
    return response.status_code, headers, _ENCODER.encode(response.content)


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
