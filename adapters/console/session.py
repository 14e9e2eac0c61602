"""The console's sign-in: a session value signed with a key derived from the API token, and
the check that a form was posted from the console's own pages.

The cookie never holds the token. It holds when the session began and ends, and a MAC over
both made with a key derived from the token: a changed token ends every session, and a value
cannot be forged or stretched without the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

COOKIE = "voxledger_console"
LIFETIME = timedelta(hours=12)
# Separates this key from any other use of the token.
_KEY_PURPOSE = b"voxledger console session v1"


class Sessions:
    """Issues and checks the signed values of console sessions."""

    def __init__(
        self,
        token: str | None,
        clock: Callable[[], datetime],
        lifetime: timedelta = LIFETIME,
    ) -> None:
        self._token = token.encode() if token else None
        self._key = hmac.new(self._token, _KEY_PURPOSE, hashlib.sha256).digest() if token else None
        self.clock = clock
        self.lifetime = lifetime

    @property
    def enabled(self) -> bool:
        """False when no API token is configured: nobody can sign in."""
        return self._key is not None

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the API token, compared in constant time."""
        if self._token is None:
            return False
        return hmac.compare_digest(given.encode(), self._token)

    def issue(self) -> str:
        """A new session value, valid for ``lifetime`` from now."""
        assert self._key is not None
        begun = int(self.clock().timestamp())
        payload = f"{begun}.{begun + int(self.lifetime.total_seconds())}.{secrets.token_hex(8)}"
        return f"{payload}.{self._mac(payload)}"

    def valid(self, value: str | None) -> bool:
        """Whether a cookie's value is a session this token signed that has not ended."""
        if self._key is None or not value:
            return False
        payload, _, mac = value.rpartition(".")
        if not payload or not hmac.compare_digest(mac, self._mac(payload)):
            return False
        begun, ends, _ = payload.split(".", 2)
        now = self.clock().timestamp()
        # A session that begins in the future was signed by a clock ahead of ours: refused.
        return int(begun) <= now + 60 and now < int(ends)

    def _mac(self, payload: str) -> str:
        assert self._key is not None
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def same_origin(origin: str | None, referer: str | None, own: str) -> bool:
    """Whether a POST came from a page of this server: its Origin header (or, from a
    browser that sends none, its Referer) names ``own`` (scheme://host[:port])."""
    if origin and origin != "null":
        return origin.rstrip("/") == own
    if referer:
        parts = urlsplit(referer)
        return f"{parts.scheme}://{parts.netloc}" == own
    return False
