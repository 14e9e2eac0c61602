"""The voice streams this process hears now, by conversation: one stream per conversation at a
time (two would record on two sample clocks at once), and the way for the application that
drives a phone call to make the assistant speak on it.

There is no speech synthesis here: the application hands over audio it made, `speak` sends it
down the call's own WebSocket as Twilio `media` messages followed by a `mark`, and the call's
session records the turn (its response starts now, and completes when Twilio echoes the mark,
or is interrupted when the caller barges in).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

import anyio
import msgspec

from ...domain.errors import BadInput, Conflict, NotFound

if TYPE_CHECKING:
    from .convert import AudioFormat
    from .twilio import MediaStreamSession

CALL_RATE = 8000


class LiveStream:
    """One stream being heard: its Twilio session and the way to send it messages (neither
    for a plain PCM stream, whose client plays the assistant itself), and the lock that keeps
    the session's messages in order whoever sends them."""

    def __init__(
        self,
        session: MediaStreamSession | None = None,
        send: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.session, self.send = session, send
        self.lock = anyio.Lock()


class Speech(msgspec.Struct, frozen=True):
    """Audio handed to a call: the mark whose echo completes it, how long it plays, and how
    many messages carried it."""

    conversation_id: UUID
    mark: str
    duration_s: float
    messages: int


class Elsewhere(Protocol):
    """The other processes of the same server (its other workers), each hearing streams of
    its own: a call is held by the process that took its WebSocket."""

    async def hears(self, conversation_id: UUID) -> bool:
        """Whether one of them hears the conversation now."""
        ...

    async def speak(
        self,
        conversation_id: UUID,
        audio: bytes,
        audio_format: AudioFormat | None,
        mark: str | None,
    ) -> Speech | None:
        """The audio played on the conversation's call by the process that holds it (None:
        none of them does)."""
        ...


class LiveStreams:
    """The streams this process hears now, by conversation id, and (`reach`) the way to the
    streams of the server's other processes."""

    def __init__(self) -> None:
        self._streams: dict[UUID, LiveStream] = {}
        self._elsewhere: Elsewhere | None = None

    def reach(self, elsewhere: Elsewhere) -> None:
        """The server's other processes, which hear streams of their own."""
        self._elsewhere = elsewhere

    async def claim(self, conversation_id: UUID, live: LiveStream) -> None:
        """Hear the conversation on this stream (Conflict if another stream has it, here or
        in another process of the server). Claimed here before the others are asked: of two
        streams claimed at once in two processes, at most one is heard."""
        held = self._streams.get(conversation_id)
        if held is not None and held is not live:
            raise Conflict(f"conversation {conversation_id} is already heard on a live stream")
        self._streams[conversation_id] = live
        if held is None and self._elsewhere is not None:
            try:
                elsewhere = await self._elsewhere.hears(conversation_id)
            except BaseException:
                self.release(conversation_id, live)
                raise
            if elsewhere:
                self.release(conversation_id, live)
                raise Conflict(
                    f"conversation {conversation_id} is already heard on a live stream "
                    "(by another worker)"
                )

    def release(self, conversation_id: UUID, live: LiveStream) -> None:
        """The stream has ended: the conversation is free for another."""
        if self._streams.get(conversation_id) is live:
            del self._streams[conversation_id]

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._streams

    async def speak(
        self,
        conversation_id: UUID,
        audio: bytes,
        audio_format: AudioFormat | None = None,
        *,
        mark: str | None = None,
    ) -> Speech:
        """Play audio (mono, in `audio_format`: 16-bit PCM at 8 kHz unless said otherwise) to
        the caller on the conversation's live call, after whatever it is already playing: on
        this process's call, or else through the process that holds it."""
        if conversation_id not in self._streams and self._elsewhere is not None:
            if not audio:
                raise BadInput("no audio to speak: the body is empty")
            spoken = await self._elsewhere.speak(conversation_id, audio, audio_format, mark)
            if spoken is not None:
                return spoken
        return await self.speak_here(conversation_id, audio, audio_format, mark=mark)

    async def speak_here(
        self,
        conversation_id: UUID,
        audio: bytes,
        audio_format: AudioFormat | None = None,
        *,
        mark: str | None = None,
    ) -> Speech:
        """`speak`, on a call this process holds (NotFound if it holds none)."""
        # Imported here: numpy and soxr load only in a process that hears calls.
        from .convert import AudioFormat, PcmConverter

        live = self._streams.get(conversation_id)
        if live is None:
            raise NotFound(f"conversation {conversation_id} has no live call")
        if live.session is None or live.send is None:
            raise Conflict(
                f"conversation {conversation_id} is heard on a PCM audio stream, whose client "
                "plays the assistant's audio itself"
            )
        if not audio:
            raise BadInput("no audio to speak: the body is empty")
        converter = PcmConverter(audio_format or AudioFormat(sample_rate=CALL_RATE), CALL_RATE)
        pcm = converter.convert(audio) + converter.flush()
        async with live.lock:
            messages = await live.session.speak(pcm, mark)
            for message in messages:
                await live.send(message)
            name = live.session.marks_waiting[-1]
        return Speech(conversation_id, name, len(pcm) / 2 / CALL_RATE, len(messages))
