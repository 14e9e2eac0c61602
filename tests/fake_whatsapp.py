"""A local WhatsApp Cloud API (Graph API) server that enforces the documented rules of the
messages endpoint, and a builder for the webhooks WhatsApp POSTs to a business.

`POST /{version}/{phone_number_id}/messages` with `Authorization: Bearer <token>` and a JSON
body: text, interactive (reply buttons, list), template, and mark-as-read. The 24-hour
customer-service window is kept per customer from the inbound messages the webhook builder
makes; the throughput and pair rate limits count on an injectable clock. Errors have Graph's
shape and codes. The fake knows no media, reactions, locations or contacts: such a message
type is answered 131051 (unsupported message type).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fake_http import DropConnection, HttpRequest, HttpResponse, LocalHttpServer, ManualClock

DEFAULT_TOKEN = "EAAGfakeAccessTokenForLocalTests0123456789"
DEFAULT_PHONE_NUMBER_ID = "106540352242922"
DEFAULT_DISPLAY_NUMBER = "15550783881"
DEFAULT_WABA_ID = "102290129340398"
SERVICE_WINDOW = 24 * 60 * 60
ERROR_DOCS = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"


class GraphError(Exception):
    """A Graph error answer."""

    def __init__(
        self,
        http_status: int,
        code: int,
        message: str,
        details: str | None = None,
        *,
        type: str = "OAuthException",
        subcode: int | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.details = details
        self.type = type
        self.subcode = subcode

    def body(self, trace_id: str) -> dict[str, Any]:
        """The error as Graph sends it."""
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.details is not None:
            error["error_data"] = {"messaging_product": "whatsapp", "details": self.details}
        error["fbtrace_id"] = trace_id
        return {"error": error}


def invalid_parameter(details: str) -> GraphError:
    """(#100) for a missing, misspelled or mistyped parameter."""
    return GraphError(400, 100, "(#100) Invalid parameter", details)


def invalid_value(details: str) -> GraphError:
    """(#131009) for a parameter whose value breaks a documented limit."""
    return GraphError(400, 131009, "(#131009) Parameter value is not valid", details)


@dataclass(frozen=True)
class GraphFault:
    """A failure a test makes the server answer instead of handling the call."""

    error: GraphError | None = None
    http_status: int = 0
    drop: bool = False

    @classmethod
    def access_token_expired(cls) -> GraphFault:
        """190, HTTP 401: the access token expired or was revoked."""
        return cls(
            GraphError(
                401,
                190,
                "Error validating access token: Session has expired.",
                subcode=463,
            )
        )

    @classmethod
    def throughput_limit(cls) -> GraphFault:
        """130429: the number's message throughput is reached."""
        return cls(_throughput_error())

    @classmethod
    def pair_rate_limit(cls) -> GraphFault:
        """131056: too many messages to one customer in a short time."""
        return cls(_pair_error())

    @classmethod
    def undeliverable(cls) -> GraphFault:
        """131026: the message cannot be delivered to this customer."""
        return cls(
            GraphError(
                400,
                131026,
                "(#131026) Message Undeliverable.",
                "Message failed to send because the recipient phone number is not a WhatsApp "
                "phone number, or has not accepted the latest Terms of Service, or uses an old "
                "WhatsApp version.",
            )
        )

    @classmethod
    def generic(cls) -> GraphFault:
        """131000, HTTP 500: something went wrong on Meta's side."""
        return cls(
            GraphError(
                500,
                131000,
                "(#131000) Something went wrong",
                "Message failed to send due to an unknown error.",
            )
        )

    @classmethod
    def gateway(cls, status: int = 502) -> GraphFault:
        """An answer from the front proxy (502, 503, 504) with no Graph error in it."""
        return cls(http_status=status)

    @classmethod
    def drop_connection(cls) -> GraphFault:
        """Close the connection without answering (the message may have gone out)."""
        return cls(drop=True)


@dataclass(frozen=True)
class GraphCall:
    """One request received: the path, the body as sent (None if not JSON), whether the
    bearer token was right, the fake clock's time and the HTTP status answered (0 when the
    connection was dropped)."""

    method: str
    path: str
    body: Any
    authorized: bool
    at: float
    status: int


class FakeWhatsApp:
    """The local Cloud API for one business phone number."""

    def __init__(
        self,
        access_token: str = DEFAULT_TOKEN,
        phone_number_id: str = DEFAULT_PHONE_NUMBER_ID,
        *,
        display_phone_number: str = DEFAULT_DISPLAY_NUMBER,
        waba_id: str = DEFAULT_WABA_ID,
        clock: Callable[[], float] | None = None,
        throughput_per_second: int = 80,
        pair_burst: int = 45,
        pair_interval: float = 6.0,
    ) -> None:
        self.access_token = access_token
        self.phone_number_id = phone_number_id
        self.display_phone_number = display_phone_number
        self.waba_id = waba_id
        self.clock = clock or ManualClock()
        self.throughput_per_second = throughput_per_second
        self.pair_burst = pair_burst
        self.pair_interval = pair_interval
        self.templates: dict[str, set[str]] = {"hello_world": {"en_US"}}
        self.webhooks = WebhookBuilder(self)
        self._lock = threading.RLock()
        self._server = LocalHttpServer(self.handle)
        self._calls: list[GraphCall] = []
        self._last_inbound: dict[str, float] = {}
        self._inbound_ids: set[str] = set()
        self._sent: dict[str, dict[str, Any]] = {}
        self._read: list[str] = []
        self._faults: dict[str | None, deque[GraphFault]] = {}
        self._recent_sends: deque[float] = deque()
        self._pairs: dict[str, tuple[float, float]] = {}
        self._ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeWhatsApp:
        """Serve on 127.0.0.1 on a free port."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and end the server's thread."""
        self._server.stop()

    @property
    def url(self) -> str:
        """The base URL to give a client instead of https://graph.facebook.com."""
        return self._server.url

    # -- controls --------------------------------------------------------------------------

    def add_template(self, name: str, *languages: str) -> None:
        """Make an approved template known (hello_world/en_US is there from the start)."""
        with self._lock:
            self.templates.setdefault(name, set()).update(languages)

    def customer_wrote(self, wa_id: str, at: float | None = None) -> None:
        """Record an inbound message time (the webhook builder calls this for each one)."""
        with self._lock:
            self._last_inbound[_digits(wa_id)] = self.clock() if at is None else at

    def fail_next(self, fault: GraphFault, *, to: str | None = None, times: int = 1) -> None:
        """Answer the next ``times`` calls for recipient ``to`` (any call when None) with
        ``fault`` instead of handling them."""
        key = _digits(to) if to is not None else None
        with self._lock:
            self._faults.setdefault(key, deque()).extend([fault] * times)

    # -- what happened ---------------------------------------------------------------------

    @property
    def calls(self) -> list[GraphCall]:
        """Every request received, oldest first."""
        with self._lock:
            return list(self._calls)

    def sent(self, to: str | None = None) -> list[dict[str, Any]]:
        """Accepted messages (each body with its "id" added), to one customer or to all."""
        with self._lock:
            messages = list(self._sent.values())
        if to is None:
            return messages
        return [m for m in messages if _digits(m["to"]) == _digits(to)]

    @property
    def read_marks(self) -> list[str]:
        """Inbound message ids marked as read, in order."""
        with self._lock:
            return list(self._read)

    # -- HTTP ------------------------------------------------------------------------------

    async def handle(self, request: HttpRequest) -> HttpResponse | DropConnection:
        """Answer one request as the Graph API would."""
        try:
            body: Any = json.loads(request.body) if request.body else None
        except ValueError:
            body = None
        authorized = request.header("authorization") == f"Bearer {self.access_token}"
        try:
            answer: HttpResponse | DropConnection = HttpResponse(
                200, _json(self._answer(request, body))
            )
        except GraphError as error:
            trace = f"A{next(self._ids):010d}fakeTrace"
            answer = HttpResponse(error.http_status, _json(error.body(trace)))
        except _Fault as fault:
            answer = fault.response
        status = answer.status if isinstance(answer, HttpResponse) else 0
        with self._lock:
            self._calls.append(
                GraphCall(request.method, request.path, body, authorized, self.clock(), status)
            )
        return answer

    def _answer(self, request: HttpRequest, body: Any) -> dict[str, Any]:
        match = re.fullmatch(r"/(v\d+\.\d+)/([^/]+)/messages", request.path)
        if match is None:
            tail = re.sub(r"^/v\d+\.\d+", "", request.path)
            raise GraphError(400, 2500, f"Unknown path components: {tail}")
        if request.method != "POST":
            raise GraphError(
                400, 100, "(#100) Unsupported get request.", type="GraphMethodException"
            )
        auth = request.header("authorization")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise GraphError(
                401,
                190,
                "An active access token must be used to query information about the current user.",
            )
        if auth[7:] != self.access_token:
            raise GraphError(401, 190, "Invalid OAuth access token - Cannot parse access token")
        if match.group(2) != self.phone_number_id:
            raise GraphError(
                400,
                100,
                f"Unsupported post request. Object with ID '{match.group(2)}' does not exist, "
                "cannot be loaded due to missing permissions, or does not support this "
                "operation.",
                type="GraphMethodException",
                subcode=33,
            )
        if not isinstance(body, dict):
            raise invalid_parameter("The request body must be a JSON object.")
        recipient = body.get("to") if isinstance(body.get("to"), str) else None
        self._apply_fault(_digits(recipient) if recipient else None)
        if body.get("messaging_product") is None:
            raise invalid_parameter("The parameter messaging_product is required.")
        if body["messaging_product"] != "whatsapp":
            raise invalid_parameter(
                f'Param messaging_product must be one of {{WHATSAPP}} - got "'
                f'{body["messaging_product"]}".'
            )
        with self._lock:
            if "status" in body:
                return self._mark_read(body)
            return self._send(body)

    def _apply_fault(self, recipient: str | None) -> None:
        with self._lock:
            for key in (recipient, None):
                queue = self._faults.get(key)
                if queue:
                    fault = queue.popleft()
                    break
            else:
                return
        if fault.drop:
            raise _Fault(DropConnection())
        if fault.error is not None:
            raise fault.error
        raise _Fault(HttpResponse(fault.http_status, b"Bad Gateway", "text/html"))

    def _mark_read(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["status"] != "read":
            raise invalid_parameter('Param status must be "read".')
        message_id = body.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise invalid_parameter("The parameter message_id is required.")
        if message_id not in self._inbound_ids:
            raise invalid_parameter(f"Invalid message_id: {message_id} is not an inbound message.")
        self._read.append(message_id)
        return {"success": True}

    def _send(self, body: dict[str, Any]) -> dict[str, Any]:
        recipient_type = body.get("recipient_type", "individual")
        if recipient_type != "individual":
            raise invalid_parameter(
                f'Param recipient_type must be one of {{INDIVIDUAL}} - got "{recipient_type}".'
            )
        to = body.get("to")
        if to is None:
            raise invalid_parameter("The parameter to is required.")
        if not isinstance(to, str) or not re.fullmatch(r"\+?[0-9][0-9 ()-]{4,20}", to):
            raise invalid_parameter(f"Param to must be a phone number - got {json.dumps(to)}.")
        wa_id = _digits(to)
        kind = body.get("type", "text")
        if kind == "text":
            _check_text(body)
        elif kind == "interactive":
            _check_interactive(body)
        elif kind == "template":
            self._check_template(body)
        else:
            raise GraphError(
                400,
                131051,
                "(#131051) Unsupported message type",
                f"Message type {kind} is not supported by this server.",
            )
        context = body.get("context")
        if context is not None and not (
            isinstance(context, dict) and isinstance(context.get("message_id"), str)
        ):
            raise invalid_parameter("Param context['message_id'] must be a string.")
        now = self.clock()
        if kind != "template":
            last = self._last_inbound.get(wa_id)
            if last is None or now - last > SERVICE_WINDOW:
                raise GraphError(
                    400,
                    131047,
                    "(#131047) Re-engagement message",
                    "Message failed to send because more than 24 hours have passed since the "
                    "customer last replied to this number.",
                )
        self._admit(wa_id, now)
        message_id = f"wamid.HBgL{wa_id}FQIAERgS{next(self._ids):020X}AA=="
        self._sent[message_id] = {**body, "id": message_id, "at": now}
        answer: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": wa_id}],
            "messages": [{"id": message_id}],
        }
        if kind == "template":
            answer["messages"][0]["message_status"] = "accepted"
        return answer

    def _check_template(self, body: dict[str, Any]) -> None:
        template = _object(body, "template")
        name = _string(template, "name", "template['name']")
        language = _object(template, "language", "template['language']")
        code = _string(language, "code", "template['language']['code']")
        components = template.get("components")
        if components is not None and not isinstance(components, list):
            raise invalid_parameter("Param template['components'] must be an array.")
        if name not in self.templates:
            raise GraphError(
                404,
                132001,
                "(#132001) Template name does not exist in the translation",
                f"template name ({name}) does not exist in {code}",
            )
        if code not in self.templates[name]:
            raise GraphError(
                404,
                132001,
                "(#132001) Template name does not exist in the translation",
                f"template name ({name}) does not exist in {code}",
            )

    def _admit(self, wa_id: str, now: float) -> None:
        """The number's throughput (messages per second) and the per-customer pair rate."""
        while self._recent_sends and self._recent_sends[0] <= now - 1.0:
            self._recent_sends.popleft()
        if len(self._recent_sends) >= self.throughput_per_second:
            raise _throughput_error()
        tokens, last = self._pairs.get(wa_id, (float(self.pair_burst), now))
        tokens = min(float(self.pair_burst), tokens + (now - last) / self.pair_interval)
        if tokens < 1.0:
            raise _pair_error()
        self._pairs[wa_id] = (tokens - 1.0, now)
        self._recent_sends.append(now)

    def _new_inbound_id(self, wa_id: str) -> str:
        with self._lock:
            message_id = f"wamid.HBgL{wa_id}FQIAEhgU{next(self._ids):020X}AA=="
            self._inbound_ids.add(message_id)
            return message_id

    def _recipient_of(self, message_id: str) -> str | None:
        with self._lock:
            sent = self._sent.get(message_id)
        return _digits(sent["to"]) if sent else None


class WebhookBuilder:
    """The bodies WhatsApp POSTs to the business's webhook. Each inbound message also opens
    (or renews) the customer's 24-hour window in the fake, at the fake's clock."""

    def __init__(self, fake: FakeWhatsApp) -> None:
        self._fake = fake

    def text(self, sender: str, body: str, *, name: str = "Ada") -> dict[str, Any]:
        """A customer's text message."""
        return self._inbound(sender, name, "text", {"text": {"body": body}})

    def button_reply(
        self, sender: str, button_id: str, title: str, *, context_id: str | None = None
    ) -> dict[str, Any]:
        """A press on a reply button of the message ``context_id``."""
        reply = {"type": "button_reply", "button_reply": {"id": button_id, "title": title}}
        return self._inbound(sender, "Ada", "interactive", {"interactive": reply}, context_id)

    def list_reply(
        self,
        sender: str,
        row_id: str,
        title: str,
        description: str | None = None,
        *,
        context_id: str | None = None,
    ) -> dict[str, Any]:
        """A choice of a row in the list message ``context_id``."""
        row = {"id": row_id, "title": title}
        if description is not None:
            row["description"] = description
        reply = {"type": "list_reply", "list_reply": row}
        return self._inbound(sender, "Ada", "interactive", {"interactive": reply}, context_id)

    def image(
        self, sender: str, *, caption: str | None = None, mime_type: str = "image/jpeg"
    ) -> dict[str, Any]:
        """A customer's photo, with an optional caption."""
        image: dict[str, Any] = {
            "mime_type": mime_type,
            "sha256": hashlib.sha256(f"{sender}{caption}".encode()).hexdigest(),
            "id": f"{next(self._fake._ids):016d}",
        }
        if caption is not None:
            image["caption"] = caption
        return self._inbound(sender, "Ada", "image", {"image": image})

    def status(
        self,
        message_id: str,
        status: str,
        *,
        recipient: str | None = None,
        error_code: int = 131026,
        error_title: str = "Message undeliverable.",
    ) -> dict[str, Any]:
        """A status of a message the business sent: sent, delivered, read or failed (with
        an error)."""
        if status not in ("sent", "delivered", "read", "failed"):
            raise ValueError(f"unknown status {status!r}")
        wa_id = _digits(recipient) if recipient else self._fake._recipient_of(message_id)
        if wa_id is None:
            raise ValueError(f"{message_id} was not sent through the fake: name the recipient")
        entry: dict[str, Any] = {
            "id": message_id,
            "status": status,
            "timestamp": str(int(self._fake.clock())),
            "recipient_id": wa_id,
        }
        if status in ("sent", "delivered"):
            entry["conversation"] = {"id": f"conv{wa_id}", "origin": {"type": "service"}}
            entry["pricing"] = {"billable": True, "pricing_model": "PMP", "category": "service"}
        if status == "failed":
            entry["errors"] = [
                {
                    "code": error_code,
                    "title": error_title,
                    "message": error_title,
                    "error_data": {"details": error_title},
                    "href": ERROR_DOCS,
                }
            ]
        return self._envelope({"statuses": [entry]})

    def _inbound(
        self,
        sender: str,
        name: str,
        kind: str,
        content: dict[str, Any],
        context_id: str | None = None,
    ) -> dict[str, Any]:
        wa_id = _digits(sender)
        self._fake.customer_wrote(wa_id)
        message: dict[str, Any] = {"from": wa_id, "id": self._fake._new_inbound_id(wa_id)}
        if context_id is not None:
            message["context"] = {"from": self._fake.display_phone_number, "id": context_id}
        message |= {"timestamp": str(int(self._fake.clock())), "type": kind, **content}
        contacts = [{"profile": {"name": name}, "wa_id": wa_id}]
        return self._envelope({"contacts": contacts, "messages": [message]})

    def _envelope(self, value: dict[str, Any]) -> dict[str, Any]:
        metadata = {
            "display_phone_number": self._fake.display_phone_number,
            "phone_number_id": self._fake.phone_number_id,
        }
        change = {"value": {"messaging_product": "whatsapp", "metadata": metadata, **value}}
        return {
            "object": "whatsapp_business_account",
            "entry": [{"id": self._fake.waba_id, "changes": [{**change, "field": "messages"}]}],
        }


def encode(payload: dict[str, Any]) -> bytes:
    """A webhook body as WhatsApp sends it: compact JSON, UTF-8."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(raw_body: bytes, app_secret: str) -> str:
    """The X-Hub-Signature-256 header for a raw body: sha256=<hex HMAC-SHA256>."""
    return "sha256=" + hmac.new(app_secret.encode(), raw_body, hashlib.sha256).hexdigest()


class _Fault(Exception):
    def __init__(self, response: HttpResponse | DropConnection) -> None:
        super().__init__("injected fault")
        self.response = response


def _throughput_error() -> GraphError:
    return GraphError(
        400, 130429, "(#130429) Rate limit hit", "Cloud API message throughput has been reached."
    )


def _pair_error() -> GraphError:
    return GraphError(
        400,
        131056,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    )


def _check_text(body: dict[str, Any]) -> None:
    text = _object(body, "text")
    content = _string(text, "body", "text['body']")
    _length(content, "text['body']", 1, 4096)
    preview = text.get("preview_url", False)
    if not isinstance(preview, bool):
        raise invalid_parameter("Param text['preview_url'] must be a boolean.")


def _check_interactive(body: dict[str, Any]) -> None:
    interactive = _object(body, "interactive")
    kind = _string(interactive, "type", "interactive['type']")
    header = interactive.get("header")
    if header is not None:
        header = _object(interactive, "header", "interactive['header']")
        if header.get("type") == "text":
            _length(_string(header, "text", "header['text']"), "header['text']", 1, 60)
        elif kind == "list":
            raise invalid_value("A list message header must be of type text.")
    footer = interactive.get("footer")
    if footer is not None:
        footer = _object(interactive, "footer", "interactive['footer']")
        _length(_string(footer, "text", "footer['text']"), "footer['text']", 1, 60)
    content = _object(interactive, "body", "interactive['body']")
    text = _string(content, "text", "interactive['body']['text']")
    action = _object(interactive, "action", "interactive['action']")
    if kind == "button":
        _length(text, "body['text']", 1, 1024)
        _check_buttons(action)
    elif kind == "list":
        _length(text, "body['text']", 1, 4096)
        _check_list(action)
    else:
        raise invalid_value(f"Interactive message type {kind} is not supported by this server.")


def _check_buttons(action: dict[str, Any]) -> None:
    buttons = action.get("buttons")
    if not isinstance(buttons, list):
        raise invalid_parameter("The parameter interactive['action']['buttons'] is required.")
    if not 1 <= len(buttons) <= 3:
        raise invalid_value("Number of buttons must be between 1 and 3.")
    ids, titles = set(), set()
    for index, button in enumerate(buttons):
        where = f"buttons[{index}]"
        if not isinstance(button, dict) or button.get("type") != "reply":
            raise invalid_parameter(f"Param {where}['type'] must be \"reply\".")
        reply = _object(button, "reply", f"{where}['reply']")
        button_id = _string(reply, "id", f"{where}['reply']['id']")
        title = _string(reply, "title", f"{where}['reply']['title']")
        _length(button_id, f"{where}['reply']['id']", 1, 256)
        _length(title, f"{where}['reply']['title']", 1, 20)
        if button_id in ids:
            raise invalid_value(f"Button ids must be unique: {button_id!r} repeats.")
        if title in titles:
            raise invalid_value(f"Button titles must be unique: {title!r} repeats.")
        ids.add(button_id)
        titles.add(title)


def _check_list(action: dict[str, Any]) -> None:
    _length(_string(action, "button", "action['button']"), "action['button']", 1, 20)
    sections = action.get("sections")
    if not isinstance(sections, list):
        raise invalid_parameter("The parameter interactive['action']['sections'] is required.")
    if not 1 <= len(sections) <= 10:
        raise invalid_value("Number of sections must be between 1 and 10.")
    row_ids: set[str] = set()
    rows_total = 0
    for index, section in enumerate(sections):
        where = f"sections[{index}]"
        if not isinstance(section, dict):
            raise invalid_parameter(f"Param {where} must be an object.")
        if "title" in section or len(sections) > 1:
            if "title" not in section:
                raise invalid_value("Section title is required when there is more than 1 section.")
            _length(_string(section, "title", f"{where}['title']"), f"{where}['title']", 1, 24)
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            raise invalid_value(f"{where}['rows'] must hold at least one row.")
        rows_total += len(rows)
        for row_index, row in enumerate(rows):
            at = f"{where}['rows'][{row_index}]"
            if not isinstance(row, dict):
                raise invalid_parameter(f"Param {at} must be an object.")
            row_id = _string(row, "id", f"{at}['id']")
            _length(row_id, f"{at}['id']", 1, 200)
            _length(_string(row, "title", f"{at}['title']"), f"{at}['title']", 1, 24)
            if "description" in row:
                description = _string(row, "description", f"{at}['description']")
                _length(description, f"{at}['description']", 0, 72)
            if row_id in row_ids:
                raise invalid_value(f"Row ids must be unique: {row_id!r} repeats.")
            row_ids.add(row_id)
    if rows_total > 10:
        raise invalid_value(f"Total row count exceed max allowed count: 10 (got {rows_total}).")


def _object(parent: dict[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        raise invalid_parameter(f"The parameter {where or key} is required.")
    if not isinstance(value, dict):
        raise invalid_parameter(f"Param {where or key} must be a JSON object.")
    return value


def _string(parent: dict[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if value is None:
        raise invalid_parameter(f"The parameter {where} is required.")
    if not isinstance(value, str):
        raise invalid_parameter(f"Param {where} must be a string.")
    return value


def _length(value: str, where: str, least: int, most: int) -> None:
    # Graph counts characters (code points), not bytes.
    if len(value.strip() if least else value) < least:
        raise invalid_value(f"Param {where} must be at least {least} characters long.")
    if len(value) > most:
        raise invalid_value(f"Param {where} must be at most {most} characters long.")


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
