"""Argument types shared by the command modules: ids and times, checked where they enter."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ..domain.errors import BadInput


class UsageError(BadInput):
    """A command-line argument that cannot be used; the command exits with code 2."""


def stream_id(text: str) -> UUID:
    """A conversation or flow id (a UUID)."""
    try:
        return UUID(text)
    except ValueError:
        raise BadInput(f"{text!r} is not a conversation id (a UUID)") from None


def timestamp(text: str) -> datetime:
    """An ISO 8601 time with a time zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{text!r} is not an ISO 8601 time") from None
    if value.tzinfo is None:
        raise BadInput(f"{text!r} has no time zone; add +00:00 or Z")
    return value
