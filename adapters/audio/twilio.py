"""A Twilio Media Streams call, independent of its transport: Twilio's JSON messages in, one at
a time, and the JSON messages Twilio accepts out.

Inbound messages are validated as Twilio documents them (`connected`; `start` with
`streamSid`, `callSid`, `customParameters` and a `mediaFormat` of audio/x-mulaw, 8000 Hz,
1 channel; `media` whose `track`, `chunk`, `timestamp` and base64 `payload` are strings;
`mark`; `dtmf`; `stop`; `sequenceNumber` a string counting up). Inbound audio is decoded from
mu-law and heard by a `VoiceStream`, so speech, turn ends and silences are recorded on the
stream's sample clock: the media timestamps place the audio (a gap is heard as silence), the
session never reads a wall clock. A call is one conversation on channel `twilio` whose
participant is the call SID; its id is derived from the call SID (as the chat channels derive
theirs from a chat id), so a call's later streams continue the same conversation.

Outbound: `media` (base64 mu-law) and `mark` while the assistant plays, and `clear` when the
caller barges in. The WebSocket route (adapters/http/voice.py) is a thin wrapper: it passes
each text frame to `handle` and sends back what it returns.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from contextlib import suppress
from datetime import datetime
from uuid import UUID, uuid5

import msgspec

from ...domain.errors import BadInput, Conflict
from ..async_engine import AsyncEngine
from .codecs import mulaw_decode, mulaw_encode
from .segmenter import SegmenterConfig
from .stream import VoiceStream
from .turns import BargeIn, TurnConfig, TurnEvent

RATE = 8000
CHANNEL = "twilio"
# The namespace of call conversations' ids (the one chats used before the chat directory).
CALL_NAMESPACE = UUID("53444f8a-73fa-4e34-9f76-c48946e69f20")
_BYTES_PER_MS = RATE // 1000
# Outbound audio goes in messages of at most this many mu-law bytes (one second).
_OUT_CHUNK = RATE
# Audio lost in transit is heard as silence, up to this much at once: a larger jump in the
# media timestamps is not a network gap but a broken stream.
_MAX_GAP_S = 60


class _Message(msgspec.Struct, tag_field="event", rename="camel", forbid_unknown_fields=False):
    pass


class Connected(_Message, tag="connected"):
    """The WebSocket is up: the protocol to expect."""

    protocol: str
    version: str


class MediaFormat(msgspec.Struct, rename="camel"):
    """The encoding of inbound audio."""

    encoding: str
    sample_rate: int
    channels: int


class StartInfo(msgspec.Struct, rename="camel"):
    """The stream's identity and format."""

    stream_sid: str
    call_sid: str
    media_format: MediaFormat
    account_sid: str = ""
    tracks: list[str] = []
    custom_parameters: dict[str, str] = {}


class Start(_Message, tag="start"):
    """The stream starts."""

    sequence_number: str
    start: StartInfo
    stream_sid: str


class MediaPayload(msgspec.Struct):
    """One chunk of audio: its track, chunk number, milliseconds since start, base64 bytes."""

    track: str
    chunk: str
    timestamp: str
    payload: str


class Media(_Message, tag="media"):
    """Audio."""

    sequence_number: str
    media: MediaPayload
    stream_sid: str


class MarkName(msgspec.Struct):
    """A mark's label."""

    name: str


class Mark(_Message, tag="mark"):
    """Playback reached a mark we sent (or `clear` dropped it)."""

    sequence_number: str
    mark: MarkName
    stream_sid: str


class DtmfDigit(msgspec.Struct):
    """A key the caller pressed."""

    track: str
    digit: str


class Dtmf(_Message, tag="dtmf"):
    """The caller pressed a key."""

    sequence_number: str
    dtmf: DtmfDigit
    stream_sid: str


class StopInfo(msgspec.Struct, rename="camel"):
    """Which call stopped."""

    account_sid: str
    call_sid: str


class Stop(_Message, tag="stop"):
    """The stream ended."""

    sequence_number: str
    stop: StopInfo
    stream_sid: str


Inbound = Connected | Start | Media | Mark | Dtmf | Stop
_decoder = msgspec.json.Decoder(Inbound)


def parse_message(text: str | bytes) -> Inbound:
    """One Twilio message, validated (BadInput naming the field and the reason)."""
    try:
        message = _decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise BadInput(f"Twilio message is not valid: {exc}") from None
    if not isinstance(message, Connected) and not message.sequence_number.isdigit():
        raise BadInput(
            f"Twilio sequenceNumber must be a string of digits, got {message.sequence_number!r}"
        )
    if isinstance(message, Media):
        for name in ("chunk", "timestamp"):
            if not getattr(message.media, name).isdigit():
                raise BadInput(
                    f"Twilio media.{name} must be a string of digits, "
                    f"got {getattr(message.media, name)!r}"
                )
    return message


class MediaStreamSession:
    """One Twilio Media Stream bound to one conversation; feed it Twilio's messages in order.

    `started_at` is the wall time of the stream's first sample, given by the caller (the
    composition root's clock); every fact is stamped `started_at` + samples / 8000.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        started_at: datetime,
        conversation_id: UUID | None = None,
        segmenter: SegmenterConfig | None = None,
        turns: TurnConfig | None = None,
    ) -> None:
        config = segmenter or SegmenterConfig(sample_rate=RATE)
        if config.sample_rate != RATE:
            raise BadInput(f"a Twilio stream is heard at {RATE} Hz, not {config.sample_rate}")
        self.engine = engine
        self.started_at = started_at
        self.conversation_id = conversation_id
        self._segmenter, self._turns = config, turns
        self.stream: VoiceStream | None = None
        self.start_info: StartInfo | None = None
        self.stream_sid: str | None = None
        self.facts: list[TurnEvent] = []
        self.digits: list[str] = []
        self.stopped = False
        self._sequence = 0
        self._last_timestamp = -1
        self._marks: list[str] = []
        self._marks_sent = 0

    @property
    def assistant_speaking(self) -> bool:
        """True while audio we sent has not been confirmed played (marks outstanding)."""
        return bool(self._marks)

    @property
    def marks_waiting(self) -> tuple[str, ...]:
        """The marks sent whose audio Twilio has not yet confirmed played, oldest first."""
        return tuple(self._marks)

    async def handle(self, text: str | bytes) -> list[str]:
        """Take one message from Twilio; return the messages to send back (JSON text)."""
        return await self.handle_message(parse_message(text))

    async def handle_message(self, message: Inbound) -> list[str]:
        """Take one message already parsed (`parse_message`); return the messages to send."""
        if self.stopped:
            raise BadInput("the Twilio stream has stopped; it takes no more messages")
        if isinstance(message, Connected):
            return []
        self._check_order(message)
        if isinstance(message, Start):
            await self._start(message)
            return []
        if isinstance(message, Media):
            return await self._media(message)
        if isinstance(message, Mark):
            await self._mark(message.mark.name)
        elif isinstance(message, Dtmf):
            self.digits.append(message.dtmf.digit)
        else:
            await self._stop()
        return []

    async def speak(self, pcm: bytes, mark: str | None = None) -> list[str]:
        """The assistant plays this audio (16-bit PCM at 8 kHz): the `media` messages and a
        `mark` to send. The first audio of a turn records that the assistant responds (in
        the turn in progress, or one it starts); Twilio's echo of the last mark, once all
        of it has played, completes the turn."""
        stream, sid = self._require_started()
        if self.stopped:
            raise BadInput("the Twilio stream has stopped; the assistant can no longer speak")
        if not pcm or len(pcm) % 2:
            raise BadInput("assistant audio must be whole 16-bit samples (an even byte count > 0)")
        if mark is not None and mark in self._marks:
            raise BadInput(f"mark {mark!r} is already waiting to be played; name each one once")
        if not self._marks:
            await stream.assistant_responds()
        payload = mulaw_encode(pcm)
        out = [
            _encode({"event": "media", "streamSid": sid, "media": {"payload": _b64(chunk)}})
            for chunk in (payload[i : i + _OUT_CHUNK] for i in range(0, len(payload), _OUT_CHUNK))
        ]
        self._marks_sent += 1
        name = mark or f"voxledger-{self._marks_sent}"
        self._marks.append(name)
        out.append(_encode({"event": "mark", "streamSid": sid, "mark": {"name": name}}))
        return out

    async def drop(self, reason: str) -> None:
        """The transport went away without `stop` (or was closed on a bad message): close
        what was heard and record the disconnect, on the stream's clock."""
        if self.stream is None or self.stopped:
            return
        self.stopped = True
        self._marks.clear()
        self.facts += await self.stream.close()
        await self.stream.disconnect(reason)

    def _require_started(self) -> tuple[VoiceStream, str]:
        if self.stream is None or self.stream_sid is None:
            raise BadInput("the Twilio stream has not started (no 'start' message yet)")
        return self.stream, self.stream_sid

    def _check_order(self, message: Start | Media | Mark | Dtmf | Stop) -> None:
        number = int(message.sequence_number)
        if number <= self._sequence:
            raise BadInput(
                f"Twilio sequenceNumber {number} is not after {self._sequence}; "
                "messages must arrive in order"
            )
        if isinstance(message, Start):
            if self.stream is not None:
                raise BadInput("the Twilio stream has already started")
        else:
            _, sid = self._require_started()
            if message.stream_sid != sid:
                raise BadInput(
                    f"Twilio streamSid {message.stream_sid!r} is not this stream's {sid!r}"
                )
        self._sequence = number

    async def _start(self, message: Start) -> None:
        info = message.start
        fmt = info.media_format
        if (fmt.encoding, fmt.sample_rate, fmt.channels) != ("audio/x-mulaw", RATE, 1):
            raise BadInput(
                f"Twilio mediaFormat must be audio/x-mulaw at 8000 Hz, 1 channel; got "
                f"{fmt.encoding} at {fmt.sample_rate} Hz, {fmt.channels} channels"
            )
        if message.stream_sid != info.stream_sid:
            raise BadInput("Twilio start: streamSid differs from start.streamSid")
        cid = self.conversation_id
        if cid is None:
            cid = call_conversation_id(info.call_sid)
            # Conflict: a later stream of the same call, whose conversation goes on.
            with suppress(Conflict):
                await self.engine.start_conversation(
                    CHANNEL,
                    info.call_sid,
                    {"streamSid": info.stream_sid,
                     "customParameters": dict(info.custom_parameters)},
                    conversation_id=cid,
                    at=self.started_at,
                )  # fmt: skip
        stream = VoiceStream(
            self.engine,
            cid,
            started_at=self.started_at,
            segmenter=self._segmenter,
            turns=self._turns,
            provider="twilio",
            connection_id=info.stream_sid,
        )
        await stream.open(take_over=True)
        self.conversation_id, self.stream = cid, stream
        self.start_info, self.stream_sid = info, info.stream_sid

    async def _media(self, message: Media) -> list[str]:
        stream, _ = self._require_started()
        media = message.media
        try:
            audio = base64.b64decode(media.payload, validate=True)
        except (binascii.Error, ValueError):
            raise BadInput("Twilio media.payload is not valid base64") from None
        if media.track not in ("inbound", "inbound_track"):
            return []  # the assistant's own audio, echoed on a two-track stream
        timestamp = int(media.timestamp)
        if timestamp < self._last_timestamp:
            raise BadInput(
                f"Twilio media.timestamp {timestamp} ms is before the previous "
                f"{self._last_timestamp} ms"
            )
        self._last_timestamp = timestamp
        pcm = mulaw_decode(audio).tobytes()
        # Audio missing before this chunk (a network gap) is heard as silence, so the
        # stream's clock stays on Twilio's.
        gap = timestamp * _BYTES_PER_MS - stream.listener.samples_fed
        if gap > _MAX_GAP_S * RATE:
            raise BadInput(
                f"Twilio media.timestamp {timestamp} ms jumps more than {_MAX_GAP_S} s past "
                f"the {stream.listener.samples_fed // _BYTES_PER_MS} ms of audio received"
            )
        facts = []
        if gap > 0:
            facts += await stream.feed(bytes(2 * gap))
        facts += await stream.feed(pcm)
        self.facts += facts
        if any(isinstance(f, BargeIn) for f in facts) and self._marks:
            self._marks.clear()
            return [_encode({"event": "clear", "streamSid": self.stream_sid})]
        return []

    async def _mark(self, name: str) -> None:
        stream, _ = self._require_started()
        if name not in self._marks:
            return  # a mark `clear` dropped, or one sent before a barge-in
        del self._marks[: self._marks.index(name) + 1]
        if not self._marks:
            await stream.assistant_finished()

    async def _stop(self) -> None:
        stream, _ = self._require_started()
        self._marks.clear()
        self.facts += await stream.close()
        await stream.disconnect("twilio stream stopped")
        self.stopped = True


def call_conversation_id(call_sid: str) -> UUID:
    """The conversation of a Twilio call, derived from its call SID, so that an application
    can find it from the SID alone. A call SID names one call, not a person (unlike a chat
    id, which the chat directory keys with a secret): the id ties back to nobody."""
    return uuid5(CALL_NAMESPACE, f"{CHANNEL}:{call_sid}")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _encode(message: dict[str, object]) -> str:
    return msgspec.json.encode(message).decode()


def twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str | Sequence[str]] | None = None
) -> str:
    """Twilio's `X-Twilio-Signature`: base64 HMAC-SHA1, keyed with the auth token, of the full
    URL (for a WebSocket handshake, the wss:// URL) followed by each POST parameter's name and
    value, sorted by name (a repeated name's values sorted too)."""
    data = url
    for name in sorted(params or {}):
        values = (params or {})[name]
        for value in sorted([values] if isinstance(values, str) else values):
            data += name + value
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_is_valid(
    auth_token: str,
    url: str,
    params: Mapping[str, str | Sequence[str]] | None,
    signature: str,
) -> bool:
    """True if `signature` is Twilio's for this URL and these parameters (constant time)."""
    expected = twilio_signature(auth_token, url, params)
    return hmac.compare_digest(expected.encode(), signature.encode())
