"""A local Telegram Bot API server that enforces the API's documented rules and answers
with its errors, worded as api.telegram.org words them.

`POST` or `GET` `/bot<token>/<method>`, with parameters in the query string, a JSON body or
a form (urlencoded or multipart), as the real server takes them: every value is a string
(JSON values other than strings arrive as their JSON text), method names ignore case.
Time comes from an injectable clock (rate limits, message dates). Tests build the world
(chats, forum topics, blocked users), queue incoming updates, inject faults, and read back
every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import itertools
import json
import math
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fake_http import DropConnection, HttpRequest, HttpResponse, LocalHttpServer, ManualClock
from telegram_entities import EntityError, parse, units

DEFAULT_TOKEN = "7000000001:AAHfakeTokenForLocalTests_0123456789ab"
MAX_TEXT_UNITS = 4096
MAX_CALLBACK_DATA_BYTES = 64
MAX_CALLBACK_ANSWER_UNITS = 200
WEBHOOK_PORTS = (443, 80, 88, 8443)
LONG_POLL_MAX_TIMEOUT = 50
DEFAULT_UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
ALL_UPDATE_TYPES = DEFAULT_UPDATE_TYPES | {
    "chat_member",
    "message_reaction",
    "message_reaction_count",
}
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly the "
    "same as a current content and reply markup of the message"
)
QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"
GATEWAY_PAGE = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n<center><h1>{status} "
    "{phrase}</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
)


class TelegramError(Exception):
    """A Bot API error answer: HTTP status, description, optional retry_after."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


def bad_request(message: str) -> TelegramError:
    """A 400 worded as the Bot API words them: "Bad Request: " and the reason, its first
    letter lowered unless it is an upper-case code such as BUTTON_DATA_INVALID."""
    if len(message) >= 2 and (message[1] == "_" or message[1].isupper()):
        return TelegramError(400, f"Bad Request: {message}")
    return TelegramError(400, f"Bad Request: {message[:1].lower()}{message[1:]}")


@dataclass(frozen=True)
class Fault:
    """A failure a test makes the server answer instead of handling the call."""

    status: int
    description: str = ""
    retry_after: int | None = None
    drop: bool = False

    @classmethod
    def too_many_requests(cls, retry_after: int) -> Fault:
        """429 "Too Many Requests: retry after N" with parameters.retry_after."""
        return cls(429, f"Too Many Requests: retry after {retry_after}", retry_after)

    @classmethod
    def chat_not_found(cls) -> Fault:
        """400 "Bad Request: chat not found"."""
        return cls(400, "Bad Request: chat not found")

    @classmethod
    def blocked_by_user(cls) -> Fault:
        """403 "Forbidden: bot was blocked by the user"."""
        return cls(403, "Forbidden: bot was blocked by the user")

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """500 as a Bot API answer; 502, 503 or 504 as the front proxy's HTML page."""
        return cls(status, "Internal Server Error" if status == 500 else "")

    @classmethod
    def drop_connection(cls) -> Fault:
        """Close the connection without answering (the request may have been acted on)."""
        return cls(0, drop=True)


@dataclass(frozen=True)
class TelegramCall:
    """One request the server received: the method as named in the path, its parameters as
    sent (JSON values decoded; query and form values are strings), the fake clock's time,
    and the HTTP status answered (0 for a dropped connection)."""

    method: str
    params: dict[str, Any]
    at: float
    status: int

    @property
    def name(self) -> str:
        """The method name in lower case (Telegram ignores case)."""
        return self.method.lower()


@dataclass
class _Chat:
    id: int
    type: str
    title: str | None
    first_name: str | None
    username: str | None
    is_forum: bool
    topics: set[int]
    blocked: bool = False

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id}
        if self.type == "private":
            data["first_name"] = self.first_name or "User"
        else:
            data["title"] = self.title or "Group"
        if self.username:
            data["username"] = self.username
        data["type"] = self.type
        if self.is_forum:
            data["is_forum"] = True
        return data


class _Poll:
    def __init__(self) -> None:
        self.woken = asyncio.Event()
        self.superseded = False


class FakeTelegram:
    """The local Bot API server for one bot (``token``)."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        clock: Callable[[], float] | None = None,
        bot_username: str = "voxledger_test_bot",
        bot_first_name: str = "Voxledger",
        per_chat_burst: int = 3,
        per_chat_interval: float = 1.0,
        group_per_minute: int = 20,
        global_per_second: int = 30,
    ) -> None:
        self.token = token
        self.clock = clock or ManualClock()
        self.bot = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self.per_chat_burst = per_chat_burst
        self.per_chat_interval = per_chat_interval
        self.group_per_minute = group_per_minute
        self.global_per_second = global_per_second
        self._lock = threading.RLock()
        self._server = LocalHttpServer(self.handle)
        self._calls: list[TelegramCall] = []
        self._chats: dict[int, _Chat] = {}
        self._messages: dict[int, dict[int, dict[str, Any]]] = {}
        self._next_message_id: dict[int, int] = {}
        self._faults: dict[int | None, deque[Fault]] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(100_000_001)
        self._query_ids = itertools.count(4_400_000_000_000_000_001)
        self._open_queries: set[str] = set()
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self._allowed_updates = DEFAULT_UPDATE_TYPES
        self._poll: _Poll | None = None
        self._webhook: dict[str, Any] = {}
        self._next_set_webhook = -math.inf
        self._chat_buckets: dict[int, tuple[float, float]] = {}
        self._group_sends: dict[int, deque[float]] = {}
        self._all_sends: deque[float] = deque()
        self._methods: dict[str, Callable[[dict[str, str]], Any]] = {
            "getme": self._get_me,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletemessage": self._delete_message,
            "answercallbackquery": self._answer_callback_query,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeTelegram:
        """Serve on 127.0.0.1 on a free port."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and end the server's thread."""
        self._server.stop()

    @property
    def url(self) -> str:
        """The base URL to give a client instead of https://api.telegram.org."""
        return self._server.url

    # -- the world the bot lives in --------------------------------------------------------

    def add_chat(
        self,
        chat_id: int,
        *,
        type: str | None = None,
        title: str | None = None,
        first_name: str | None = None,
        username: str | None = None,
        is_forum: bool = False,
    ) -> None:
        """Make a chat known to the bot (unknown chats answer "chat not found"). The type
        follows the id's sign unless given: positive private, -100... supergroup, else group."""
        if type is None:
            type = "private" if chat_id > 0 else ("supergroup" if chat_id < -(10**12) else "group")
        if is_forum and type != "supergroup":
            raise ValueError("only a supergroup can be a forum")
        with self._lock:
            self._chats[chat_id] = _Chat(
                chat_id, type, title, first_name, username, is_forum, topics=set()
            )
            self._messages.setdefault(chat_id, {})

    def add_forum_topic(self, chat_id: int, message_thread_id: int) -> None:
        """Open a topic in a forum supergroup (topic 1 is the General topic, never named)."""
        with self._lock:
            chat = self._chats[chat_id]
            if not chat.is_forum:
                raise ValueError(f"chat {chat_id} is not a forum")
            chat.topics.add(message_thread_id)

    def block(self, chat_id: int, blocked: bool = True) -> None:
        """The user of a private chat blocks (or unblocks) the bot: sends answer 403."""
        with self._lock:
            self._chats[chat_id].blocked = blocked

    def fail_next(self, fault: Fault, *, chat_id: int | None = None, times: int = 1) -> None:
        """Answer the next ``times`` calls about ``chat_id`` (any call when None) with
        ``fault`` instead of handling them."""
        with self._lock:
            self._faults.setdefault(chat_id, deque()).extend([fault] * times)

    # -- incoming updates ------------------------------------------------------------------

    def queue_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (an update_id is given if missing); types outside
        the bot's allowed_updates are dropped, as Telegram drops them. Returns the update."""
        with self._lock:
            update = {"update_id": next(self._update_ids), **update}
            kinds = set(update) - {"update_id"}
            if kinds & self._allowed_updates:
                self._updates.append(update)
                self._updates.sort(key=lambda u: u["update_id"])
                self._wake_poll()
            return update

    def user_sends(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        first_name: str = "Ada",
        message_thread_id: int | None = None,
    ) -> dict[str, Any]:
        """A user writes in a known chat: the message is stored (so replies can quote it)
        and queued as an update, which is returned."""
        with self._lock:
            chat = self._known_chat(chat_id)
            sender = {"id": user_id or chat_id, "is_bot": False, "first_name": first_name}
            message = self._new_message(chat, sender, text, [], None, message_thread_id, None)
        return self.queue_update({"message": message})

    def user_presses(
        self, chat_id: int, message_id: int, data: str, *, user_id: int | None = None
    ) -> str:
        """A user presses a button under a message: the callback query is queued as an update
        and can be answered once. Returns its id."""
        with self._lock:
            message = self._messages[chat_id][message_id]
            query_id = str(next(self._query_ids))
            self._open_queries.add(query_id)
            query = {
                "id": query_id,
                "from": {"id": user_id or chat_id, "is_bot": False, "first_name": "Ada"},
                "message": message,
                "chat_instance": str(-abs(chat_id) * 7919),
                "data": data,
            }
        self.queue_update({"callback_query": query})
        return query_id

    def expect_callback_query(self, query_id: str) -> None:
        """Make a callback query id answerable (for updates a test built itself)."""
        with self._lock:
            self._open_queries.add(query_id)

    # -- what happened ---------------------------------------------------------------------

    @property
    def calls(self) -> list[TelegramCall]:
        """Every request received, oldest first."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[TelegramCall]:
        """The requests for one method (case-insensitive)."""
        return [call for call in self.calls if call.name == method.lower()]

    def messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The chat's messages as they stand now (edits applied, deletions gone)."""
        with self._lock:
            return [dict(m) for m in self._messages.get(chat_id, {}).values()]

    @property
    def long_polling(self) -> bool:
        """Whether a getUpdates call is waiting for updates right now."""
        with self._lock:
            return self._poll is not None

    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates queued and not yet confirmed by an offset."""
        with self._lock:
            return list(self._updates)

    # -- HTTP ------------------------------------------------------------------------------

    async def handle(self, request: HttpRequest) -> HttpResponse | DropConnection:
        """Answer one HTTP request as the Bot API would."""
        match = re.fullmatch(r"/bot([^/]*)/?(.*)", request.path)
        if match is None:
            return _error_response(TelegramError(404, "Not Found"))
        token, method = match.group(1), match.group(2)
        strings, typed = _arguments(request)
        method = method or strings.get("method", "")
        status = 0
        try:
            result = await self._dispatch(token, method, strings)
        except TelegramError as error:
            response: HttpResponse | DropConnection = _error_response(error)
        except _Dropped:
            response = DropConnection()
        else:
            value, description = result
            payload: dict[str, Any] = {"ok": True, "result": value}
            if description:
                payload["description"] = description
            response = HttpResponse(200, _json(payload))
        if isinstance(response, HttpResponse):
            status = response.status
        with self._lock:
            self._calls.append(TelegramCall(method, typed, self.clock(), status))
        return response

    async def _dispatch(self, token: str, method: str, args: dict[str, str]) -> tuple[Any, str]:
        if token != self.token:
            raise TelegramError(401, "Unauthorized")
        name = method.lower()
        if name != "getupdates" and name not in self._methods:
            raise TelegramError(404, "Not Found")
        fault = self._take_fault(args.get("chat_id", ""))
        if fault is not None:
            if fault.drop:
                raise _Dropped
            raise TelegramError(fault.status, fault.description, fault.retry_after)
        if name == "getupdates":
            return await self._get_updates(args), ""
        with self._lock:
            answer = self._methods[name](args)
        return answer if isinstance(answer, tuple) else (answer, "")

    def _take_fault(self, chat_arg: str) -> Fault | None:
        with self._lock:
            for key in (_to_int(chat_arg) if chat_arg else None, None):
                queue = self._faults.get(key)
                if queue:
                    return queue.popleft()
        return None

    # -- methods ---------------------------------------------------------------------------

    def _get_me(self, args: dict[str, str]) -> dict[str, Any]:
        return {
            **self.bot,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _send_message(self, args: dict[str, str]) -> dict[str, Any]:
        text, entities = _message_text(args)
        reply_to = _reply_parameters(args)
        markup = _reply_markup(args.get("reply_markup", ""))
        chat = self._writable_chat(args.get("chat_id", ""))
        thread_id = self._thread(chat, args.get("message_thread_id", ""))
        replied = None
        if reply_to is not None:
            message_id, allow_without = reply_to
            replied = self._messages[chat.id].get(message_id)
            if replied is None and not allow_without:
                raise bad_request("message to be replied not found")
            if replied is not None and thread_id is None:
                thread_id = replied.get("message_thread_id")
        if units(text) > MAX_TEXT_UNITS:
            raise bad_request("message is too long")
        _check_buttons(markup)
        self._admit(chat)
        return self._new_message(chat, self.bot, text, entities, markup, thread_id, replied)

    def _edit_message_text(self, args: dict[str, str]) -> dict[str, Any]:
        text, entities = _message_text(args)
        message = self._message_to_edit(args)
        markup = _reply_markup(args.get("reply_markup", ""))
        if units(text) > MAX_TEXT_UNITS:
            raise bad_request("message is too long")
        _check_buttons(markup)
        unchanged = (
            message.get("text") == text
            and message.get("entities", []) == entities
            and message.get("reply_markup") == markup
        )
        if unchanged:
            raise bad_request(NOT_MODIFIED)
        message["text"] = text
        _set_or_drop(message, "entities", entities or None)
        _set_or_drop(message, "reply_markup", markup)
        message["edit_date"] = int(self.clock())
        return dict(message)

    def _edit_message_reply_markup(self, args: dict[str, str]) -> dict[str, Any]:
        message = self._message_to_edit(args)
        markup = _reply_markup(args.get("reply_markup", ""))
        _check_buttons(markup)
        if message.get("reply_markup") == markup:
            raise bad_request(NOT_MODIFIED)
        _set_or_drop(message, "reply_markup", markup)
        message["edit_date"] = int(self.clock())
        return dict(message)

    def _delete_message(self, args: dict[str, str]) -> bool:
        if not args.get("chat_id"):
            raise bad_request("Chat identifier is not specified")
        message_id = _to_int(args.get("message_id", ""))
        if message_id <= 0:
            raise bad_request("Message identifier is not specified")
        chat = self._writable_chat(args["chat_id"])
        if self._messages[chat.id].pop(message_id, None) is None:
            raise bad_request("message to delete not found")
        return True

    def _answer_callback_query(self, args: dict[str, str]) -> bool:
        query_id = args.get("callback_query_id", "")
        text = args.get("text", "")
        if units(text) > MAX_CALLBACK_ANSWER_UNITS:
            raise bad_request("MESSAGE_TOO_LONG")
        if query_id not in self._open_queries:
            raise bad_request(QUERY_INVALID)
        self._open_queries.discard(query_id)
        self.callback_answers[query_id] = {
            "text": text,
            "show_alert": _to_bool(args.get("show_alert", "")),
            "url": args.get("url", ""),
        }
        return True

    async def _get_updates(self, args: dict[str, str]) -> list[dict[str, Any]]:
        with self._lock:
            if self._webhook:
                raise TelegramError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use "
                    "deleteWebhook to delete the webhook first",
                )
            offset = _to_int(args.get("offset", ""))
            limit = min(max(_to_int(args.get("limit", "")) or 100, 1), 100)
            timeout = min(max(_to_int(args.get("timeout", "")), 0), LONG_POLL_MAX_TIMEOUT)
            self._set_allowed_updates(args.get("allowed_updates", ""))
            self._confirm(offset)
            ready = self._updates[:limit]
            if ready or timeout == 0:
                return ready
            if self._poll is not None:
                self._poll.superseded = True
                self._poll.woken.set()
            poll = self._poll = _Poll()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(poll.woken.wait(), timeout)
        with self._lock:
            if self._poll is poll:
                self._poll = None
            if poll.superseded:
                raise TelegramError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one "
                    "bot instance is running",
                )
            return self._updates[:limit]

    def _set_webhook(self, args: dict[str, str]) -> tuple[bool, str]:
        url = args.get("url", "")
        if not url:
            return self._delete_webhook(args)
        now = self.clock()
        if now < self._next_set_webhook:
            raise TelegramError(429, "Too Many Requests: retry after 1", 1)
        self._next_set_webhook = now + 1
        secret = args.get("secret_token", "")
        max_connections = min(max(_to_int(args.get("max_connections", "")) or 40, 1), 100)
        wanted = {
            "url": url,
            "secret_token": secret,
            "max_connections": max_connections,
        }
        drop = _to_bool(args.get("drop_pending_updates", ""))
        if self._webhook and {k: self._webhook[k] for k in wanted} == wanted and not drop:
            self._set_allowed_updates(args.get("allowed_updates", ""))
            return True, "Webhook is already set"
        parts = urlsplit(url if "://" in url else f"https://{url}")
        try:
            port = parts.port
        except ValueError:
            raise bad_request("invalid webhook URL specified") from None
        if not parts.hostname or parts.scheme not in ("http", "https"):
            raise bad_request("invalid webhook URL specified")
        if len(secret) > 256:
            raise bad_request("secret token is too long")
        if not re.fullmatch(r"[A-Za-z0-9_-]*", secret):
            raise bad_request("secret token contains unallowed characters")
        if parts.scheme != "https":
            raise bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        if (port or 443) not in WEBHOOK_PORTS:
            raise bad_request(
                "bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443"
            )
        if drop:
            self._updates.clear()
        self._set_allowed_updates(args.get("allowed_updates", ""))
        self._webhook = wanted
        if self._poll is not None:
            self._poll.woken.set()
        return True, "Webhook was set"

    def _delete_webhook(self, args: dict[str, str]) -> tuple[bool, str]:
        if _to_bool(args.get("drop_pending_updates", "")):
            self._updates.clear()
        if not self._webhook:
            return True, "Webhook is already deleted"
        self._webhook = {}
        return True, "Webhook was deleted"

    def _get_webhook_info(self, args: dict[str, str]) -> dict[str, Any]:
        info: dict[str, Any] = {
            "url": self._webhook.get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self._webhook:
            info["max_connections"] = self._webhook["max_connections"]
            info["ip_address"] = "127.0.0.1"
        if self._allowed_updates != DEFAULT_UPDATE_TYPES:
            info["allowed_updates"] = sorted(self._allowed_updates)
        return info

    # -- rules -----------------------------------------------------------------------------

    def _known_chat(self, chat_id: int) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            raise ValueError(f"chat {chat_id} is unknown: add_chat() it first")
        return chat

    def _writable_chat(self, chat_arg: str) -> _Chat:
        if not chat_arg:
            raise bad_request("chat_id is empty")
        if chat_arg.startswith("@"):
            chat = next((c for c in self._chats.values() if f"@{c.username}" == chat_arg), None)
        else:
            chat = self._chats.get(_to_int(chat_arg))
        if chat is None:
            raise bad_request("chat not found")
        if chat.blocked:
            raise TelegramError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _thread(self, chat: _Chat, thread_arg: str) -> int | None:
        thread_id = _to_int(thread_arg)
        if thread_id <= 0:
            return None
        # Only forum topics take messages; the General topic is addressed by no thread id.
        if not chat.is_forum or thread_id == 1 or thread_id not in chat.topics:
            raise bad_request("message thread not found")
        return thread_id

    def _message_to_edit(self, args: dict[str, str]) -> dict[str, Any]:
        message_id = _to_int(args.get("message_id", ""))
        if not args.get("chat_id") and message_id <= 0:
            if not args.get("inline_message_id"):
                raise bad_request("Message identifier is not specified")
            raise bad_request("MESSAGE_ID_INVALID")
        chat = self._writable_chat(args.get("chat_id", ""))
        message = self._messages[chat.id].get(message_id)
        if message is None:
            raise bad_request("message to edit not found")
        if message["from"]["id"] != self.bot["id"]:
            raise bad_request("message can't be edited")
        return message

    def _admit(self, chat: _Chat) -> None:
        """Flood control: a per-chat bucket, a per-group minute and a global second."""
        now = self.clock()
        wait = 0.0
        while self._all_sends and self._all_sends[0] <= now - 1.0:
            self._all_sends.popleft()
        if len(self._all_sends) >= self.global_per_second:
            wait = self._all_sends[0] + 1.0 - now
        tokens, last = self._chat_buckets.get(chat.id, (float(self.per_chat_burst), now))
        tokens = min(float(self.per_chat_burst), tokens + (now - last) / self.per_chat_interval)
        if tokens < 1.0:
            wait = max(wait, (1.0 - tokens) * self.per_chat_interval)
        group = self._group_sends.setdefault(chat.id, deque())
        if chat.type != "private":
            while group and group[0] <= now - 60.0:
                group.popleft()
            if len(group) >= self.group_per_minute:
                wait = max(wait, group[0] + 60.0 - now)
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            raise TelegramError(429, f"Too Many Requests: retry after {retry_after}", retry_after)
        self._all_sends.append(now)
        self._chat_buckets[chat.id] = (tokens - 1.0, now)
        if chat.type != "private":
            group.append(now)

    def _new_message(
        self,
        chat: _Chat,
        sender: dict[str, Any],
        text: str,
        entities: list[dict[str, Any]],
        markup: dict[str, Any] | None,
        thread_id: int | None,
        replied: dict[str, Any] | None,
    ) -> dict[str, Any]:
        message_id = self._next_message_id.get(chat.id, 1)
        self._next_message_id[chat.id] = message_id + 1
        message: dict[str, Any] = {"message_id": message_id}
        if thread_id is not None:
            message["message_thread_id"] = thread_id
        message |= {"from": sender, "chat": chat.json(), "date": int(self.clock())}
        if thread_id is not None:
            message["is_topic_message"] = True
        if replied is not None:
            message["reply_to_message"] = {
                k: v for k, v in replied.items() if k != "reply_to_message"
            }
        message["text"] = text
        if entities:
            message["entities"] = entities
        if markup is not None:
            message["reply_markup"] = markup
        self._messages[chat.id][message_id] = message
        return dict(message)

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            del self._updates[: max(0, len(self._updates) + offset)]
        elif offset > 0:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

    def _set_allowed_updates(self, raw: str) -> None:
        if not raw:
            return
        try:
            names = json.loads(raw)
        except ValueError:
            return
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return
        chosen = {n.lower() for n in names} & ALL_UPDATE_TYPES
        self._allowed_updates = frozenset(chosen) or DEFAULT_UPDATE_TYPES

    def _wake_poll(self) -> None:
        if self._poll is not None:
            self._server.loop.call_soon_threadsafe(self._poll.woken.set)


class _Dropped(Exception):
    pass


def _arguments(request: HttpRequest) -> tuple[dict[str, str], dict[str, Any]]:
    """The call's parameters as the server reads them (strings) and as they were sent."""
    strings: dict[str, str] = {}
    typed: dict[str, Any] = {}
    pairs: list[tuple[str, Any]] = list(request.query)
    content_type = request.header("content-type").lower()
    if request.body:
        if "application/x-www-form-urlencoded" in content_type:
            pairs += parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        elif "multipart/form-data" in content_type:
            pairs += _multipart(request.body, request.header("content-type"))
        else:
            # The real server reads any other body as a JSON object.
            try:
                decoded = json.loads(request.body)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                pairs += list(decoded.items())
    for key, value in pairs:
        typed[key] = value
        if isinstance(value, str):
            strings[key] = value
        elif value is not None:
            strings[key] = json.dumps(value, ensure_ascii=False)
    return strings, typed


def _multipart(body: bytes, content_type: str) -> list[tuple[str, str]]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True) or b""
            fields.append((str(name), payload.decode("utf-8", "replace")))
    return fields


def _message_text(args: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    raw = args.get("text", "")
    if not raw:
        raise bad_request("Message text is empty")
    if len(raw.encode("utf-8")) > 1 << 15:
        raise bad_request("Text is too long")
    mode = args.get("parse_mode", "")
    entities: list[dict[str, Any]] = []
    if mode and mode.lower() != "none":
        try:
            raw, entities = parse(raw, mode)
        except LookupError:
            raise bad_request("Unsupported parse_mode") from None
        except EntityError as error:
            raise bad_request(f"Can't parse entities: {error}") from None
    text = raw.strip()
    if not text:
        raise bad_request("Message text is empty")
    if text != raw:
        shift = units(raw) - units(raw.lstrip())
        entities = _trimmed(entities, shift, units(text))
    return text, entities


def _trimmed(entities: list[dict[str, Any]], shift: int, length: int) -> list[dict[str, Any]]:
    kept = []
    for entity in entities:
        start = max(0, entity["offset"] - shift)
        end = min(length, entity["offset"] + entity["length"] - shift)
        if end > start:
            kept.append({**entity, "offset": start, "length": end - start})
    return kept


def _reply_parameters(args: dict[str, str]) -> tuple[int, bool] | None:
    raw = args.get("reply_parameters")
    if raw is None:
        message_id = _to_int(args.get("reply_to_message_id", ""))
        if message_id <= 0:
            return None
        return message_id, _to_bool(args.get("allow_sending_without_reply", ""))
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise bad_request("Can't parse reply parameters JSON object") from None
    if not isinstance(value, dict):
        raise bad_request("Object expected as reply parameters")
    if not value:
        return None
    if "message_id" not in value:
        raise bad_request('Can\'t find field "message_id"')
    if not isinstance(value["message_id"], int) or isinstance(value["message_id"], bool):
        raise bad_request('Field "message_id" must be of type Number')
    return value["message_id"], value.get("allow_sending_without_reply") is True


def _reply_markup(raw: str) -> dict[str, Any] | None:
    """The markup as Telegram echoes it, or its parse error."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise bad_request("Can't parse reply keyboard markup JSON object") from None
    if not isinstance(value, dict):
        raise bad_request("Object expected as reply markup")
    if "inline_keyboard" not in value:
        return value if value else None
    rows = value["inline_keyboard"]
    if not isinstance(rows, list):
        raise bad_request('Field "inline_keyboard" must be of type Array')
    echoed = []
    for row in rows:
        if not isinstance(row, list):
            raise bad_request(
                'Field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
            )
        echoed.append([_inline_button(button) for button in row])
    return {"inline_keyboard": echoed} if any(echoed) else None


_BUTTON_KINDS = (
    "url",
    "callback_data",
    "callback_game",
    "pay",
    "switch_inline_query",
    "switch_inline_query_chosen_chat",
    "switch_inline_query_current_chat",
    "login_url",
    "web_app",
    "copy_text",
)


def _inline_button(button: Any) -> dict[str, Any]:
    def fail(reason: str) -> TelegramError:
        return bad_request(f"Can't parse inline keyboard button: {reason}")

    if not isinstance(button, dict):
        raise fail("InlineKeyboardButton must be an Object")
    if "text" not in button:
        raise fail('Can\'t find field "text"')
    text = button["text"]
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise fail('Field "text" must be of type String')
    for kind in ("url", "callback_data"):
        value = button.get(kind)
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int)):
            raise fail(f'Field "{kind}" must be of type String')
    for kind in _BUTTON_KINDS:
        value = button.get(kind)
        if kind in ("url", "callback_data") and value in (None, ""):
            continue
        if kind in button:
            return {"text": str(text), kind: str(value) if kind == "callback_data" else value}
    raise fail("Text buttons are unallowed in the inline keyboard")


def _check_buttons(markup: dict[str, Any] | None) -> None:
    """Telegram's own checks of button contents, made when the message is sent."""
    if not markup or "inline_keyboard" not in markup:
        return
    for row in markup["inline_keyboard"]:
        for button in row:
            data = button.get("callback_data")
            if data is not None and len(data.encode("utf-8")) > MAX_CALLBACK_DATA_BYTES:
                raise bad_request("BUTTON_DATA_INVALID")
            if not button["text"]:
                raise bad_request("BUTTON_TEXT_INVALID")


def _set_or_drop(message: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        message.pop(key, None)
    else:
        message[key] = value


def _to_int(value: str) -> int:
    """The leading integer of a string, 0 if none, as the real server reads numbers."""
    match = re.match(r"\s*([+-]?\d+)", value)
    return int(match.group(1)) if match else 0


def _to_bool(value: str) -> bool:
    return value.strip().lower() in ("true", "yes", "1")


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _error_response(error: TelegramError) -> HttpResponse:
    if error.status in (502, 503, 504):
        # These come from the front proxy, not the Bot API: an HTML page, not JSON.
        phrase = HTTPStatus(error.status).phrase
        page = GATEWAY_PAGE.format(status=error.status, phrase=phrase).encode()
        return HttpResponse(error.status, page, "text/html")
    payload: dict[str, Any] = {
        "ok": False,
        "error_code": error.status,
        "description": error.description,
    }
    headers = {}
    if error.retry_after is not None:
        payload["parameters"] = {"retry_after": error.retry_after}
        headers["Retry-After"] = str(error.retry_after)
    return HttpResponse(error.status, _json(payload), headers=headers)
