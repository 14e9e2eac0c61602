"""The outbound WhatsApp Cloud API client (Graph API), and the checks the webhook edge needs.

Sends are `POST /{version}/{phone_number_id}/messages` with `Authorization: Bearer <token>`;
the answer names the recipient's WhatsApp id and the new message's id (wamid). Graph errors
(``{"error": {"message", "type", "code", "error_data": {"details"}, "fbtrace_id"}}``) become
the delivery errors every channel shares. Graph sends no retry_after, so the rate-limit codes
carry a wait chosen from the documented limits.

`verify_signature` and `verify_subscription` are pure: the HTTP edge calls them with the raw
webhook body and the verification query.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import httpx
import msgspec

from .channels import WHATSAPP_API_URL
from .delivery_errors import (
    OutsideServiceWindow,
    Rejected,
    RetryAfter,
    Transient,
    transport_failure,
)

DEFAULT_BASE_URL = WHATSAPP_API_URL
DEFAULT_API_VERSION = "v23.0"

# Waits for Graph's rate-limit codes, which carry no retry_after: the throughput limit
# (80 messages/s per number) clears within a second; the pair limit allows one message per
# 6 s to one customer; the app and account call limits are counted per hour.
RATE_LIMIT_WAITS = {
    130429: 1.0,  # Cloud API throughput reached
    131056: 6.0,  # (business, customer) pair rate limit
    4: 60.0,  # application request limit
    80007: 60.0,  # WhatsApp Business Account rate limit
}
# Meta's side failed or was busy: worth another try later.
TRANSIENT_CODES = frozenset({1, 2, 131000, 131016, 133004})
REENGAGEMENT = 131047
DEFAULT_HTTP_429_WAIT = 30.0

T = TypeVar("T")


class ReplyButton(msgspec.Struct, frozen=True):
    """A reply button: ``id`` (at most 256 characters) comes back in the webhook when
    pressed; ``title`` (at most 20) is shown."""

    id: str
    title: str


class ListRow(msgspec.Struct, frozen=True, omit_defaults=True):
    """One choice in a list message: ``id`` (<= 200), ``title`` (<= 24), ``description`` (<= 72)."""

    id: str
    title: str
    description: str | None = None


class ListSection(msgspec.Struct, frozen=True, omit_defaults=True):
    """A titled group of rows; the title is required when a list has several sections."""

    rows: list[ListRow]
    title: str | None = None


class SentMessage(msgspec.Struct, frozen=True):
    """What WhatsApp accepted: the message's id (wamid) and the recipient's WhatsApp id."""

    message_id: str
    wa_id: str
    input: str
    message_status: str | None = None


class _Contact(msgspec.Struct, frozen=True):
    input: str
    wa_id: str


class _MessageId(msgspec.Struct, frozen=True):
    id: str
    message_status: str | None = None


class _Sent(msgspec.Struct, frozen=True):
    messages: list[_MessageId]
    contacts: list[_Contact] = []


class _Success(msgspec.Struct, frozen=True):
    success: bool


class _ErrorData(msgspec.Struct, frozen=True):
    details: str = ""


class _GraphError(msgspec.Struct, frozen=True):
    code: int
    message: str = ""
    type: str = ""
    error_subcode: int | None = None
    error_data: _ErrorData | None = None
    fbtrace_id: str = ""


class _ErrorAnswer(msgspec.Struct, frozen=True):
    error: _GraphError


class WhatsAppCloudApi:
    """An async client for one business phone number; the access token is never shown."""

    def __init__(
        self,
        access_token: str,
        phone_number_id: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_version: str = DEFAULT_API_VERSION,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not access_token or not phone_number_id.isdigit():
            raise ValueError("an access token and a numeric phone number id are required")
        self.phone_number_id = phone_number_id
        self._path = f"/{api_version}/{phone_number_id}/messages"
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )

    def __repr__(self) -> str:
        return (
            f"WhatsAppCloudApi(base_url={str(self._http.base_url)!r}, "
            f"phone_number_id={self.phone_number_id!r})"
        )

    async def __aenter__(self) -> WhatsAppCloudApi:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections this client holds."""
        await self._http.aclose()

    async def send_text(
        self, to: str, body: str, *, preview_url: bool = False, reply_to: str | None = None
    ) -> SentMessage:
        """A text message (1 to 4096 characters); only within the 24-hour window."""
        text = {"preview_url": preview_url, "body": body}
        return await self._send(to, "text", {"text": text}, reply_to)

    async def send_buttons(
        self,
        to: str,
        body: str,
        buttons: Sequence[ReplyButton],
        *,
        header: str | None = None,
        footer: str | None = None,
        reply_to: str | None = None,
    ) -> SentMessage:
        """A message with one to three reply buttons (body at most 1024 characters)."""
        action = {"buttons": [{"type": "reply", "reply": button} for button in buttons]}
        interactive = _interactive("button", body, action, header, footer)
        return await self._send(to, "interactive", {"interactive": interactive}, reply_to)

    async def send_list(
        self,
        to: str,
        body: str,
        button: str,
        sections: Sequence[ListSection],
        *,
        header: str | None = None,
        footer: str | None = None,
        reply_to: str | None = None,
    ) -> SentMessage:
        """A list message: ``button`` opens up to ten rows in up to ten sections."""
        action = {"button": button, "sections": list(sections)}
        interactive = _interactive("list", body, action, header, footer)
        return await self._send(to, "interactive", {"interactive": interactive}, reply_to)

    async def send_template(
        self,
        to: str,
        name: str,
        language_code: str,
        *,
        components: Sequence[Mapping[str, Any]] | None = None,
    ) -> SentMessage:
        """An approved template: the one kind of message that reaches a customer outside
        the 24-hour window."""
        template: dict[str, Any] = {"name": name, "language": {"code": language_code}}
        if components:
            template["components"] = [dict(c) for c in components]
        return await self._send(to, "template", {"template": template}, None)

    async def mark_read(self, message_id: str) -> bool:
        """Mark a customer's message as read (blue ticks)."""
        body = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
        return (await self._post("mark_read", body, _Success)).success

    async def _send(
        self, to: str, kind: str, content: dict[str, Any], reply_to: str | None
    ) -> SentMessage:
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": kind,
            **content,
        }
        if reply_to:
            body["context"] = {"message_id": reply_to}
        sent = await self._post(f"send {kind}", body, _Sent)
        if not sent.messages:
            raise Transient(f"send {kind}: malformed answer: no message id", may_have_arrived=True)
        contact = sent.contacts[0] if sent.contacts else _Contact(input=to, wa_id="")
        first = sent.messages[0]
        return SentMessage(first.id, contact.wa_id, contact.input, first.message_status)

    async def _post(self, what: str, body: dict[str, Any], result_type: type[T]) -> T:
        try:
            response = await self._http.post(
                self._path,
                content=msgspec.json.encode(body),
                headers={"Content-Type": "application/json"},
            )
        except httpx.TransportError as exc:
            raise transport_failure(what, exc) from None
        return _result(what, response, result_type)


def verify_signature(raw_body: bytes, header: str | None, app_secret: str | bytes) -> bool:
    """Whether ``header`` (X-Hub-Signature-256: ``sha256=<hex>``) is the HMAC-SHA256 of the
    raw body under the app secret; compared in constant time."""
    if not header or not app_secret:
        return False
    scheme, _, given = header.strip().partition("=")
    if scheme.lower() != "sha256" or not given:
        return False
    secret = app_secret.encode() if isinstance(app_secret, str) else app_secret
    expected = hmac.new(secret, raw_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode("ascii", "replace"))


def verify_subscription(query: Mapping[str, str], verify_token: str) -> str | None:
    """The GET handshake Meta makes when a webhook is configured: the ``hub.challenge`` to
    echo when ``hub.mode`` is "subscribe" and ``hub.verify_token`` is ours, else None."""
    mode = query.get("hub.mode", "")
    token = query.get("hub.verify_token", "")
    challenge = query.get("hub.challenge")
    if mode != "subscribe" or challenge is None or not verify_token:
        return None
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        return None
    return challenge


def _interactive(
    kind: str, body: str, action: dict[str, Any], header: str | None, footer: str | None
) -> dict[str, Any]:
    interactive: dict[str, Any] = {"type": kind}
    if header is not None:
        interactive["header"] = {"type": "text", "text": header}
    interactive["body"] = {"text": body}
    if footer is not None:
        interactive["footer"] = {"text": footer}
    interactive["action"] = action
    return interactive


def _result(what: str, response: httpx.Response, result_type: type[T]) -> T:
    """The answer's value, or the delivery error a Graph error means."""
    status = response.status_code
    if 200 <= status < 300:
        try:
            return msgspec.json.decode(response.content, type=result_type)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Transient(f"{what}: malformed answer: {exc}", may_have_arrived=True) from None
    try:
        error = msgspec.json.decode(response.content, type=_ErrorAnswer).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        error = None
    if error is None:
        reason = f"{what}: HTTP {status} {response.reason_phrase}"
        if status == 429:
            raise RetryAfter(_retry_after_header(response), reason)
        if status >= 500:
            raise Transient(reason, may_have_arrived=True)
        if status >= 400:
            raise Rejected(status, f"HTTP {status} {response.reason_phrase}")
        raise Transient(f"{what}: malformed answer: HTTP {status}", may_have_arrived=True)
    description = _description(error)
    if error.code in RATE_LIMIT_WAITS:
        raise RetryAfter(RATE_LIMIT_WAITS[error.code], f"{what}: {description}")
    if error.code in TRANSIENT_CODES or status >= 500:
        raise Transient(f"{what}: {description}", may_have_arrived=True)
    if error.code == REENGAGEMENT:
        raise OutsideServiceWindow(
            error.code,
            f"{description} (outside the 24-hour customer service window: the customer has "
            "not written for more than 24 hours, so only an approved template can reach them)",
        )
    if status == 429:
        raise RetryAfter(_retry_after_header(response), f"{what}: {description}")
    raise Rejected(error.code, description)


def _description(error: _GraphError) -> str:
    details = error.error_data.details if error.error_data else ""
    text = error.message or f"Graph error {error.code}"
    return f"{text}: {details}" if details and details not in text else text


def _retry_after_header(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return DEFAULT_HTTP_429_WAIT
    return max(0.0, seconds) if math.isfinite(seconds) else DEFAULT_HTTP_429_WAIT
