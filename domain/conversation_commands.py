"""The Engine's commands on a conversation: one short method each, which loads the
conversation, calls its command method and saves (see commands.py for how)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import Aggregate

from .commands import Commands, check_values
from .conversation import Conversation
from .conversation_values import Role
from .errors import Conflict


class ConversationCommands(Commands):
    """Start a conversation, then record what happens in it, by id."""

    def start_conversation(
        self,
        channel: str,
        participant: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        conversation_id: UUID | None = None,
        at: datetime | None = None,
    ) -> UUID:
        """Open a conversation and return its id (give one to make the start idempotent)."""
        check_values(channel, participant, metadata)
        conversation = Conversation.start(
            channel,
            participant,
            metadata,
            at=self._now(at),
            conversation_id=conversation_id or uuid4(),
        )
        try:
            self.store.save(conversation, command_id=uuid4())
        except Conflict:
            raise Conflict(f"conversation {conversation.id} already exists") from None
        return conversation.id

    def begin_connecting(
        self, conversation_id: UUID, provider: str, *, at: datetime | None = None
    ) -> None:
        """The transport starts to connect."""
        self._update(conversation_id, Conversation.begin_connecting, provider, at=at)

    def connect(
        self,
        conversation_id: UUID,
        provider: str,
        connection_id: str,
        latency_ms: float | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """The transport is up."""
        self._update(
            conversation_id, Conversation.connect, provider, connection_id, latency_ms, at=at
        )

    def disconnect(
        self, conversation_id: UUID, reason: str = "", *, at: datetime | None = None
    ) -> None:
        """The transport went away."""
        self._update(conversation_id, Conversation.disconnect, reason, at=at)

    def record_error(
        self, conversation_id: UUID, error: str, *, fatal: bool = False, at: datetime | None = None
    ) -> None:
        """Record an error; a fatal one moves the conversation to the error status."""
        self._update(conversation_id, Conversation.record_error, error, fatal=fatal, at=at)

    def record_traffic(
        self, conversation_id: UUID, *, at: datetime | None = None, **counts: int
    ) -> None:
        """Count messages and bytes sent and received over the transport."""
        self._update(conversation_id, Conversation.record_traffic, at=at, **counts)

    def listen(self, conversation_id: UUID, *, at: datetime | None = None) -> None:
        """The microphone opens."""
        self._update(conversation_id, Conversation.listen, at=at)

    def stop_listening(self, conversation_id: UUID, *, at: datetime | None = None) -> None:
        """The microphone closes."""
        self._update(conversation_id, Conversation.stop_listening, at=at)

    def add_message(
        self,
        conversation_id: UUID,
        role: Role | str,
        content: str,
        *,
        message_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        audio_duration_s: float | None = None,
        complete: bool = True,
        at: datetime | None = None,
    ) -> str:
        """Record a message and return its id."""
        self._check_content(content)
        message_id = message_id or uuid4().hex
        self._update(
            conversation_id,
            Conversation.add_message,
            message_id,
            role,
            content,
            metadata,
            audio_duration_s,
            complete=complete,
            at=at,
        )
        return message_id

    def complete_message(
        self,
        conversation_id: UUID,
        message_id: str,
        content: str | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """A streamed message is finished."""
        if content is not None:
            self._check_content(content)
        self._update(conversation_id, Conversation.complete_message, message_id, content, at=at)

    def start_turn(
        self,
        conversation_id: UUID,
        user_message_id: str | None = None,
        *,
        turn_id: str | None = None,
        at: datetime | None = None,
    ) -> str:
        """The assistant starts working on an answer; returns the turn id."""
        turn_id = turn_id or uuid4().hex
        self._update(conversation_id, Conversation.start_turn, turn_id, user_message_id, at=at)
        return turn_id

    def start_response(self, conversation_id: UUID, *, at: datetime | None = None) -> None:
        """The assistant starts answering."""
        self._update(conversation_id, Conversation.start_response, at=at)

    def complete_turn(
        self,
        conversation_id: UUID,
        assistant_message_id: str | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """The assistant has answered; the turn's response time is counted."""
        self._update(conversation_id, Conversation.complete_turn, assistant_message_id, at=at)

    def interrupt_turn(
        self, conversation_id: UUID, reason: str = "barge-in", *, at: datetime | None = None
    ) -> None:
        """The user cut the assistant off."""
        self._update(conversation_id, Conversation.interrupt_turn, reason, at=at)

    def record_speech_started(self, conversation_id: UUID, *, at: datetime | None = None) -> None:
        """The user started speaking."""
        self._update(conversation_id, Conversation.record_speech_started, at=at)

    def record_speech_ended(
        self,
        conversation_id: UUID,
        duration_s: float,
        peak_dbfs: float | None = None,
        mean_dbfs: float | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """The user stopped speaking."""
        self._update(
            conversation_id,
            Conversation.record_speech_ended,
            duration_s,
            peak_dbfs,
            mean_dbfs,
            at=at,
        )

    def record_user_turn_ended(
        self, conversation_id: UUID, utterances: int = 1, *, at: datetime | None = None
    ) -> None:
        """The user finished their turn."""
        self._update(conversation_id, Conversation.record_user_turn_ended, utterances, at=at)

    def record_silence(
        self, conversation_id: UUID, silence_s: float, *, at: datetime | None = None
    ) -> None:
        """The user has been silent while the conversation listens."""
        self._update(conversation_id, Conversation.record_silence, silence_s, at=at)

    def record_levels(
        self,
        conversation_id: UUID,
        input_level_db: float | None = None,
        output_level_db: float | None = None,
        latency_ms: float | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """Audio levels and latency."""
        self._update(
            conversation_id,
            Conversation.record_levels,
            input_level_db,
            output_level_db,
            latency_ms,
            at=at,
        )

    def record_usage(
        self,
        conversation_id: UUID,
        *,
        tokens_in: int = 0,
        tokens_out: int = 0,
        cost: float = 0.0,
        audio_seconds: float = 0.0,
        at: datetime | None = None,
    ) -> None:
        """Tokens, cost and synthesised audio spent by the assistant."""
        self._update(
            conversation_id,
            Conversation.record_usage,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            cost=cost,
            audio_seconds=audio_seconds,
            at=at,
        )

    def update_context(
        self,
        conversation_id: UUID,
        values: dict[str, Any] | None = None,
        removed: Sequence[str] = (),
        *,
        at: datetime | None = None,
    ) -> None:
        """Set and remove context keys (JSON-like values, within the size limit)."""
        self._check_context(values or {})
        self._update(conversation_id, Conversation.update_context, values, list(removed), at=at)

    def end(self, conversation_id: UUID, reason: str = "", *, at: datetime | None = None) -> None:
        """End the conversation for good."""
        self._update(conversation_id, Conversation.end, reason, at=at)

    def end_idle_conversation(
        self, conversation_id: UUID, idle_s: float, *, at: datetime | None = None
    ) -> bool:
        """End the conversation if nothing happened in it for longer than ``idle_s``
        seconds (the conversation judges that itself); True if it ended now."""
        at = self._now(at)
        ended: list[bool] = []

        def work() -> list[Aggregate]:
            conversation = self._load(conversation_id, Conversation, cached=True)
            ended[:] = [conversation.is_idle_at(at, idle_s)]
            if ended[0]:
                conversation.end_idle(idle_s, at=at)
            return [conversation]

        self._transact(work)
        return ended[0]
