"""A plain PCM audio stream into a conversation, for clients that are not Twilio, independent of
its transport: 16-bit little-endian PCM in (any rate from 8 to 96 kHz, one or more channels,
converted by convert.py to what the segmenter hears), one JSON message out per recorded fact.

The messages out, each an object with an `event`:
- `started`: `conversation_id`, `sample_rate` (the rate the audio is heard at);
- `speech_started`: `at_s`; `speech_ended`: `start_s`, `end_s`, `duration_s`, `peak_dbfs`,
  `mean_dbfs`; `turn_ended`: `at_s`, `utterances`; `silence`: `at_s`, `silence_s`;
  `barge_in`: `at_s`, `speech_s` (stop playing the assistant's audio);
- `stopped`, after the client's `stop`.
Times are seconds on the stream's sample clock (0 = the first sample). The client may say
`{"event": "playback", "playing": true}` when the assistant's audio starts playing and
`false` when it has played out (the turn then completes), and `{"event": "stop"}` to end the
stream.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

import msgspec

from ...domain.errors import BadInput
from ..async_engine import AsyncEngine
from .convert import AudioFormat, PcmConverter, segmenter_rate
from .segmenter import SegmenterConfig, SpeechEnded, SpeechStarted
from .stream import VoiceStream
from .turns import BargeIn, SilenceTimeout, TurnConfig, TurnEvent, UserTurnEnded

PROVIDER = "audio-stream"
CHANNEL = "voice"  # a new conversation's channel, as `voxledger listen` names it


class Playback(msgspec.Struct, tag_field="event", tag="playback", forbid_unknown_fields=True):
    """The assistant's audio starts (`playing` true) or has played out (false)."""

    playing: bool


class StopStream(msgspec.Struct, tag_field="event", tag="stop", forbid_unknown_fields=True):
    """The client ends the stream."""


Control = Playback | StopStream
_control = msgspec.json.Decoder(Control)


def parse_control(text: str | bytes) -> Control:
    """One control message from the client (BadInput naming what is wrong)."""
    try:
        return _control.decode(text)
    except msgspec.DecodeError as exc:
        raise BadInput(
            f"control message is not valid: {exc} (expected "
            '{"event": "playback", "playing": true|false} or {"event": "stop"})'
        ) from None


class PcmStreamSession:
    """One PCM stream bound to one conversation (an existing one, or a `new_conversation`
    started with the stream, for this participant): `open`, then `feed` binary frames and
    `control` text frames in order, then `stop` (or `drop` if the transport went away)."""

    def __init__(
        self,
        engine: AsyncEngine,
        conversation_id: UUID,
        audio_format: AudioFormat,
        *,
        started_at: datetime,
        channel: Literal["left", "right", "mix"] | None = None,
        connection_id: str,
        new_conversation: bool = False,
        participant: str | None = None,
        turns: TurnConfig | None = None,
    ) -> None:
        if audio_format.encoding != "pcm" or audio_format.bits != 16:
            raise BadInput(f"a PCM stream carries 16-bit PCM, not {audio_format.describe()}")
        rate = segmenter_rate(audio_format.sample_rate)
        self._converter = PcmConverter(audio_format, rate, channel=channel)
        self.engine = engine
        self.conversation_id = conversation_id
        self.started_at = started_at
        self._new, self._participant = new_conversation, participant
        self.stream = VoiceStream(
            engine,
            conversation_id,
            started_at=started_at,
            segmenter=SegmenterConfig(sample_rate=rate),
            turns=turns,
            provider=PROVIDER,
            connection_id=connection_id,
        )
        self.opened = self.stopped = False

    async def open(self) -> list[str]:
        """Start the conversation if it is new, connect it and listen; say so."""
        if self._new:
            await self.engine.start_conversation(
                CHANNEL,
                self._participant,
                {"source": PROVIDER},
                conversation_id=self.conversation_id,
                at=self.started_at,
            )
        await self.stream.open(take_over=True)
        self.opened = True
        started = {
            "event": "started",
            "conversation_id": str(self.conversation_id),
            "sample_rate": self.stream.listener.sample_rate,
        }
        return [_encode(started)]

    async def feed(self, data: bytes) -> list[str]:
        """Hear the next bytes of PCM; the facts they decided, as messages."""
        self._require_open()
        pcm = self._converter.convert(data)
        return _messages(await self.stream.feed(pcm)) if pcm else []

    async def control(self, text: str | bytes) -> list[str]:
        """Take a control message: playback starts or ends, or the stream stops."""
        self._require_open()
        message = parse_control(text)
        if isinstance(message, StopStream):
            return await self.stop()
        if message.playing:
            await self.stream.assistant_responds()
        else:
            await self.stream.assistant_finished()
        return []

    async def stop(self) -> list[str]:
        """The client ended the stream: the facts due by its end, and the disconnect."""
        self._require_open()
        self.stopped = True
        facts = await self._close(self._converter.flush())
        await self.stream.disconnect("audio stream stopped")
        return [*_messages(facts), _encode({"event": "stopped"})]

    async def drop(self, reason: str) -> None:
        """The transport went away: close what was heard and record the disconnect."""
        if self.stopped or not self.opened:
            return
        self.stopped = True
        try:
            tail = self._converter.flush()
        except BadInput:
            tail = b""  # the connection broke inside a sample: that half is lost
        await self._close(tail)
        await self.stream.disconnect(reason)

    async def _close(self, tail: bytes) -> list[TurnEvent]:
        """Hear the resampler's last samples, then end the stream."""
        facts = await self.stream.feed(tail) if tail else []
        return facts + await self.stream.close()

    def _require_open(self) -> None:
        if self.stopped:
            raise BadInput("the audio stream has stopped; it takes no more messages")


def _messages(facts: list[TurnEvent]) -> list[str]:
    return [_encode(_message(fact)) for fact in facts]


def _message(fact: TurnEvent) -> dict[str, object]:
    match fact:
        case SpeechStarted(start_s=start_s):
            return {"event": "speech_started", "at_s": start_s}
        case SpeechEnded(utterance=u):
            return {
                "event": "speech_ended",
                "start_s": u.start_s,
                "end_s": u.end_s,
                "duration_s": u.duration_s,
                "peak_dbfs": u.peak_dbfs,
                "mean_dbfs": u.mean_dbfs,
            }
        case UserTurnEnded(at_s=at_s, utterance_count=count):
            return {"event": "turn_ended", "at_s": at_s, "utterances": count}
        case SilenceTimeout(at_s=at_s, silence_s=silence_s):
            return {"event": "silence", "at_s": at_s, "silence_s": silence_s}
        case BargeIn(at_s=at_s, speech_s=speech_s):
            return {"event": "barge_in", "at_s": at_s, "speech_s": speech_s}


def _encode(message: dict[str, object]) -> str:
    return msgspec.json.encode(message).decode()
