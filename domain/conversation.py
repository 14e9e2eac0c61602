"""The Conversation aggregate: one chat or voice session, every change a recorded event.

Each event class declares its fields once; a command guards, then records its event with
the values of those fields (`trigger`). An event's ``apply`` only assigns, and each event
says which status it leaves the conversation in (`status_after`), for the aggregate and the
read models alike. Times come in with each command (``at``), so replaying the events always
rebuilds the same state. The values it holds are in conversation_values.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from .conversation_snapshot import ConversationSnapshot
from .conversation_values import (
    ROLES,
    STATUS_RANK,
    TRANSITIONS,
    Address,
    Audio,
    Connection,
    ConversationState,
    DeliveryStatus,
    Message,
    Outbound,
    OutboundKind,
    Role,
    Status,
    Turn,
    Usage,
)
from .errors import InvalidTransition, NotFound, ValidationFailed
from .events import data_of, status_events, trigger

replace = msgspec.structs.replace


class Conversation(Aggregate):
    """A chat or voice conversation: its lifecycle, messages, turns, audio and usage."""

    TOPIC = "voxledger:Conversation"
    Snapshot = ConversationSnapshot

    class Event(Aggregate.Event):
        TOPIC = "voxledger:Conversation.Event"

        def status_after(self, status: Status) -> Status:
            """The conversation's status after this event (most leave it as it was). The
            status may come as its text value, as the read models keep it."""
            return status

    class Started(Aggregate.Created):
        TOPIC = "voxledger:Conversation.Started"
        PERSONAL = ("participant", "metadata")
        channel: str
        participant: str | None
        metadata: dict[str, Any]

        def status_after(self, status: Status | None) -> Status:
            return Status.IDLE

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
        self.outbox: dict[str, Outbound] = {}  # by id, in the order queued
        self.address: Address | None = None
        self.keyboards: list[str] = []
        self.sent: dict[str, str] = {}
        self.notices: list[str] = []

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
        data = data_of(cls.Started, channel, participant, dict(metadata or {}))
        return cls._create(cls.Started, id=conversation_id, timestamp=at, **data)

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

        def status_after(self, status: Status) -> Status:
            return Status.CONNECTING

        def apply(self, c: Conversation) -> None:
            c.status = self.status_after(c.status)
            c.connection = replace(c.connection, provider=self.provider)

    def begin_connecting(self, provider: str, *, at: datetime) -> None:
        """The transport starts to connect."""
        self._require(Status.CONNECTING)
        trigger(self, self.ConnectionOpening, provider, at=at)

    class Connected(Event):
        TOPIC = "voxledger:Conversation.Connected"
        provider: str
        connection_id: str
        latency_ms: float | None
        reconnect: bool

        def status_after(self, status: Status) -> Status:
            return Status.CONNECTED

        def apply(self, c: Conversation) -> None:
            c.status = self.status_after(c.status)
            c.connection = replace(
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
        reconnect = self.connection.connected_at is not None
        trigger(self, self.Connected, provider, connection_id, latency_ms, reconnect, at=at)

    class Disconnected(Event):
        TOPIC = "voxledger:Conversation.Disconnected"
        PERSONAL = ("reason",)  # free text: it may say anything about anyone
        REDACTED_IF_ERASED = ("reason",)
        reason: str

        def status_after(self, status: Status) -> Status:
            return Status.DISCONNECTED

        def apply(self, c: Conversation) -> None:
            c._abandon_turn(self.timestamp)
            c.status = self.status_after(c.status)
            c.audio = replace(c.audio, listening=False, playing=False, speech_active=False)

    def disconnect(self, reason: str = "", *, at: datetime) -> None:
        """The transport went away; the conversation may reconnect later."""
        self._require(Status.DISCONNECTED)
        trigger(self, self.Disconnected, reason, at=at)

    class ErrorRecorded(Event):
        TOPIC = "voxledger:Conversation.ErrorRecorded"
        PERSONAL = ("error",)  # an error text may quote what was said
        REDACTED_IF_ERASED = ("error",)
        error: str
        fatal: bool

        def status_after(self, status: Status) -> Status:
            return Status.ERROR if self.fatal else status

        def apply(self, c: Conversation) -> None:
            if self.fatal:
                c._abandon_turn(self.timestamp)
            c.status = self.status_after(c.status)
            c.connection = replace(
                c.connection, last_error=self.error, error_count=c.connection.error_count + 1
            )

    def record_error(self, error: str, *, fatal: bool = False, at: datetime) -> None:
        """Something went wrong; a fatal error moves the conversation to the error status."""
        if fatal:
            self._require(Status.ERROR)
        else:
            self._require_open()
        trigger(self, self.ErrorRecorded, error, fatal, at=at)

    class TrafficRecorded(Event):
        TOPIC = "voxledger:Conversation.TrafficRecorded"
        messages_sent: int
        messages_received: int
        bytes_sent: int
        bytes_received: int

        def apply(self, c: Conversation) -> None:
            k = c.connection
            c.connection = replace(
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
        counts = (messages_sent, messages_received, bytes_sent, bytes_received)
        _require_non_negative(**data_of(self.TrafficRecorded, *counts))
        trigger(self, self.TrafficRecorded, *counts, at=at)

    class ListeningStarted(Event):
        TOPIC = "voxledger:Conversation.ListeningStarted"

        def status_after(self, status: Status) -> Status:
            return Status.LISTENING if status == Status.CONNECTED else status

        def apply(self, c: Conversation) -> None:
            c.status = self.status_after(c.status)
            c.audio = replace(c.audio, listening=True)

    def listen(self, *, at: datetime) -> None:
        """The microphone opens: the conversation listens for the user."""
        if self.audio.listening:
            raise InvalidTransition(f"conversation {self.id} is already listening")
        if self.status not in (Status.PROCESSING, Status.RESPONDING):
            self._require(Status.LISTENING)
        trigger(self, self.ListeningStarted, at=at)

    class ListeningStopped(Event):
        TOPIC = "voxledger:Conversation.ListeningStopped"

        def status_after(self, status: Status) -> Status:
            return Status.CONNECTED if status == Status.LISTENING else status

        def apply(self, c: Conversation) -> None:
            c.status = self.status_after(c.status)
            c.audio = replace(c.audio, listening=False, speech_active=False)

    def stop_listening(self, *, at: datetime) -> None:
        """The microphone closes."""
        if not self.audio.listening:
            raise InvalidTransition(f"conversation {self.id} is not listening")
        trigger(self, self.ListeningStopped, at=at)

    class Ended(Event):
        TOPIC = "voxledger:Conversation.Ended"
        PERSONAL = ("reason",)
        REDACTED_IF_ERASED = ("reason",)
        reason: str

        def status_after(self, status: Status) -> Status:
            return Status.ENDED

        def apply(self, c: Conversation) -> None:
            c.status = self.status_after(c.status)
            c.ended_at = self.timestamp
            c.end_reason = self.reason
            c._abandon_turn(self.timestamp)
            c.audio = replace(c.audio, listening=False, playing=False, speech_active=False)

    def end(self, reason: str = "", *, at: datetime) -> None:
        """Close the conversation for good; it takes no more commands."""
        self._require(Status.ENDED)
        trigger(self, self.Ended, reason, at=at)

    def end_idle(self, limit_s: float, *, at: datetime) -> None:
        """End a conversation that has been idle longer than ``limit_s`` seconds at ``at``."""
        if not self.is_idle_at(at, limit_s):
            raise InvalidTransition(f"conversation {self.id} is not idle past {limit_s:g} s")
        idle_s = (at - self.modified_on).total_seconds()
        self.end(f"expired after {idle_s:.0f} s idle", at=at)

    def is_idle_at(self, at: datetime, limit_s: float) -> bool:
        """True if the conversation has not ended and nothing happened in it for longer
        than ``limit_s`` seconds before ``at``."""
        return self.status is not Status.ENDED and (at - self.modified_on).total_seconds() > limit_s

    # -- messages and turns ----------------------------------------------------------------

    class MessageAdded(Event):
        TOPIC = "voxledger:Conversation.MessageAdded"
        # A message id may be the client's own (an API caller's, a channel's): sealed too.
        PERSONAL = ("message_id", "content", "metadata")
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
                    role=ROLES[self.role],
                    content=self.content,
                    at=self.timestamp,
                    metadata=dict(self.metadata),
                    audio_duration_s=self.audio_duration_s,
                    complete=self.complete,
                )
            )
            c.usage = replace(c.usage, messages=c.usage.messages + 1)
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
        if not isinstance(role, str) or role not in ROLES:
            raise ValidationFailed(f"role must be one of user, assistant, system, not {role!r}")
        if not message_id:
            raise ValidationFailed("a message needs an id")
        if self.has_message(message_id):
            raise ValidationFailed(f"message {message_id!r} is already recorded")
        _require_non_negative(audio_duration_s=audio_duration_s)
        metadata = dict(metadata or {})
        said = (message_id, str(role), content, metadata, audio_duration_s, complete)
        trigger(self, self.MessageAdded, *said, at=at)

    class MessageCompleted(Event):
        TOPIC = "voxledger:Conversation.MessageCompleted"
        PERSONAL = ("message_id", "content")
        REDACTED_IF_ERASED = ("message_id",)
        message_id: str
        content: str | None

        def apply(self, c: Conversation) -> None:
            i = c._message_index(self.message_id)
            m = c.messages[i]
            content = m.content if self.content is None else self.content
            c.messages[i] = replace(m, complete=True, content=content)

    def complete_message(
        self, message_id: str, content: str | None = None, *, at: datetime
    ) -> None:
        """A streamed message is finished, optionally with its final content."""
        self._require_open()
        if self.messages[self._message_index(message_id)].complete:
            raise InvalidTransition(f"message {message_id!r} is already complete")
        trigger(self, self.MessageCompleted, message_id, content, at=at)

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
        PERSONAL = ("user_message_id",)
        REDACTED_IF_ERASED = ("user_message_id",)
        turn_id: str
        user_message_id: str | None

        def status_after(self, status: Status) -> Status:
            return Status.PROCESSING

        def apply(self, c: Conversation) -> None:
            c.status = self.status_after(c.status)
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
        trigger(self, self.TurnStarted, turn_id, user_message_id, at=at)

    class ResponseStarted(Event):
        TOPIC = "voxledger:Conversation.ResponseStarted"
        turn_id: str

        def status_after(self, status: Status) -> Status:
            return Status.RESPONDING

        def apply(self, c: Conversation) -> None:
            c.status = self.status_after(c.status)
            c.audio = replace(c.audio, playing=True)

    def start_response(self, *, at: datetime) -> None:
        """The assistant starts answering (speaking, or streaming text)."""
        self._require(Status.RESPONDING)
        trigger(self, self.ResponseStarted, self._active_turn_id(), at=at)

    class TurnCompleted(Event):
        TOPIC = "voxledger:Conversation.TurnCompleted"
        PERSONAL = ("assistant_message_id",)
        REDACTED_IF_ERASED = ("assistant_message_id",)
        turn_id: str
        assistant_message_id: str | None
        duration_ms: float
        status: str  # where the conversation rests afterwards

        def status_after(self, status: Status) -> Status:
            return Status(self.status)

        def apply(self, c: Conversation) -> None:
            turn = c._close_turn(
                self.turn_id, completed_at=self.timestamp, duration_ms=self.duration_ms
            )
            if self.assistant_message_id is not None:
                c._replace_turn(turn.id, assistant_message_id=self.assistant_message_id)
            c.status = self.status_after(c.status)
            u = c.usage
            low, high = u.response_time_ms_min, u.response_time_ms_max
            c.usage = replace(
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
        done = (turn.id, assistant_message_id, duration_ms, str(resting))
        trigger(self, self.TurnCompleted, *done, at=at)

    class TurnInterrupted(Event):
        TOPIC = "voxledger:Conversation.TurnInterrupted"
        PERSONAL = ("reason",)
        REDACTED_IF_ERASED = ("reason",)
        turn_id: str
        reason: str
        status: str  # where the conversation rests afterwards

        def status_after(self, status: Status) -> Status:
            return Status(self.status)

        def apply(self, c: Conversation) -> None:
            turn = c._close_turn(self.turn_id, interrupted_at=self.timestamp)
            if turn.assistant_message_id is not None:
                i = c._message_index(turn.assistant_message_id)
                c.messages[i] = replace(c.messages[i], interrupted=True)
            c.status = self.status_after(c.status)
            c.usage = replace(c.usage, interruptions=c.usage.interruptions + 1)

    def interrupt_turn(self, reason: str = "barge-in", *, at: datetime) -> None:
        """The user cut the assistant off (barge-in) or the turn was abandoned."""
        turn_id = self._active_turn_id()
        resting = self._resting_status()
        self._require(resting)
        trigger(self, self.TurnInterrupted, turn_id, reason, str(resting), at=at)

    def _active_turn_id(self) -> str:
        if self.current_turn_id is None:
            raise InvalidTransition(f"conversation {self.id} has no turn in progress")
        return self.current_turn_id

    def _turn(self, turn_id: str) -> Turn:
        return next(t for t in reversed(self.turns) if t.id == turn_id)

    def _replace_turn(self, turn_id: str, **changes: Any) -> Turn:
        for i in range(len(self.turns) - 1, -1, -1):
            if self.turns[i].id == turn_id:
                self.turns[i] = replace(self.turns[i], **changes)
                return self.turns[i]
        raise NotFound(f"conversation {self.id} has no turn {turn_id!r}")

    def _close_turn(self, turn_id: str, **changes: Any) -> Turn:
        self.current_turn_id = None
        self.audio = replace(self.audio, playing=False)
        return self._replace_turn(turn_id, **changes)

    def _abandon_turn(self, at: datetime) -> None:
        """A turn cut short by a disconnect or the end is closed, not counted as a barge-in."""
        if self.current_turn_id is not None:
            self._close_turn(self.current_turn_id, interrupted_at=at)

    # -- audio -------------------------------------------------------------------------------

    class SpeechStarted(Event):
        TOPIC = "voxledger:Conversation.SpeechStarted"

        def apply(self, c: Conversation) -> None:
            c.audio = replace(c.audio, speech_active=True, silence_s=0.0)

    def record_speech_started(self, *, at: datetime) -> None:
        """The user started speaking."""
        self._require_listening()
        if self.audio.speech_active:
            raise InvalidTransition(f"speech is already active in conversation {self.id}")
        trigger(self, self.SpeechStarted, at=at)

    class SpeechEnded(Event):
        TOPIC = "voxledger:Conversation.SpeechEnded"
        duration_s: float
        peak_dbfs: float | None
        mean_dbfs: float | None

        def apply(self, c: Conversation) -> None:
            c.audio = replace(
                c.audio,
                speech_active=False,
                last_speech_at=self.timestamp,
                input_level_db=self.mean_dbfs,
            )
            c.usage = replace(c.usage, audio_seconds=c.usage.audio_seconds + self.duration_s)

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
        trigger(self, self.SpeechEnded, duration_s, peak_dbfs, mean_dbfs, at=at)

    class UserTurnEnded(Event):
        TOPIC = "voxledger:Conversation.UserTurnEnded"
        utterances: int

    def record_user_turn_ended(self, utterances: int, *, at: datetime) -> None:
        """The user finished their turn: the end-of-turn silence followed their last words."""
        self._require_listening()
        if self.audio.speech_active:
            raise InvalidTransition(f"the user is still speaking in conversation {self.id}")
        _require_non_negative(utterances=utterances)
        trigger(self, self.UserTurnEnded, utterances, at=at)

    class SilenceDetected(Event):
        TOPIC = "voxledger:Conversation.SilenceDetected"
        silence_s: float

        def apply(self, c: Conversation) -> None:
            c.audio = replace(c.audio, silence_s=self.silence_s)
            c.usage = replace(c.usage, silences=c.usage.silences + 1)

    def record_silence(self, silence_s: float, *, at: datetime) -> None:
        """The user has said nothing for a while although the conversation listens."""
        self._require_listening()
        _require_non_negative(silence_s=silence_s)
        trigger(self, self.SilenceDetected, silence_s, at=at)

    class LevelsRecorded(Event):
        TOPIC = "voxledger:Conversation.LevelsRecorded"
        input_level_db: float | None
        output_level_db: float | None
        latency_ms: float | None

        def apply(self, c: Conversation) -> None:
            a = c.audio
            c.audio = replace(
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
        trigger(self, self.LevelsRecorded, input_level_db, output_level_db, latency_ms, at=at)

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
            c.usage = replace(
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
        spent = (tokens_in, tokens_out, cost, audio_seconds)
        _require_non_negative(**data_of(self.UsageRecorded, *spent))
        trigger(self, self.UsageRecorded, *spent, at=at)

    class ContextUpdated(Event):
        TOPIC = "voxledger:Conversation.ContextUpdated"
        PERSONAL = ("values", "removed")  # a key's name may say as much as its value
        REDACTED_IF_ERASED = ("removed",)
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
        trigger(self, self.ContextUpdated, values, removed, at=at)

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
        trigger(self, self.FlowBegan, flow_id, definition, at=at)

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
        trigger(self, self.FlowFinished, flow_id, outcome, at=at)

    # -- the outbox: what the bot decided to send, and how its delivery went ------------------

    class OutboundQueued(Event):
        TOPIC = "voxledger:Conversation.OutboundQueued"
        PERSONAL = ("to", "text")  # the chat's address, and words that may quote the user
        item_id: str
        kind: str
        channel: str
        to: str
        thread: str | None
        text: str
        choices: list[str]
        reply_to: str | None
        reference: str | None
        cause: str

        def apply(self, c: Conversation) -> None:
            address = Address(self.to, self.thread)
            c.outbox[self.item_id] = Outbound(
                id=self.item_id,
                kind=OutboundKind(self.kind),
                channel=self.channel,
                address=address,
                text=self.text,
                queued_at=self.timestamp,
                cause=self.cause,
                choices=tuple(self.choices),
                reply_to=self.reply_to,
                reference=self.reference,
            )
            c.address = address
            if self.kind == OutboundKind.CLOSE_KEYBOARD and self.reference in c.keyboards:
                c.keyboards.remove(self.reference)
            if self.kind == OutboundKind.NOTICE:
                c.notices = [*c.notices[-(KEPT - 1) :], self.cause]

    def queue_outbound(
        self,
        item_id: str,
        kind: OutboundKind | str,
        address: Address,
        text: str = "",
        choices: tuple[str, ...] | list[str] = (),
        *,
        reply_to: str | None = None,
        reference: str | None = None,
        cause: str,
        at: datetime,
    ) -> None:
        """Record something to send on the conversation's channel: it is delivered after the
        save that records it, and only then (the outbox is the log)."""
        self._require_open()
        kind = OutboundKind(kind)
        if not item_id:
            raise ValidationFailed("an outbound message needs an id")
        if item_id in self.outbox:
            raise ValidationFailed(f"outbound {item_id!r} is already queued")
        if kind in (OutboundKind.REPLY, OutboundKind.NOTICE) and not text.strip():
            raise ValidationFailed(f"a {kind} needs text")
        if kind is not OutboundKind.REPLY and kind is not OutboundKind.NOTICE and not reference:
            raise ValidationFailed(f"a {kind} names what it is about (a reference)")
        said = (item_id, str(kind), self.channel, address.to, address.thread, text, list(choices))
        trigger(self, self.OutboundQueued, *said, reply_to, reference, cause, at=at)

    class OutboundDelivered(Event):
        TOPIC = "voxledger:Conversation.OutboundDelivered"
        item_id: str
        platform_ids: list[str]  # the channel's ids of what it took (a long text in parts)
        complete: bool  # False: parts remain to be sent

        def apply(self, c: Conversation) -> None:
            item = c.outbox[self.item_id]
            parts = (*item.sent_parts, *self.platform_ids)
            if not self.complete:
                c.outbox[self.item_id] = replace(item, sent_parts=parts)
                return
            del c.outbox[self.item_id]
            for platform_id in parts:
                c.sent[platform_id] = DeliveryStatus.SENT
            while len(c.sent) > KEPT_SENT:
                del c.sent[next(iter(c.sent))]
            if item.choices and parts:
                c.keyboards = [*c.keyboards[-(KEPT - 1) :], parts[-1]]

    def record_delivered(
        self, item_id: str, platform_ids: list[str], *, complete: bool = True, at: datetime
    ) -> None:
        """The channel took an outbound message (or, with ``complete`` false, the next parts
        of it); its delivery is over once complete."""
        self._require_pending(item_id)
        trigger(self, self.OutboundDelivered, item_id, list(platform_ids), complete, at=at)

    class OutboundFailed(Event):
        TOPIC = "voxledger:Conversation.OutboundFailed"
        item_id: str
        reason: str
        code: int | None
        final: bool  # True: given up; False: to be tried again

        def apply(self, c: Conversation) -> None:
            item = c.outbox[self.item_id]
            if self.final:
                del c.outbox[self.item_id]
            else:
                c.outbox[self.item_id] = replace(
                    item, attempts=item.attempts + 1, last_error=self.reason
                )

    def record_delivery_failure(
        self, item_id: str, reason: str, code: int | None = None, *, final: bool, at: datetime
    ) -> None:
        """An attempt to send an outbound message failed: for good (``final``: the channel
        refused it, or it was tried long enough), or to be tried again."""
        self._require_pending(item_id)
        if not reason:
            raise ValidationFailed("a failed delivery needs a reason")
        trigger(self, self.OutboundFailed, item_id, reason, code, final, at=at)

    class DeliveryStatusReported(Event):
        TOPIC = "voxledger:Conversation.DeliveryStatusReported"
        platform_id: str
        status: str
        code: int | None
        reason: str

        def apply(self, c: Conversation) -> None:
            c.sent[self.platform_id] = self.status

    def record_delivery_status(
        self,
        platform_id: str,
        status: DeliveryStatus | str,
        code: int | None = None,
        reason: str = "",
        *,
        at: datetime,
    ) -> None:
        """The channel reported what became of a message it took (sent, delivered, read,
        failed); a report that would move it back is refused."""
        status = DeliveryStatus(status)
        if not self.status_moves_on(platform_id, status):
            raise InvalidTransition(
                f"message {platform_id!r} of conversation {self.id} is not known, or is "
                f"already past {status}"
            )
        trigger(self, self.DeliveryStatusReported, platform_id, str(status), code, reason, at=at)

    def status_moves_on(self, platform_id: str, status: DeliveryStatus) -> bool:
        """True if the message was sent from here and the status is further along than
        what is known of it."""
        known = self.sent.get(platform_id)
        return known is not None and STATUS_RANK[status] > STATUS_RANK[DeliveryStatus(known)]

    def is_pending(self, item_id: str) -> bool:
        """True if the outbound message is queued and its delivery has not ended."""
        return item_id in self.outbox

    def _require_pending(self, item_id: str) -> None:
        if item_id not in self.outbox:
            raise InvalidTransition(f"conversation {self.id} has no outbound {item_id!r} pending")

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
            outbox=tuple(self.outbox.values()),
            address=self.address,
            keyboards=tuple(self.keyboards),
            sent=dict(self.sent),
            notices=tuple(self.notices),
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
        c.outbox = {item.id: item for item in s.outbox}
        c.address = s.address
        c.keyboards, c.sent, c.notices = list(s.keyboards), dict(s.sent), list(s.notices)
        return c


# How many of the latest keyboards and notices, and of the platform's message ids, a
# conversation keeps: what a later message or status report can still refer to.
KEPT = 20
KEPT_SENT = 200

# The events that may leave the conversation in another status than it was in (read models
# follow the status through these alone).
STATUS_EVENTS = status_events(Conversation)


def _require_non_negative(**values: float | None) -> None:
    for name, value in values.items():
        if value is not None and value < 0:
            raise ValidationFailed(f"{name} must not be negative, got {value}")
