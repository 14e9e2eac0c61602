"""The Conversation aggregate: one chat or voice session, every change a recorded event.

Command methods guard, then trigger one event; an event's ``apply`` only assigns. Times come
in with each command (``at``), so replaying the events always rebuilds the same state.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate
from eventsourcing.utils import register_topic

from .errors import InvalidTransition, NotFound, ValidationFailed


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
# The one place the lifecycle is written down: from a status, the statuses it may move to.
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
INACTIVE = frozenset({S.DISCONNECTED, S.ENDED, S.ERROR})


class Role(StrEnum):
    """Who said a message."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class Message(msgspec.Struct, frozen=True):
    """One message of the conversation, as said by the user, the assistant or the system."""

    id: str
    role: Role
    content: str
    at: datetime
    metadata: dict[str, Any] = {}
    audio_duration_s: float | None = None
    complete: bool = True
    interrupted: bool = False


class Turn(msgspec.Struct, frozen=True):
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


class Connection(msgspec.Struct, frozen=True):
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


class Audio(msgspec.Struct, frozen=True):
    """Facts about the audio channel of a voice conversation."""

    listening: bool = False
    playing: bool = False
    speech_active: bool = False
    last_speech_at: datetime | None = None
    silence_s: float = 0.0
    input_level_db: float | None = None
    output_level_db: float | None = None
    latency_ms: float | None = None


class Usage(msgspec.Struct, frozen=True):
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


class Conversation(Aggregate):
    """A chat or voice conversation: its lifecycle, messages, turns, audio and usage."""

    TOPIC = "voxledger:Conversation"

    class Event(Aggregate.Event):
        TOPIC = "voxledger:Conversation.Event"

    class Started(Aggregate.Created):
        TOPIC = "voxledger:Conversation.Started"
        PERSONAL = ("participant", "metadata")
        channel: str
        participant: str | None
        metadata: dict[str, Any]

    def __init__(self, channel: str, participant: str | None, metadata: dict[str, Any]):
        self.channel = channel
        self.participant = participant
        self.metadata = dict(metadata)
        self.status = Status.IDLE
        self.connection = Connection()
        self.audio = Audio()
        self.usage = Usage()
        self.messages: list[Message] = []
        self.message_positions: dict[str, int] = {}  # id -> index, so lookups stay O(1)
        self.turns: list[Turn] = []
        self.current_turn_id: str | None = None
        self.context: dict[str, Any] = {}
        self.ended_at: datetime | None = None
        self.end_reason: str | None = None
        self.active_flow_id: UUID | None = None

    @classmethod
    def start(
        cls,
        channel: str,
        participant: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        at: datetime,
        conversation_id: UUID | None = None,
    ) -> Conversation:
        """Open a new conversation on a channel (telegram, voice, terminal...)."""
        if not channel.strip():
            raise ValidationFailed("a conversation needs a channel name")
        return cls._create(
            cls.Started,
            id=conversation_id,
            channel=channel,
            participant=participant,
            metadata=dict(metadata or {}),
            timestamp=at,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def _require(self, target: Status) -> None:
        if target not in TRANSITIONS[self.status]:
            raise InvalidTransition(
                f"conversation {self.id} cannot go from {self.status} to {target}"
            )

    def _require_open(self) -> None:
        if self.status is Status.ENDED:
            raise InvalidTransition(f"conversation {self.id} has ended")

    def _resting_status(self) -> Status:
        """Where the conversation settles when no turn is in progress."""
        if self.audio.listening:
            return Status.LISTENING
        return Status.CONNECTED if self.connection.connected_at else Status.IDLE

    class ConnectionOpening(Event):
        TOPIC = "voxledger:Conversation.ConnectionOpening"
        provider: str

        def apply(self, c: Conversation) -> None:
            c.status = Status.CONNECTING
            c.connection = msgspec.structs.replace(c.connection, provider=self.provider)

    def begin_connecting(self, provider: str, *, at: datetime) -> None:
        """The transport starts to connect."""
        self._require(Status.CONNECTING)
        self.trigger_event(self.ConnectionOpening, provider=provider, timestamp=at)

    class Connected(Event):
        TOPIC = "voxledger:Conversation.Connected"
        provider: str
        connection_id: str
        latency_ms: float | None
        reconnect: bool

        def apply(self, c: Conversation) -> None:
            c.status = Status.CONNECTED
            c.connection = msgspec.structs.replace(
                c.connection,
                provider=self.provider,
                connection_id=self.connection_id,
                connected_at=self.timestamp,
                latency_ms=self.latency_ms,
                reconnect_count=c.connection.reconnect_count + self.reconnect,
            )

    def connect(
        self,
        provider: str,
        connection_id: str,
        latency_ms: float | None = None,
        *,
        at: datetime,
    ) -> None:
        """The transport is up; a connection after an earlier one counts as a reconnect."""
        self._require(Status.CONNECTED)
        _require_non_negative(latency_ms=latency_ms)
        self.trigger_event(
            self.Connected,
            provider=provider,
            connection_id=connection_id,
            latency_ms=latency_ms,
            reconnect=self.connection.connected_at is not None,
            timestamp=at,
        )

    class Disconnected(Event):
        TOPIC = "voxledger:Conversation.Disconnected"
        reason: str

        def apply(self, c: Conversation) -> None:
            c._abandon_turn(self.timestamp)
            c.status = Status.DISCONNECTED
            c.audio = msgspec.structs.replace(
                c.audio, listening=False, playing=False, speech_active=False
            )

    def disconnect(self, reason: str = "", *, at: datetime) -> None:
        """The transport went away; the conversation may reconnect later."""
        self._require(Status.DISCONNECTED)
        self.trigger_event(self.Disconnected, reason=reason, timestamp=at)

    class ErrorRecorded(Event):
        TOPIC = "voxledger:Conversation.ErrorRecorded"
        error: str
        fatal: bool

        def apply(self, c: Conversation) -> None:
            if self.fatal:
                c._abandon_turn(self.timestamp)
                c.status = Status.ERROR
            c.connection = msgspec.structs.replace(
                c.connection, last_error=self.error, error_count=c.connection.error_count + 1
            )

    def record_error(self, error: str, *, fatal: bool = False, at: datetime) -> None:
        """Something went wrong; a fatal error moves the conversation to the error status."""
        if fatal:
            self._require(Status.ERROR)
        else:
            self._require_open()
        self.trigger_event(self.ErrorRecorded, error=error, fatal=fatal, timestamp=at)

    class TrafficRecorded(Event):
        TOPIC = "voxledger:Conversation.TrafficRecorded"
        messages_sent: int
        messages_received: int
        bytes_sent: int
        bytes_received: int

        def apply(self, c: Conversation) -> None:
            k = c.connection
            c.connection = msgspec.structs.replace(
                k,
                messages_sent=k.messages_sent + self.messages_sent,
                messages_received=k.messages_received + self.messages_received,
                bytes_sent=k.bytes_sent + self.bytes_sent,
                bytes_received=k.bytes_received + self.bytes_received,
            )

    def record_traffic(
        self,
        *,
        messages_sent: int = 0,
        messages_received: int = 0,
        bytes_sent: int = 0,
        bytes_received: int = 0,
        at: datetime,
    ) -> None:
        """Count what went over the transport since the last count."""
        self._require_open()
        _require_non_negative(
            messages_sent=messages_sent,
            messages_received=messages_received,
            bytes_sent=bytes_sent,
            bytes_received=bytes_received,
        )
        self.trigger_event(
            self.TrafficRecorded,
            messages_sent=messages_sent,
            messages_received=messages_received,
            bytes_sent=bytes_sent,
            bytes_received=bytes_received,
            timestamp=at,
        )

    class ListeningStarted(Event):
        TOPIC = "voxledger:Conversation.ListeningStarted"

        def apply(self, c: Conversation) -> None:
            if c.status is Status.CONNECTED:
                c.status = Status.LISTENING
            c.audio = msgspec.structs.replace(c.audio, listening=True)

    def listen(self, *, at: datetime) -> None:
        """The microphone opens: the conversation listens for the user."""
        if self.audio.listening:
            raise InvalidTransition(f"conversation {self.id} is already listening")
        if self.status not in (Status.PROCESSING, Status.RESPONDING):
            self._require(Status.LISTENING)
        self.trigger_event(self.ListeningStarted, timestamp=at)

    class ListeningStopped(Event):
        TOPIC = "voxledger:Conversation.ListeningStopped"

        def apply(self, c: Conversation) -> None:
            if c.status is Status.LISTENING:
                c.status = Status.CONNECTED
            c.audio = msgspec.structs.replace(c.audio, listening=False, speech_active=False)

    def stop_listening(self, *, at: datetime) -> None:
        """The microphone closes."""
        if not self.audio.listening:
            raise InvalidTransition(f"conversation {self.id} is not listening")
        self.trigger_event(self.ListeningStopped, timestamp=at)

    class Ended(Event):
        TOPIC = "voxledger:Conversation.Ended"
        reason: str

        def apply(self, c: Conversation) -> None:
            c.status = Status.ENDED
            c.ended_at = self.timestamp
            c.end_reason = self.reason
            c._abandon_turn(self.timestamp)
            c.audio = msgspec.structs.replace(
                c.audio, listening=False, playing=False, speech_active=False
            )

    def end(self, reason: str = "", *, at: datetime) -> None:
        """Close the conversation for good; it takes no more commands."""
        self._require(Status.ENDED)
        self.trigger_event(self.Ended, reason=reason, timestamp=at)

    # -- messages and turns ----------------------------------------------------------------

    class MessageAdded(Event):
        TOPIC = "voxledger:Conversation.MessageAdded"
        PERSONAL = ("content", "metadata")
        message_id: str
        role: str
        content: str
        metadata: dict[str, Any]
        audio_duration_s: float | None
        complete: bool

        def apply(self, c: Conversation) -> None:
            c.message_positions[self.message_id] = len(c.messages)
            c.messages.append(
                Message(
                    id=self.message_id,
                    role=Role(self.role),
                    content=self.content,
                    at=self.timestamp,
                    metadata=dict(self.metadata),
                    audio_duration_s=self.audio_duration_s,
                    complete=self.complete,
                )
            )
            c.usage = msgspec.structs.replace(c.usage, messages=c.usage.messages + 1)
            if self.role == Role.ASSISTANT and c.current_turn_id is not None:
                turn = c._turn(c.current_turn_id)
                if turn.assistant_message_id is None:
                    c._replace_turn(turn.id, assistant_message_id=self.message_id)

    def add_message(
        self,
        message_id: str,
        role: Role | str,
        content: str,
        metadata: dict[str, Any] | None = None,
        audio_duration_s: float | None = None,
        *,
        complete: bool = True,
        at: datetime,
    ) -> None:
        """Record a message; an assistant message still streaming is added incomplete."""
        self._require_open()
        if role not in Role.__members__.values():
            raise ValidationFailed(f"role must be one of user, assistant, system, not {role!r}")
        if not message_id:
            raise ValidationFailed("a message needs an id")
        if self.has_message(message_id):
            raise ValidationFailed(f"message {message_id!r} is already recorded")
        _require_non_negative(audio_duration_s=audio_duration_s)
        self.trigger_event(
            self.MessageAdded,
            message_id=message_id,
            role=str(role),
            content=content,
            metadata=dict(metadata or {}),
            audio_duration_s=audio_duration_s,
            complete=complete,
            timestamp=at,
        )

    class MessageCompleted(Event):
        TOPIC = "voxledger:Conversation.MessageCompleted"
        PERSONAL = ("content",)
        message_id: str
        content: str | None

        def apply(self, c: Conversation) -> None:
            i = c._message_index(self.message_id)
            m = c.messages[i]
            content = m.content if self.content is None else self.content
            c.messages[i] = msgspec.structs.replace(m, complete=True, content=content)

    def complete_message(
        self, message_id: str, content: str | None = None, *, at: datetime
    ) -> None:
        """A streamed message is finished, optionally with its final content."""
        self._require_open()
        if self.messages[self._message_index(message_id)].complete:
            raise InvalidTransition(f"message {message_id!r} is already complete")
        self.trigger_event(
            self.MessageCompleted, message_id=message_id, content=content, timestamp=at
        )

    def has_message(self, message_id: str) -> bool:
        """True if a message with this id is recorded."""
        return message_id in self.message_positions

    def _message_index(self, message_id: str) -> int:
        try:
            return self.message_positions[message_id]
        except KeyError:
            raise NotFound(f"conversation {self.id} has no message {message_id!r}") from None

    class TurnStarted(Event):
        TOPIC = "voxledger:Conversation.TurnStarted"
        turn_id: str
        user_message_id: str | None

        def apply(self, c: Conversation) -> None:
            c.status = Status.PROCESSING
            c.turns.append(
                Turn(
                    id=self.turn_id, started_at=self.timestamp, user_message_id=self.user_message_id
                )
            )
            c.current_turn_id = self.turn_id

    def start_turn(self, turn_id: str, user_message_id: str | None = None, *, at: datetime) -> None:
        """The user has spoken or written: the assistant starts working on an answer."""
        if self.current_turn_id is not None:
            raise InvalidTransition(
                f"turn {self.current_turn_id!r} is still in progress in conversation {self.id}"
            )
        self._require(Status.PROCESSING)
        if any(t.id == turn_id for t in self.turns):
            raise ValidationFailed(f"turn {turn_id!r} is already recorded")
        if user_message_id is not None:
            self._message_index(user_message_id)
        self.trigger_event(
            self.TurnStarted, turn_id=turn_id, user_message_id=user_message_id, timestamp=at
        )

    class ResponseStarted(Event):
        TOPIC = "voxledger:Conversation.ResponseStarted"
        turn_id: str

        def apply(self, c: Conversation) -> None:
            c.status = Status.RESPONDING
            c.audio = msgspec.structs.replace(c.audio, playing=True)

    def start_response(self, *, at: datetime) -> None:
        """The assistant starts answering (speaking, or streaming text)."""
        self._require(Status.RESPONDING)
        turn_id = self._active_turn_id()
        self.trigger_event(self.ResponseStarted, turn_id=turn_id, timestamp=at)

    class TurnCompleted(Event):
        TOPIC = "voxledger:Conversation.TurnCompleted"
        turn_id: str
        assistant_message_id: str | None
        duration_ms: float
        status: str

        def apply(self, c: Conversation) -> None:
            turn = c._close_turn(
                self.turn_id, completed_at=self.timestamp, duration_ms=self.duration_ms
            )
            if self.assistant_message_id is not None:
                c._replace_turn(turn.id, assistant_message_id=self.assistant_message_id)
            c.status = Status(self.status)
            u = c.usage
            low, high = u.response_time_ms_min, u.response_time_ms_max
            c.usage = msgspec.structs.replace(
                u,
                turns=u.turns + 1,
                response_time_ms_total=u.response_time_ms_total + self.duration_ms,
                response_time_ms_min=self.duration_ms
                if low is None
                else min(low, self.duration_ms),
                response_time_ms_max=self.duration_ms
                if high is None
                else max(high, self.duration_ms),
            )

    def complete_turn(self, assistant_message_id: str | None = None, *, at: datetime) -> None:
        """The assistant has answered: the turn is over and its response time counts."""
        turn = self._turn(self._active_turn_id())
        if assistant_message_id is not None:
            self._message_index(assistant_message_id)
        resting = self._resting_status()
        self._require(resting)
        duration_ms = max(0.0, (at - turn.started_at).total_seconds() * 1000)
        self.trigger_event(
            self.TurnCompleted,
            turn_id=turn.id,
            assistant_message_id=assistant_message_id,
            duration_ms=duration_ms,
            status=str(resting),
            timestamp=at,
        )

    class TurnInterrupted(Event):
        TOPIC = "voxledger:Conversation.TurnInterrupted"
        turn_id: str
        reason: str
        status: str

        def apply(self, c: Conversation) -> None:
            turn = c._close_turn(self.turn_id, interrupted_at=self.timestamp)
            if turn.assistant_message_id is not None:
                i = c._message_index(turn.assistant_message_id)
                c.messages[i] = msgspec.structs.replace(c.messages[i], interrupted=True)
            c.status = Status(self.status)
            c.usage = msgspec.structs.replace(c.usage, interruptions=c.usage.interruptions + 1)

    def interrupt_turn(self, reason: str = "barge-in", *, at: datetime) -> None:
        """The user cut the assistant off (barge-in) or the turn was abandoned."""
        turn_id = self._active_turn_id()
        resting = self._resting_status()
        self._require(resting)
        self.trigger_event(
            self.TurnInterrupted, turn_id=turn_id, reason=reason, status=str(resting), timestamp=at
        )

    def _active_turn_id(self) -> str:
        if self.current_turn_id is None:
            raise InvalidTransition(f"conversation {self.id} has no turn in progress")
        return self.current_turn_id

    def _turn(self, turn_id: str) -> Turn:
        return next(t for t in reversed(self.turns) if t.id == turn_id)

    def _replace_turn(self, turn_id: str, **changes: Any) -> Turn:
        for i in range(len(self.turns) - 1, -1, -1):
            if self.turns[i].id == turn_id:
                self.turns[i] = msgspec.structs.replace(self.turns[i], **changes)
                return self.turns[i]
        raise NotFound(f"conversation {self.id} has no turn {turn_id!r}")

    def _close_turn(self, turn_id: str, **changes: Any) -> Turn:
        self.current_turn_id = None
        self.audio = msgspec.structs.replace(self.audio, playing=False)
        return self._replace_turn(turn_id, **changes)

    def _abandon_turn(self, at: datetime) -> None:
        """A turn cut short by a disconnect or the end is closed, not counted as a barge-in."""
        if self.current_turn_id is not None:
            self._close_turn(self.current_turn_id, interrupted_at=at)

    # -- audio -------------------------------------------------------------------------------

    class SpeechStarted(Event):
        TOPIC = "voxledger:Conversation.SpeechStarted"

        def apply(self, c: Conversation) -> None:
            c.audio = msgspec.structs.replace(c.audio, speech_active=True, silence_s=0.0)

    def record_speech_started(self, *, at: datetime) -> None:
        """The user started speaking."""
        self._require_listening()
        if self.audio.speech_active:
            raise InvalidTransition(f"speech is already active in conversation {self.id}")
        self.trigger_event(self.SpeechStarted, timestamp=at)

    class SpeechEnded(Event):
        TOPIC = "voxledger:Conversation.SpeechEnded"
        duration_s: float
        peak_dbfs: float | None
        mean_dbfs: float | None

        def apply(self, c: Conversation) -> None:
            c.audio = msgspec.structs.replace(
                c.audio,
                speech_active=False,
                last_speech_at=self.timestamp,
                input_level_db=self.mean_dbfs,
            )
            c.usage = msgspec.structs.replace(
                c.usage, audio_seconds=c.usage.audio_seconds + self.duration_s
            )

    def record_speech_ended(
        self,
        duration_s: float,
        peak_dbfs: float | None = None,
        mean_dbfs: float | None = None,
        *,
        at: datetime,
    ) -> None:
        """The user stopped speaking: an utterance of the given length and levels."""
        if not self.audio.speech_active:
            raise InvalidTransition(f"no speech is active in conversation {self.id}")
        _require_non_negative(duration_s=duration_s)
        self.trigger_event(
            self.SpeechEnded,
            duration_s=duration_s,
            peak_dbfs=peak_dbfs,
            mean_dbfs=mean_dbfs,
            timestamp=at,
        )

    class UserTurnEnded(Event):
        TOPIC = "voxledger:Conversation.UserTurnEnded"
        utterances: int

    def record_user_turn_ended(self, utterances: int, *, at: datetime) -> None:
        """The user finished their turn: the end-of-turn silence followed their last words."""
        self._require_listening()
        if self.audio.speech_active:
            raise InvalidTransition(f"the user is still speaking in conversation {self.id}")
        _require_non_negative(utterances=utterances)
        self.trigger_event(self.UserTurnEnded, utterances=utterances, timestamp=at)

    class SilenceDetected(Event):
        TOPIC = "voxledger:Conversation.SilenceDetected"
        silence_s: float

        def apply(self, c: Conversation) -> None:
            c.audio = msgspec.structs.replace(c.audio, silence_s=self.silence_s)
            c.usage = msgspec.structs.replace(c.usage, silences=c.usage.silences + 1)

    def record_silence(self, silence_s: float, *, at: datetime) -> None:
        """The user has said nothing for a while although the conversation listens."""
        self._require_listening()
        _require_non_negative(silence_s=silence_s)
        self.trigger_event(self.SilenceDetected, silence_s=silence_s, timestamp=at)

    class LevelsRecorded(Event):
        TOPIC = "voxledger:Conversation.LevelsRecorded"
        input_level_db: float | None
        output_level_db: float | None
        latency_ms: float | None

        def apply(self, c: Conversation) -> None:
            a = c.audio
            c.audio = msgspec.structs.replace(
                a,
                input_level_db=a.input_level_db
                if self.input_level_db is None
                else self.input_level_db,
                output_level_db=(
                    a.output_level_db if self.output_level_db is None else self.output_level_db
                ),
                latency_ms=a.latency_ms if self.latency_ms is None else self.latency_ms,
            )

    def record_levels(
        self,
        input_level_db: float | None = None,
        output_level_db: float | None = None,
        latency_ms: float | None = None,
        *,
        at: datetime,
    ) -> None:
        """Audio levels (dBFS) and latency measured by the audio pipeline."""
        self._require_open()
        _require_non_negative(latency_ms=latency_ms)
        self.trigger_event(
            self.LevelsRecorded,
            input_level_db=input_level_db,
            output_level_db=output_level_db,
            latency_ms=latency_ms,
            timestamp=at,
        )

    def _require_listening(self) -> None:
        self._require_open()
        if not self.audio.listening:
            raise InvalidTransition(f"conversation {self.id} is not listening")

    # -- usage and context -----------------------------------------------------------------

    class UsageRecorded(Event):
        TOPIC = "voxledger:Conversation.UsageRecorded"
        tokens_in: int
        tokens_out: int
        cost: float
        audio_seconds: float

        def apply(self, c: Conversation) -> None:
            u = c.usage
            c.usage = msgspec.structs.replace(
                u,
                tokens_in=u.tokens_in + self.tokens_in,
                tokens_out=u.tokens_out + self.tokens_out,
                cost=u.cost + self.cost,
                audio_seconds=u.audio_seconds + self.audio_seconds,
            )

    def record_usage(
        self,
        *,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost: float = 0.0,
        audio_seconds: float = 0.0,
        at: datetime,
    ) -> None:
        """Tokens, estimated cost and synthesised audio spent by the assistant."""
        self._require_open()
        _require_non_negative(
            tokens_in=tokens_in, tokens_out=tokens_out, cost=cost, audio_seconds=audio_seconds
        )
        self.trigger_event(
            self.UsageRecorded,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=cost,
            audio_seconds=audio_seconds,
            timestamp=at,
        )

    class ContextUpdated(Event):
        TOPIC = "voxledger:Conversation.ContextUpdated"
        PERSONAL = ("values",)
        values: dict[str, Any]
        removed: list[str]

        def apply(self, c: Conversation) -> None:
            c.context.update(self.values)
            for key in self.removed:
                c.context.pop(key, None)

    def update_context(
        self,
        values: dict[str, Any] | None = None,
        removed: list[str] | None = None,
        *,
        at: datetime,
    ) -> None:
        """Set and remove key/value facts the bot keeps about the conversation."""
        self._require_open()
        values, removed = dict(values or {}), list(removed or [])
        if not values and not removed:
            raise ValidationFailed("a context update needs values or keys to remove")
        if set(values) & set(removed):
            raise ValidationFailed("a context key cannot be set and removed at once")
        self.trigger_event(self.ContextUpdated, values=values, removed=removed, timestamp=at)

    # -- flows ---------------------------------------------------------------------------------

    class FlowBegan(Event):
        TOPIC = "voxledger:Conversation.FlowBegan"
        flow_id: UUID
        definition: str

        def apply(self, c: Conversation) -> None:
            c.active_flow_id = self.flow_id

    def begin_flow(self, flow_id: UUID, definition: str, *, at: datetime) -> None:
        """A form starts in this conversation; one at a time."""
        self._require_open()
        if self.active_flow_id is not None:
            raise InvalidTransition(
                f"flow {self.active_flow_id} is still running in conversation {self.id}; "
                "finish or cancel it first"
            )
        self.trigger_event(self.FlowBegan, flow_id=flow_id, definition=definition, timestamp=at)

    class FlowFinished(Event):
        TOPIC = "voxledger:Conversation.FlowFinished"
        flow_id: UUID
        outcome: str

        def apply(self, c: Conversation) -> None:
            c.active_flow_id = None

    def finish_flow(self, flow_id: UUID, outcome: str, *, at: datetime) -> None:
        """The conversation's form completed, was cancelled or expired."""
        if self.active_flow_id != flow_id:
            raise InvalidTransition(f"flow {flow_id} is not running in conversation {self.id}")
        self.trigger_event(self.FlowFinished, flow_id=flow_id, outcome=outcome, timestamp=at)

    # -- the state as a value ----------------------------------------------------------------

    def state(self) -> ConversationState:
        """The conversation as an immutable value."""
        return ConversationState(
            id=self.id,
            version=self.version,
            status=self.status,
            channel=self.channel,
            participant=self.participant,
            started_at=self.created_on,
            updated_at=self.modified_on,
            connection=self.connection,
            audio=self.audio,
            usage=self.usage,
            messages=tuple(self.messages),
            turns=tuple(self.turns),
            current_turn_id=self.current_turn_id,
            context=dict(self.context),
            metadata=dict(self.metadata),
            ended_at=self.ended_at,
            end_reason=self.end_reason,
            active_flow_id=self.active_flow_id,
        )

    @classmethod
    def from_state(cls, s: ConversationState) -> Conversation:
        """Rebuild the aggregate from a state value (how snapshots load)."""
        c = object.__new__(cls)
        c.__base_init__(s.id, s.version, s.started_at)
        c.modified_on = s.updated_at
        c.channel, c.participant, c.metadata = s.channel, s.participant, dict(s.metadata)
        c.status = s.status
        c.connection, c.audio, c.usage = s.connection, s.audio, s.usage
        c.messages, c.turns = list(s.messages), list(s.turns)
        c.message_positions = {m.id: i for i, m in enumerate(s.messages)}
        c.current_turn_id = s.current_turn_id
        c.context = dict(s.context)
        c.ended_at, c.end_reason = s.ended_at, s.end_reason
        c.active_flow_id = s.active_flow_id
        return c


class ConversationSnapshot(Aggregate.Snapshot):
    """A conversation's whole state at one version, so long streams load fast."""

    TOPIC = "voxledger:Conversation.Snapshot"
    PERSONAL = ("state",)  # the whole state: messages, context, participant
    state: ConversationState  # type: ignore[assignment]

    @classmethod
    def take(cls, aggregate: Conversation) -> ConversationSnapshot:  # type: ignore[override]
        """Snapshot the conversation as it is now."""
        return cls(
            originator_id=aggregate.id,
            originator_version=aggregate.version,
            timestamp=aggregate.modified_on,
            topic=cls.TOPIC,
            state=aggregate.state(),
        )

    def mutate(self, _: None) -> Conversation:  # type: ignore[override]
        """Rebuild the conversation from the snapshot."""
        return Conversation.from_state(self.state)


Conversation.Snapshot = ConversationSnapshot  # type: ignore[misc]
register_topic(ConversationSnapshot.TOPIC, ConversationSnapshot)


def _require_non_negative(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and value < 0:
            raise ValidationFailed(f"{name} must not be negative, got {value}")
