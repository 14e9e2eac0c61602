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
# What the log stores: PostgreSQL's 64-bit integers, finite numbers.
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Finite = Annotated[float, msgspec.Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)]


class NewConversation(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Start a conversation. With a ``chat_id`` its id is derived from channel and chat
    id, so starting it again finds the same conversation."""

    channel: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_.\-]{1,64}$")] = "api"
    chat_id: ShortText | None = None
    participant: ShortText | None = None
    metadata: Annotated[
        dict[ShortText, ShortText | Int64 | Finite | bool | None], msgspec.Meta(max_length=64)
    ] = {}


Version = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Position = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class ConversationStarted(msgspec.Struct, frozen=True, kw_only=True):
    """The conversation's id, whether this request started it, its version, and the log
    position of its last event (a projection read given ``min_position`` sees it)."""

    conversation_id: UUID
    created: bool
    version: int
    position: int


class NewMessage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A user's message to a conversation. Give a ``message_id`` to make a retry safe: the
    same id again returns the original reply and records nothing."""

    text: Annotated[str, msgspec.Meta(min_length=1, max_length=4096, pattern=NO_NUL)]
    message_id: MessageId | None = None
    user_id: ShortText | None = None
    choice: bool = False  # a menu choice (a button), not typed text
    # Record the message only if the conversation is at this version (else 409).
    expected_version: Version | None = None


class FlowView(msgspec.Struct, frozen=True):
    """A flow run and what it asks now (None once it has ended)."""

    flow: FlowState
    prompt: str | None


class ConversationView(msgspec.Struct, frozen=True):
    """A conversation's state and the flow in progress, if any."""

    conversation: ConversationState
    flow: FlowView | None


class Liveness(msgspec.Struct, frozen=True):
    """The process is up and serving."""

    status: str


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


class ConflictBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """A write refused by the state it met: what is wrong, the details and, when the write
    expected another version, the version the conversation is at."""

    error: str
    detail: Any = None
    current_version: int | None = None


class BehindBody(msgspec.Struct, frozen=True, omit_defaults=True):
    """The projections a read needs could not answer in time: what is wrong, the details
    and, when the read asked for a position, the one they had reached."""

    error: str
    detail: Any = None
    position: int | None = None
