"""The outbound Telegram Bot API client: the calls voxledger makes to api.telegram.org.

Every call is `POST /bot<token>/<method>` with a JSON body; the answer is
``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description": ...,
"parameters": {"retry_after": N}}``. Results are decoded into typed Structs; every failure
becomes one of the delivery errors (`RetryAfter`, `Transient`, `Rejected`), so a delivery
worker acts on any platform alike.

The token sits in the URL path, so it is kept out of everything that may be printed: the
client's repr, the errors it raises, and httpx's own request log lines.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
import msgspec

from .channels import TELEGRAM_API_URL
from .delivery_errors import Rejected, RetryAfter, Transient, transport_failure
from .telegram import InlineKeyboardMarkup, Update

DEFAULT_BASE_URL = TELEGRAM_API_URL
# Telegram's answers carry retry_after; this is only for a 429 that somehow lacks one.
DEFAULT_RETRY_AFTER = 5.0

T = TypeVar("T")

_TOKEN_IN_PATH = re.compile(r"/bot[^/\s]+")

# Buttons as the typed markup the bot builds, or as the Bot API's own JSON object.
Markup = InlineKeyboardMarkup | Mapping[str, Any]


class User(msgspec.Struct, frozen=True):
    """A Telegram user or bot; `get_me` answers with the bot's own."""

    id: int
    is_bot: bool
    first_name: str
    last_name: str | None = None
    username: str | None = None
    can_join_groups: bool | None = None
    can_read_all_group_messages: bool | None = None
    supports_inline_queries: bool | None = None


class Chat(msgspec.Struct, frozen=True):
    """The chat a sent message landed in."""

    id: int
    type: str
    title: str | None = None
    username: str | None = None
    first_name: str | None = None
    is_forum: bool = False


class Message(msgspec.Struct, frozen=True):
    """A message the bot sent or edited, as Telegram recorded it."""

    message_id: int
    date: int
    chat: Chat
    sender: User | None = msgspec.field(default=None, name="from")
    text: str | None = None
    message_thread_id: int | None = None
    edit_date: int | None = None


class ReplyParameters(msgspec.Struct, frozen=True, omit_defaults=True):
    """Which message a new message answers (Bot API `ReplyParameters`)."""

    message_id: int
    chat_id: int | str | None = None
    allow_sending_without_reply: bool | None = None


class WebhookInfo(msgspec.Struct, frozen=True):
    """Where Telegram delivers updates, and how that has gone lately."""

    url: str
    has_custom_certificate: bool
    pending_update_count: int
    ip_address: str | None = None
    last_error_date: int | None = None
    last_error_message: str | None = None
    max_connections: int | None = None
    allowed_updates: list[str] | None = None


class _Parameters(msgspec.Struct, frozen=True):
    retry_after: float | None = None
    migrate_to_chat_id: int | None = None


class _Answer(msgspec.Struct, frozen=True):
    ok: bool
    result: msgspec.Raw = msgspec.Raw(b"null")
    error_code: int | None = None
    description: str = ""
    parameters: _Parameters | None = None


class _UpdateId(msgspec.Struct, frozen=True):
    update_id: int


class TelegramBotApi:
    """An async client for one bot: typed results, delivery errors, the token never shown."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not token or "/" in token or any(ch.isspace() for ch in token):
            raise ValueError("a bot token is one non-empty path segment")
        self._path = f"/bot{token}/"
        self._read_timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            headers={"Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return f"TelegramBotApi(base_url={str(self._http.base_url)!r})"

    async def __aenter__(self) -> TelegramBotApi:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections this client holds."""
        await self._http.aclose()

    async def get_me(self) -> User:
        """The bot itself: a cheap check that the token works."""
        return await self._call("getMe", {}, User)

    async def send_message(
        self,
        chat_id: int | str,
        text: str,
        reply_markup: Markup | None = None,
        message_thread_id: int | None = None,
        reply_parameters: ReplyParameters | Mapping[str, Any] | None = None,
        parse_mode: str | None = None,
        disable_notification: bool | None = None,
    ) -> Message:
        """Send a text message (at most 4096 UTF-16 units: see `telegram_text.split_text`)."""
        params = {
            "chat_id": chat_id,
            "text": text,
            "reply_markup": reply_markup,
            "message_thread_id": message_thread_id,
            "reply_parameters": reply_parameters,
            "parse_mode": parse_mode,
            "disable_notification": disable_notification,
        }
        return await self._call("sendMessage", params, Message)

    async def edit_message_text(
        self,
        chat_id: int | str,
        message_id: int,
        text: str,
        reply_markup: Markup | None = None,
        parse_mode: str | None = None,
    ) -> Message:
        """Replace the text (and the buttons, if given) of a message the bot sent."""
        params = {
            "chat_id": chat_id,
            "message_id": message_id,
            "text": text,
            "reply_markup": reply_markup,
            "parse_mode": parse_mode,
        }
        return await self._call("editMessageText", params, Message)

    async def edit_message_reply_markup(
        self,
        chat_id: int | str,
        message_id: int,
        reply_markup: Markup | None = None,
    ) -> Message:
        """Replace a sent message's buttons; without ``reply_markup`` the buttons go away."""
        params = {"chat_id": chat_id, "message_id": message_id, "reply_markup": reply_markup}
        return await self._call("editMessageReplyMarkup", params, Message)

    async def delete_message(self, chat_id: int | str, message_id: int) -> bool:
        """Delete a message from the chat."""
        params = {"chat_id": chat_id, "message_id": message_id}
        return await self._call("deleteMessage", params, bool)

    async def answer_callback_query(
        self,
        callback_query_id: str,
        text: str | None = None,
        show_alert: bool | None = None,
        url: str | None = None,
        cache_time: int | None = None,
    ) -> bool:
        """Answer a button press (once): stops the button's spinner, shows ``text`` if given."""
        params = {
            "callback_query_id": callback_query_id,
            "text": text,
            "show_alert": show_alert,
            "url": url,
            "cache_time": cache_time,
        }
        return await self._call("answerCallbackQuery", params, bool)

    async def get_updates(
        self,
        offset: int | None = None,
        limit: int | None = None,
        timeout: int = 0,
        allowed_updates: Sequence[str] | None = None,
    ) -> list[Update]:
        """Updates from ``offset`` on (confirming every earlier one), waiting up to
        ``timeout`` seconds for the first. An update whose parts the bot cannot read comes
        back with only its ``update_id``, so that polling moves past it."""
        params = {
            "offset": offset,
            "limit": limit,
            "timeout": timeout,
            "allowed_updates": list(allowed_updates) if allowed_updates is not None else None,
        }
        # The server holds the request for up to `timeout` seconds before answering.
        patience = httpx.Timeout(
            self._read_timeout,
            connect=self._http.timeout.connect,
            read=timeout + self._read_timeout,
        )
        raws = await self._call("getUpdates", params, list[msgspec.Raw], timeout=patience)
        return [_update(raw) for raw in raws]

    async def set_webhook(
        self,
        url: str,
        secret_token: str | None = None,
        allowed_updates: Sequence[str] | None = None,
        drop_pending_updates: bool | None = None,
        max_connections: int | None = None,
    ) -> bool:
        """Have Telegram POST updates to ``url`` (https, port 443, 80, 88 or 8443), with
        ``secret_token`` in the X-Telegram-Bot-Api-Secret-Token header."""
        params = {
            "url": url,
            "secret_token": secret_token,
            "allowed_updates": list(allowed_updates) if allowed_updates is not None else None,
            "drop_pending_updates": drop_pending_updates,
            "max_connections": max_connections,
        }
        return await self._call("setWebhook", params, bool)

    async def delete_webhook(self, drop_pending_updates: bool | None = None) -> bool:
        """Stop webhook delivery, so that `get_updates` can be used."""
        params = {"drop_pending_updates": drop_pending_updates}
        return await self._call("deleteWebhook", params, bool)

    async def get_webhook_info(self) -> WebhookInfo:
        """The current webhook (an empty url when there is none)."""
        return await self._call("getWebhookInfo", {}, WebhookInfo)

    async def _call(
        self,
        method: str,
        params: dict[str, Any],
        result_type: type[T],
        *,
        timeout: httpx.Timeout | None = None,
    ) -> T:
        body = msgspec.json.encode(
            {
                k: dict(v) if isinstance(v, Mapping) else v
                for k, v in params.items()
                if v is not None
            }
        )
        extra = {} if timeout is None else {"timeout": timeout}
        try:
            response = await self._http.post(
                self._path + method,
                content=body,
                headers={"Content-Type": "application/json"},
                **extra,
            )
        except httpx.TransportError as exc:
            raise transport_failure(method, exc, _redact) from None
        return _result(method, response, result_type)


def _update(raw: msgspec.Raw) -> Update:
    try:
        return msgspec.json.decode(raw, type=Update)
    except msgspec.ValidationError:
        # Still confirmable: the next offset is computed from its update_id.
        return Update(update_id=msgspec.json.decode(raw, type=_UpdateId).update_id)


def _result(method: str, response: httpx.Response, result_type: type[T]) -> T:
    """The call's result, or the delivery error its answer means."""
    status = response.status_code
    try:
        answer = msgspec.json.decode(response.content, type=_Answer)
    except (msgspec.DecodeError, msgspec.ValidationError):
        answer = None
    code = answer.error_code if answer is not None and answer.error_code else status
    if code == 429 or status == 429:
        raise RetryAfter(_retry_after(answer, response), _describe(method, answer, response))
    if status >= 500 or code >= 500:
        raise Transient(_describe(method, answer, response), may_have_arrived=True)
    if answer is None:
        if 400 <= status < 500:
            raise Rejected(status, f"HTTP {status} {response.reason_phrase}")
        raise _unreadable(method, f"HTTP {status} with a body that is not a Bot API answer")
    if not answer.ok:
        if 400 <= code < 500:
            raise Rejected(code, _rejection_description(answer, status))
        raise _unreadable(method, f"ok=false with error_code {code}")
    if status != 200:
        raise _unreadable(method, f"ok=true with HTTP {status}")
    try:
        return msgspec.json.decode(answer.result, type=result_type)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _unreadable(method, f"unexpected result: {exc}") from None


def _unreadable(method: str, why: str) -> Transient:
    # Telegram answered something else than its protocol: a proxy, a half-deployed server.
    return Transient(f"{method}: malformed answer: {why}", may_have_arrived=True)


def _rejection_description(answer: _Answer, status: int) -> str:
    description = answer.description or f"HTTP {status}"
    if answer.parameters and answer.parameters.migrate_to_chat_id is not None:
        description += f" (migrated to chat {answer.parameters.migrate_to_chat_id})"
    return description


def _retry_after(answer: _Answer | None, response: httpx.Response) -> float:
    if answer is not None and answer.parameters and answer.parameters.retry_after is not None:
        return max(0.0, answer.parameters.retry_after)
    header = response.headers.get("Retry-After", "")
    try:
        seconds = float(header)
    except ValueError:
        return DEFAULT_RETRY_AFTER
    return max(0.0, seconds) if math.isfinite(seconds) else DEFAULT_RETRY_AFTER


def _describe(method: str, answer: _Answer | None, response: httpx.Response) -> str:
    if answer is not None and answer.description:
        return f"{method}: HTTP {response.status_code}: {answer.description}"
    return f"{method}: HTTP {response.status_code} {response.reason_phrase}"


def _redact(text: str) -> str:
    return _TOKEN_IN_PATH.sub("/bot<token>", text)


class _HideBotTokens(logging.Filter):
    """Rewrites httpx's "HTTP Request: POST https://.../bot<token>/..." lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _redact(str(arg)) if "/bot" in str(arg) else arg for arg in record.args
            )
        if "/bot" in str(record.msg):
            record.msg = _redact(str(record.msg))
        return True


def _hide_tokens_in_httpx_logs() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _HideBotTokens) for f in logger.filters):
        logger.addFilter(_HideBotTokens())


_hide_tokens_in_httpx_logs()
