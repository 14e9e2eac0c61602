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

With several workers (`peers`), a request the lane takes for a chat another worker owns is
handed to that worker once checked here (its credential, its body), and the owner's answer
relayed; what the owner declines is answered here by the app.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

import msgspec
import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ..chat import telegram
from .api import message_reply
from .bodies import MESSAGE_ID, NewMessage
from .chat_edge import ChatEdge
from .peers import DECLINED, MESSAGES_ROUTE, WEBHOOK_ROUTE, PeerAnswer, PeerRequest, Peers
from .telegram import WEBHOOK_MAX_BODY, answer_update

WEBHOOK = "/telegram/webhook"
MESSAGES = re.compile(r"/v1/conversations/([0-9a-fA-F-]{36})/messages")
IDEMPOTENCY_KEY = re.compile(MESSAGE_ID)

_UPDATE = msgspec.json.Decoder(telegram.Update, strict=True)
_MESSAGE = msgspec.json.Decoder(NewMessage, strict=True)
_ENCODER = msgspec.json.Encoder()
_JSON = (b"content-type", b"application/json")
_LOOKED_AT = frozenset(
    (b"content-type", b"x-telegram-bot-api-secret-token", b"authorization", b"idempotency-key")
)
Answer = Callable[[bytes], Awaitable[msgspec.Struct]]

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
    peers: Peers | None = None,
) -> ASGIApp:
    """``app`` with the webhook and the message route taken first by the lane (see above);
    ``exception_handlers`` are the app's, by exception class. With ``peers`` (one worker of
    several), a message for a chat another worker owns is answered by that worker
    (`peers`); this one answers what the others hand it."""
    secret = telegram_secret.encode() if telegram_secret else None
    bearer = api_token.encode() if api_token else None

    async def answered(answer: Answer, body: bytes) -> PeerAnswer:
        """The lane's answer as a status, headers and body (status 0: declined)."""
        try:
            reply = await answer(body)
        except _Declined:
            return DECLINED
        except Exception as error:  # answered as the app answers it
            return PeerAnswer(*_failure(exception_handlers, error))
        if isinstance(reply, PeerAnswer):
            return reply
        return PeerAnswer(200, [_JSON], _ENCODER.encode(reply))

    async def answer_peer(request: PeerRequest) -> PeerAnswer:
        """A request another worker took for a chat this one owns."""
        structlog.contextvars.clear_contextvars()
        if request.route == WEBHOOK_ROUTE:

            async def webhook(body: bytes) -> msgspec.Struct:
                return await answer_update(edge, _decoded(_UPDATE, body))

            answer = await answered(webhook, request.body)
        else:
            try:
                conversation_id = UUID(request.conversation_id)
            except (TypeError, ValueError):
                return DECLINED
            message = _message(conversation_id, request.idempotency_key)
            answer = await answered(message, request.body)
        return msgspec.structs.replace(answer, conversation_id=_conversation())

    if peers is not None:
        peers.answer_with(answer_peer, WEBHOOK_ROUTE, MESSAGES_ROUTE)

    def _message(conversation_id: UUID, idempotency: str | None) -> Answer:
        async def answer_message(body: bytes) -> msgspec.Struct:
            message = _decoded(_MESSAGE, body)
            return await message_reply(edge, conversation_id, message, idempotency)

        return answer_message

    async def handed_over(owner: int, request: PeerRequest) -> PeerAnswer | None:
        """The owner's answer (who answered, and the conversation, bound for this
        request's log line), or None if it cannot be reached now."""
        assert peers is not None
        answer = await peers.ask(owner, request)
        if answer is not None and answer.status:  # status 0: the app here answers it
            structlog.contextvars.bind_contextvars(served_by=owner)
            if answer.conversation_id is not None:
                structlog.contextvars.bind_contextvars(conversation_id=answer.conversation_id)
        return answer

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        taken = _taken(scope) if scope["type"] == "http" else None
        if taken is None:
            await app(scope, receive, send)
            return
        limit, answer = taken
        received: list[Message] = []
        body = await _body(receive, received, limit)
        if body is None:
            await app(scope, _replaying(received, receive), send)
            return
        reply = await answered(answer, body)
        if reply.status == 0:
            await app(scope, _replaying(received, receive), send)
            return
        await _respond(send, reply.status, reply.headers, reply.body)

    def _taken(scope: Scope) -> tuple[int, Answer] | None:
        """The body limit and the answer of a request the lane takes, else None."""
        if scope["method"] != "POST" or scope["query_string"]:
            return None
        headers = _headers(scope)
        if headers is None or not _is_json(headers.get(b"content-type")):
            return None
        path = scope["path"]
        if path == WEBHOOK:
            given = headers.get(b"x-telegram-bot-api-secret-token")
            if secret is None or given is None or not hmac.compare_digest(given, secret):
                return None

            async def answer_webhook(body: bytes) -> msgspec.Struct:
                update = _decoded(_UPDATE, body)
                chat = _chat_of(update) if peers is not None else None
                if chat is not None:
                    assert peers is not None
                    owner = peers.owner(chat)
                    if owner != peers.index:
                        request = PeerRequest(WEBHOOK_ROUTE, body)
                        relayed = await handed_over(owner, request)
                        if relayed is not None:
                            return relayed
                return await answer_update(edge, update)

            return max(WEBHOOK_MAX_BODY, max_body_bytes), answer_webhook
        matched = MESSAGES.fullmatch(path)
        if matched is None or bearer is None:
            return None
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), bearer):
            return None
        key = headers.get(b"idempotency-key")
        idempotency = key.decode("latin-1") if key is not None else None
        if idempotency is not None and not (
            len(idempotency) <= 128 and IDEMPOTENCY_KEY.match(idempotency)
        ):
            return None
        try:
            conversation_id = UUID(matched.group(1))
        except ValueError:
            return None

        answer_here = _message(conversation_id, idempotency)
        if peers is None:
            return max_body_bytes, answer_here
        owner = peers.owner(conversation_id.bytes)
        if owner == peers.index:
            return max_body_bytes, answer_here

        async def answer_message(body: bytes) -> msgspec.Struct:
            request = PeerRequest(MESSAGES_ROUTE, body, str(conversation_id), idempotency)
            relayed = await handed_over(owner, request)
            return relayed if relayed is not None else await answer_here(body)

        return max_body_bytes, answer_message

    return lane


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The headers the lane looks at, by (lower case) name; None if one came more than
    once (which one counts is the app's to say)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _LOOKED_AT:
            if name in found:
                return None
            found[name] = value
    return found


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
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


def _chat_of(update: telegram.Update) -> bytes | None:
    """The key that picks the worker for an update: its chat (None for an update without
    one, which records nothing: answered where it arrived)."""
    pressed = update.callback_query
    message = pressed.message if pressed is not None else update.message or update.edited_message
    return str(message.chat.id).encode() if message is not None else None


def _conversation() -> str | None:
    """The conversation the answer bound for the request log, if any."""
    return structlog.contextvars.get_contextvars().get("conversation_id")


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
