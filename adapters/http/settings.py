"""What the HTTP server needs besides its pieces, and the variables that set it (read by the
composition root, `bootstrap.http_settings`)."""

from __future__ import annotations

import msgspec

ENV_TELEGRAM_SECRET = "VOXLEDGER_TELEGRAM_SECRET"
ENV_API_TOKEN = "VOXLEDGER_API_TOKEN"
ENV_MAX_BODY = "VOXLEDGER_MAX_BODY_BYTES"
ENV_READ_TIMEOUT = "VOXLEDGER_READ_TIMEOUT"
ENV_TWILIO_AUTH_TOKEN = "VOXLEDGER_TWILIO_AUTH_TOKEN"
ENV_PUBLIC_URL = "VOXLEDGER_PUBLIC_URL"
ENV_READ_WAIT = "VOXLEDGER_READ_WAIT_S"
DEFAULT_MAX_BODY = 64 * 1024
DEFAULT_READ_TIMEOUT = 10.0  # seconds for a request's headers, and again for its body
DEFAULT_READ_WAIT_S = 5.0


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """The webhook's secret, the API's token, the body size limit, how long a client may
    take to send a request's headers and then its body, the chat bot's flow, the Twilio
    auth token, the server's public base URL (what Twilio signs), and how long a
    projection read waits for the position it asks for."""

    telegram_secret: str | None = None  # None: the webhook refuses every call
    api_token: str | None = None  # None: the /v1 API refuses every call
    max_body_bytes: int = DEFAULT_MAX_BODY
    read_timeout_s: float = DEFAULT_READ_TIMEOUT
    flow: str = "intake"
    twilio_auth_token: str | None = None  # None: the media-stream route refuses every call
    public_url: str | None = None  # None: the URL the request itself names
    read_wait_s: float = DEFAULT_READ_WAIT_S  # then 503: the projections are behind
