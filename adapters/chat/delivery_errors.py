"""Why a reply could not be handed to a chat platform, in the three kinds a delivery worker
acts on: wait as told, try again later, or give up and record why.

Every outbound client (Telegram's Bot API, WhatsApp's Cloud API) raises only these, so the
worker decides without knowing which platform answered.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from ...domain.errors import VoxledgerError

# Failures that happen before a whole request has left: the platform cannot have acted.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.WriteError,
    httpx.WriteTimeout,
    httpx.LocalProtocolError,
    httpx.UnsupportedProtocol,
    httpx.ProxyError,
)


class DeliveryError(VoxledgerError):
    """A platform did not accept a call; ``retryable`` says whether trying again can help."""

    retryable: bool = False


class RetryAfter(DeliveryError):
    """The platform's flood control refused the call: try again after ``seconds``."""

    retryable = True

    def __init__(self, seconds: float, reason: str = "") -> None:
        self.seconds = seconds
        self.reason = reason or f"rate limited: retry after {seconds:g} s"
        super().__init__(self.reason)


class Transient(DeliveryError):
    """A server error, a timeout, a broken connection or an unreadable answer: try again later.

    ``may_have_arrived`` is true when the request was sent before the failure, so the
    platform may have acted on it (a retry can then deliver a message twice)."""

    retryable = True

    def __init__(self, reason: str, *, may_have_arrived: bool = False) -> None:
        self.reason = reason
        self.may_have_arrived = may_have_arrived
        super().__init__(reason)


class Rejected(DeliveryError):
    """The platform refused the call for good (bad request, forbidden, unknown chat):
    ``code`` and ``description`` are the platform's own, to be recorded."""

    def __init__(self, code: int, description: str) -> None:
        self.code = code
        self.description = description
        super().__init__(f"{code}: {description}")


class OutsideServiceWindow(Rejected):
    """WhatsApp refused a free-form message: the customer last wrote more than 24 hours ago,
    so only an approved template can reach them until they write again."""


def transport_failure(
    call: str, exc: httpx.TransportError, redact: Callable[[str], str] = str
) -> Transient:
    """A failure with no answer (refused, timed out, cut off) as `Transient`, saying whether
    the request may have reached the platform; ``redact`` hides secrets in the detail."""
    detail = redact(str(exc)) or "no detail"
    return Transient(
        f"{call}: {type(exc).__name__}: {detail}", may_have_arrived=not isinstance(exc, _NOT_SENT)
    )
