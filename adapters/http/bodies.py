"""The request and response bodies of the HTTP server: msgspec Structs, validated once where
a request enters and documented in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec

from ...domain.conversation import ConversationState
from ...domain.flow import FlowState

# No colon: the bot's own ids (replies, callbacks) have one, so they never collide.
MESSAGE_ID = r"^[A-Za-z0-9_.\-]+$"
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=MESSAGE_ID)]
# PostgreSQL text cannot hold NUL: one in an event would stall every projection that reads it.
NO_NUL = r"^[^\x00]*$"
ShortText = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=NO_NUL)]


class NewConversation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Start a conversation. With a ``chat_id`` its id is derived from channel and chat
    id, so starting it again finds the same conversation."""

    channel: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_.\-]{1,64}$")] = "api"
    chat_id: ShortText | None = None
    participant: ShortText | None = None
    metadata: dict[ShortText, ShortText | int | float | bool | None] = {}


class ConversationStarted(msgspec.Struct, frozen=True):
    """The conversation's id, and whether this request started it."""

    conversation_id: UUID
    created: bool


class NewMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A user's message to a conversation. Give a ``message_id`` to make a retry safe: the
    same id again returns the original reply and records nothing."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=NO_NUL)]
    message_id: MessageId | None = None
    user_id: ShortText | None = None
    choice: bool = False  # a menu choice (a button), not typed text


class FlowView(msgspec.Struct, frozen=True):
    """A flow run and what it asks now (None once it has ended)."""

    flow: FlowState
    prompt: str | None


class ConversationView(msgspec.Struct, frozen=True):
    """A conversation's state and the flow in progress, if any."""

    conversation: ConversationState
    flow: FlowView | None


class Health(msgspec.Struct, frozen=True):
    """The database answers; how far each projection trails the event log."""

    status: str
    database: str
    head: int | None = None
    projection_lag: dict[str, int] = {}


class ErrorBody(msgspec.Struct, frozen=True):
    """Every refused request's body: what is wrong, and the details."""

    error: str
    detail: Any = None
