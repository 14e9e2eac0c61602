"""A call's audio into a conversation: PCM chunks in, conversation events out.

Times come from the audio's own sample clock (the stream's start time plus samples / rate),
so replaying the same PCM into a fresh conversation records the same events. Each fact is
recorded before the next chunk is read: a slow store slows the reader (back-pressure)
instead of queueing audio without bound.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import datetime, timedelta
from uuid import UUID

from ...domain.conversation import Status
from ...domain.errors import BadInput
from ..async_engine import AsyncEngine
from .listener import Listener
from .segmenter import SegmenterConfig, SpeechEnded, SpeechStarted
from .turns import BargeIn, SilenceTimeout, TurnConfig, TurnEvent, UserTurnEnded

# Statuses in which a conversation is connected to no stream.
_NOT_CONNECTED = (Status.IDLE, Status.DISCONNECTED, Status.ERROR, Status.ENDED)


class VoiceStream:
    """One audio stream bound to one conversation."""

    def __init__(
        self,
        engine: AsyncEngine,
        conversation_id: UUID,
        *,
        started_at: datetime,
        segmenter: SegmenterConfig,
        turns: TurnConfig | None = None,
        provider: str = "audio",
        connection_id: str = "stream",
    ) -> None:
        self.engine = engine
        self.provider, self.connection_id = provider, connection_id
        self.conversation_id = conversation_id
        self.started_at = started_at
        self.listener = Listener(segmenter, turns)
        self.facts: list[TurnEvent] = []

    def at(self, seconds: float) -> datetime:
        """The wall time of a point on the stream's sample clock."""
        try:
            return self.started_at + timedelta(seconds=seconds)
        except OverflowError:
            raise BadInput(
                f"the stream's clock runs past the calendar's end {seconds:.0f} s after "
                f"{self.started_at.isoformat()}"
            ) from None

    async def open(self, *, take_over: bool = False) -> None:
        """Make sure the conversation listens (connecting it to the stream if it is idle).
        With `take_over`, a conversation still connected to a stream (one lost with the
        process that heard it; the live ones a process hears, `LiveStreams`, are never
        opened twice) is disconnected from it first, closing what it left half-done."""
        cid, at = self.conversation_id, self.started_at
        state = await self.engine.get_conversation(cid)
        if take_over and state.status not in _NOT_CONNECTED:
            lost = state.connection.connection_id
            await self.engine.disconnect(cid, f"stream {lost} lost", at=at)
            state = await self.engine.get_conversation(cid)
        if state.status in (Status.IDLE, Status.DISCONNECTED, Status.ERROR):
            await self.engine.connect(cid, self.provider, self.connection_id, at=at)
        if not state.audio.listening:
            await self.engine.listen(cid, at=at)

    async def feed(self, chunk: bytes) -> list[TurnEvent]:
        """Hear the next chunk (BadInput, and nothing recorded, if it is not PCM as
        promised) and record the facts it decided, in order."""
        facts = self.listener.feed(chunk)
        for fact in facts:
            await self._record(fact)
        return facts

    def now(self) -> datetime:
        """The wall time of the latest sample heard: now, on the stream's clock."""
        return self.at(self.listener.samples_fed / self._rate)

    async def assistant_responds(self) -> None:
        """The assistant starts speaking: the turn in progress (one started now if there is
        none, as for a greeting) is responding, and speech over it can barge in."""
        cid, at = self.conversation_id, self.now()
        state = await self.engine.get_conversation(cid)
        if not state.current_turn_active:
            await self.engine.start_turn(cid, at=at)
        if not state.current_turn_active or state.status != Status.RESPONDING:
            await self.engine.start_response(cid, at=at)
        self.listener.assistant_playing(True)

    async def assistant_finished(self, assistant_message_id: str | None = None) -> None:
        """The assistant's answer played to the end: the turn in progress completes."""
        state = await self.engine.get_conversation(self.conversation_id)
        if state.current_turn_active:
            await self.engine.complete_turn(
                self.conversation_id, assistant_message_id, at=self.now()
            )
        self.listener.assistant_playing(False)

    async def close(self) -> list[TurnEvent]:
        """The stream ended: close an open utterance and record what is due by its end."""
        facts = self.listener.close()
        for fact in facts:
            await self._record(fact)
        return facts

    async def disconnect(self, reason: str) -> None:
        """The transport went away, now on the stream's clock."""
        await self.engine.disconnect(self.conversation_id, reason, at=self.now())

    @property
    def _rate(self) -> int:
        return self.listener.sample_rate

    async def _record(self, fact: TurnEvent) -> None:
        self.facts.append(fact)
        cid, engine = self.conversation_id, self.engine
        match fact:
            case SpeechStarted(start_s=start_s):
                await engine.record_speech_started(cid, at=self.at(start_s))
            case SpeechEnded(utterance=u):
                await engine.record_speech_ended(
                    cid, u.duration_s, u.peak_dbfs, u.mean_dbfs, at=self.at(u.end_s)
                )
            case UserTurnEnded(at_s=at_s, utterance_count=count):
                await engine.record_user_turn_ended(cid, count, at=self.at(at_s))
            case SilenceTimeout(at_s=at_s, silence_s=silence_s):
                await engine.record_silence(cid, silence_s, at=self.at(at_s))
            case BargeIn(at_s=at_s):
                # The turn may have closed without the playback being stopped (the
                # application completed it itself): then there is nothing to interrupt.
                if (await engine.get_conversation(cid)).current_turn_active:
                    await engine.interrupt_turn(cid, "barge-in", at=self.at(at_s))
                self.listener.assistant_playing(False)  # the agent stops its playback


async def stream_audio(
    engine: AsyncEngine,
    conversation_id: UUID,
    chunks: AsyncIterable[bytes],
    *,
    started_at: datetime,
    segmenter: SegmenterConfig,
    turns: TurnConfig | None = None,
) -> list[TurnEvent]:
    """Stream PCM chunks into a conversation and return the facts recorded."""
    stream = VoiceStream(
        engine, conversation_id, started_at=started_at, segmenter=segmenter, turns=turns
    )
    await stream.open()
    async for chunk in chunks:
        await stream.feed(chunk)
    await stream.close()
    return stream.facts
