"""The conversation's values: its lifecycle (the statuses and the moves between them), and
the immutable parts of its state (messages, turns, connection, audio, usage), each a value
that an event replaces rather than changes."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import msgspec


class Status(StrEnum):
    """Where a conversation is in its lifecycle."""

    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    LISTENING = "listening"
    PROCESSING = "processing"
    RESPONDING = "responding"
    DISCONNECTED = "disconnected"
    ENDED = "ended"
    ERROR = "error"


S = Status
# The lifecycle's moves: from a status, the statuses a command may take the conversation to.
# Where each event leaves it is the event's own knowledge (`status_after` in conversation.py).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.IDLE: frozenset({S.CONNECTING, S.CONNECTED, S.PROCESSING, S.ENDED, S.ERROR}),
    S.CONNECTING: frozenset({S.CONNECTED, S.DISCONNECTED, S.ENDED, S.ERROR}),
    S.CONNECTED: frozenset({S.LISTENING, S.PROCESSING, S.DISCONNECTED, S.ENDED, S.ERROR}),
    S.LISTENING: frozenset({S.CONNECTED, S.PROCESSING, S.DISCONNECTED, S.ENDED, S.ERROR}),
    S.PROCESSING: frozenset(
        {S.RESPONDING, S.IDLE, S.CONNECTED, S.LISTENING, S.DISCONNECTED, S.ENDED, S.ERROR}
    ),
    S.RESPONDING: frozenset({S.IDLE, S.CONNECTED, S.LISTENING, S.DISCONNECTED, S.ENDED, S.ERROR}),
    S.DISCONNECTED: frozenset({S.CONNECTING, S.CONNECTED, S.ENDED, S.ERROR}),
    S.ERROR: frozenset({S.CONNECTING, S.CONNECTED, S.DISCONNECTED, S.ENDED}),
    S.ENDED: frozenset(),
}
# Statuses in which the conversation is not live (though it may still reconnect).
INACTIVE = frozenset({S.DISCONNECTED, S.ENDED, S.ERROR})


class Role(StrEnum):
    """Who said a message."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


# Each role by its name: a look-up costs a tenth of calling the enum (on every message).
ROLES: dict[str, Role] = {role.value: role for role in Role}


class Message(msgspec.Struct, frozen=True, gc=False):
    """One message of the conversation, as said by the user, the assistant or the system."""

    id: str
    role: Role
    content: str
    at: datetime
    metadata: dict[str, Any] = {}
    audio_duration_s: float | None = None
    complete: bool = True
    interrupted: bool = False


class Turn(msgspec.Struct, frozen=True, gc=False):
    """One exchange: the user speaks or writes, the assistant answers."""

    id: str
    started_at: datetime
    user_message_id: str | None = None
    assistant_message_id: str | None = None
    completed_at: datetime | None = None
    interrupted_at: datetime | None = None
    duration_ms: float | None = None

    @property
    def is_active(self) -> bool:
        """True while the turn is neither completed nor interrupted."""
        return self.completed_at is None and self.interrupted_at is None


class Connection(msgspec.Struct, frozen=True, gc=False):
    """Facts about the transport the conversation runs over."""

    provider: str | None = None
    connection_id: str | None = None
    connected_at: datetime | None = None
    latency_ms: float | None = None
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    last_error: str | None = None
    error_count: int = 0
    reconnect_count: int = 0


class Audio(msgspec.Struct, frozen=True, gc=False):
    """Facts about the audio channel of a voice conversation."""

    listening: bool = False
    playing: bool = False
    speech_active: bool = False
    last_speech_at: datetime | None = None
    silence_s: float = 0.0
    input_level_db: float | None = None
    output_level_db: float | None = None
    latency_ms: float | None = None


class Usage(msgspec.Struct, frozen=True, gc=False):
    """Counters and costs accumulated over the conversation."""

    turns: int = 0
    messages: int = 0
    response_time_ms_total: float = 0.0
    response_time_ms_min: float | None = None
    response_time_ms_max: float | None = None
    interruptions: int = 0
    silences: int = 0
    audio_seconds: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    @property
    def response_time_ms_avg(self) -> float | None:
        """Mean response time of completed turns, or None before the first one."""
        return self.response_time_ms_total / self.turns if self.turns else None


class OutboundKind(StrEnum):
    """What the bot decided to send: a reply to a message, the answer to a button press, the
    removal of a keyboard that was used, or a notice of its own (a form expired)."""

    REPLY = "reply"
    ACKNOWLEDGE = "acknowledge"
    CLOSE_KEYBOARD = "close_keyboard"
    NOTICE = "notice"


class DeliveryStatus(StrEnum):
    """What a channel reported about a message it took: sent, delivered, read, or failed."""

    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


# How far along each status is: a status report never moves a message back.
STATUS_RANK = {
    DeliveryStatus.SENT: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.READ: 3,
    DeliveryStatus.FAILED: 4,
}


class Address(msgspec.Struct, frozen=True, gc=False):
    """Where a conversation's outbound messages go on its channel: the chat (a Telegram chat
    id, a WhatsApp number) and, in a chat with topics, the topic."""

    to: str
    thread: str | None = None


class Outbound(msgspec.Struct, frozen=True, gc=False):
    """Something the bot decided to send, recorded before it is sent and kept until its
    delivery ends (delivered, or failed for good)."""

    id: str
    kind: OutboundKind
    channel: str
    address: Address
    text: str
    queued_at: datetime
    cause: str  # the message that caused it, or what did (a form's expiry)
    choices: tuple[str, ...] = ()
    reply_to: str | None = None  # the platform's id of the message it answers
    reference: str | None = None  # the button press to answer, the message to unbutton
    sent_parts: tuple[str, ...] = ()  # the platform's ids of the parts delivered so far
    attempts: int = 0  # attempts that failed and may be tried again
    last_error: str | None = None


class ConversationState(msgspec.Struct, frozen=True):
    """An immutable picture of a conversation at one version."""

    id: UUID
    version: int
    status: Status
    channel: str
    participant: str | None
    started_at: datetime
    updated_at: datetime
    connection: Connection
    audio: Audio
    usage: Usage
    messages: tuple[Message, ...]
    turns: tuple[Turn, ...]
    current_turn_id: str | None
    context: dict[str, Any]
    metadata: dict[str, Any]
    ended_at: datetime | None = None
    end_reason: str | None = None
    active_flow_id: UUID | None = None
    # The outbox: what the bot decided to send and has not finished delivering, in order.
    outbox: tuple[Outbound, ...] = ()
    address: Address | None = None  # where the last outbound message went
    keyboards: tuple[str, ...] = ()  # delivered messages whose buttons are still shown
    sent: dict[str, str] = {}  # the platform's ids of recent messages, and their status
    notices: tuple[str, ...] = ()  # the causes of the latest notices (one each)

    @property
    def is_active(self) -> bool:
        """True unless the conversation is disconnected, ended or failed."""
        return self.status not in INACTIVE

    @property
    def last_user_message(self) -> Message | None:
        """The most recent message the user sent, if any."""
        return next((m for m in reversed(self.messages) if m.role is Role.USER), None)

    @property
    def current_turn(self) -> Turn | None:
        """The turn in progress, if any."""
        if self.current_turn_id is None:
            return None
        return next(t for t in reversed(self.turns) if t.id == self.current_turn_id)

    @property
    def current_turn_active(self) -> bool:
        """True while a turn is in progress."""
        return self.current_turn_id is not None
