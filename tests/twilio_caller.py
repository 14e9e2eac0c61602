"""Twilio's side of a bidirectional Media Stream, as a test's WebSocket client.

It signs the handshake as Twilio does (`X-Twilio-Signature`: base64 HMAC-SHA1 of the wss://
URL configured in TwiML, keyed with the auth token), sends Twilio's messages in Twilio's shapes
and numbering (`connected`, `start`, `media` every 20 ms of 8 kHz mu-law with its chunk number
and timestamp, `mark` echoes, `stop`), and holds every message the server sends to what Twilio
documents it accepts on a bidirectional stream: only `media` (a base64 mu-law payload), `mark`
(a name) and `clear`, each for this stream, with nothing else in them. Twilio echoes a mark
when the audio sent before it has played, and echoes every pending mark at once when the
server sends `clear`: so does this caller (`play_out` stands for playback reaching the end).
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import msgspec
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from voxledger.adapters.audio.twilio import twilio_signature

FRAME = 160  # 20 ms of 8 kHz mu-law: what Twilio puts in one media message
ACCOUNT_SID = "AC0123456789abcdef0123456789abcdef"


class MediaOut(msgspec.Struct, forbid_unknown_fields=True):
    payload: str


class MarkOut(msgspec.Struct, forbid_unknown_fields=True):
    name: str


class Media(msgspec.Struct, tag="media", tag_field="event", forbid_unknown_fields=True):
    streamSid: str  # Twilio's field name
    media: MediaOut


class Mark(msgspec.Struct, tag="mark", tag_field="event", forbid_unknown_fields=True):
    streamSid: str
    mark: MarkOut


class Clear(msgspec.Struct, tag="clear", tag_field="event", forbid_unknown_fields=True):
    streamSid: str


Outbound = Media | Mark | Clear
_outbound = msgspec.json.Decoder(Outbound)


class TwilioRefused(AssertionError):
    """The server sent something Twilio would not accept on a bidirectional stream."""


class TwilioCaller:
    """One call's Media Stream to `url`; use it in `with`."""

    def __init__(
        self,
        url: str,
        *,
        auth_token: str,
        signed_url: str,
        call_sid: str,
        stream_sid: str,
        custom_parameters: dict[str, str] | None = None,
        signature: str | None = None,
    ) -> None:
        self.url, self.call_sid, self.stream_sid = url, call_sid, stream_sid
        self.signature = signature or twilio_signature(auth_token, signed_url)
        self.custom_parameters = custom_parameters or {}
        self.sequence = 0
        self.chunks = 0
        self.received: list[Outbound] = []
        self.audio_out = bytearray()  # the assistant's audio, as the caller would hear it
        self.pending_marks: list[str] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._looked_at = 0  # how many of `received` `wait_for` has looked through
        self._ws: ClientConnection | None = None

    def __enter__(self) -> TwilioCaller:
        self._ws = connect(
            self.url,
            additional_headers={"X-Twilio-Signature": self.signature},
            open_timeout=30,
            legacy=True,  # the caller holds the connection itself and closes it on exit
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ws is not None:
            self._ws.close()

    @property
    def ws(self) -> ClientConnection:
        assert self._ws is not None, "not connected"
        return self._ws

    # -- what Twilio sends ---------------------------------------------------------------

    def start(self) -> None:
        """`connected`, then `start` with the call's identity and Twilio's media format."""
        self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        self._send(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "accountSid": ACCOUNT_SID,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": 8000,
                        "channels": 1,
                    },
                    "customParameters": self.custom_parameters,
                },
                "streamSid": self.stream_sid,
            }
        )

    def stream(self, audio: bytes, *, pace_s: float = 0.0) -> None:
        """The caller's mu-law audio, one 20 ms media message at a time; with `pace_s`, one
        message every `pace_s` seconds on a steady schedule (0.02: real time). What the
        server sends meanwhile is read as it arrives."""
        started = time.monotonic()
        for n, offset in enumerate(range(0, len(audio), FRAME), start=1):
            if pace_s:
                time.sleep(max(0.0, started + n * pace_s - time.monotonic()))
            self.media(audio[offset : offset + FRAME])
            self.read(0)

    def media(self, payload: bytes) -> None:
        """One media message: chunk numbers count from 1, timestamps are the milliseconds
        of audio before it."""
        self.chunks += 1
        self._send(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self.chunks),
                    "timestamp": str(20 * (self.chunks - 1)),
                    "payload": base64.b64encode(payload).decode(),
                },
                "streamSid": self.stream_sid,
            }
        )

    def play_out(self) -> None:
        """The assistant's audio has played: Twilio echoes each pending mark."""
        for name in self.pending_marks:
            self._echo(name)
        self.pending_marks.clear()

    def stop(self) -> None:
        """The call ends: `stop`, then wait for the server to close the socket."""
        self._send(
            {
                "event": "stop",
                "sequenceNumber": self._next(),
                "stop": {"accountSid": ACCOUNT_SID, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )
        self.wait_closed()

    def send_raw(self, text: str | bytes) -> None:
        """Anything at all, for the tests of what the server refuses."""
        self.ws.send(text)

    def drop(self) -> None:
        """The connection dies: no close frame, no `stop` (a network failure, a crash)."""
        self.ws.socket.shutdown(socket.SHUT_RDWR)
        self.ws.socket.close()

    # -- what the server sends -----------------------------------------------------------

    def read(self, timeout: float) -> list[Outbound]:
        """Every message that arrives within `timeout` seconds (none waited for at 0),
        checked as Twilio checks them."""
        got: list[Outbound] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return got
            except ConnectionClosed as closed:
                self._closed(closed)
                return got
            got.append(self._take(text))

    def wait_for(self, kind: type[Outbound], timeout: float = 30.0) -> Outbound:
        """The next message of this kind not waited for yet, received already or within
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            while self._looked_at < len(self.received):
                message = self.received[self._looked_at]
                self._looked_at += 1
                if isinstance(message, kind):
                    return message
            if self.close_code is not None or time.monotonic() > deadline:
                kinds = [type(m).__name__ for m in self.received]
                raise AssertionError(f"no {kind.__name__} message; got {kinds}")
            self.read(0.05)

    def wait_closed(self, timeout: float = 30.0) -> None:
        """Read until the server closes the socket; `close_code` and `close_reason` say how."""
        deadline = time.monotonic() + timeout
        while self.close_code is None and time.monotonic() < deadline:
            self.read(0.1)
        assert self.close_code is not None, "the server did not close the socket"

    def _take(self, text: str | bytes) -> Outbound:
        if not isinstance(text, str):
            raise TwilioRefused("Twilio accepts JSON text messages only, not binary frames")
        try:
            message = _outbound.decode(text)
        except msgspec.DecodeError as exc:
            raise TwilioRefused(f"not a message Twilio accepts: {exc}: {text[:200]}") from None
        if message.streamSid != self.stream_sid:
            raise TwilioRefused(f"streamSid {message.streamSid!r} is not {self.stream_sid!r}")
        if isinstance(message, Media):
            try:
                audio = base64.b64decode(message.media.payload, validate=True)
            except binascii.Error:
                raise TwilioRefused("media.payload is not base64") from None
            if not audio:
                raise TwilioRefused("media.payload is empty")
            self.audio_out += audio
        elif isinstance(message, Mark):
            if not message.mark.name:
                raise TwilioRefused("a mark needs a name")
            self.pending_marks.append(message.mark.name)
        else:  # clear: the buffered audio is dropped and every pending mark comes back
            self.play_out()
        self.received.append(message)
        return message

    def _closed(self, closed: ConnectionClosed) -> None:
        frame = closed.rcvd
        self.close_code = frame.code if frame is not None else 1006
        self.close_reason = frame.reason if frame is not None else ""

    def _echo(self, name: str) -> None:
        self._send(
            {
                "event": "mark",
                "sequenceNumber": self._next(),
                "streamSid": self.stream_sid,
                "mark": {"name": name},
            }
        )

    def _send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def _next(self) -> str:
        self.sequence += 1
        return str(self.sequence)


def frames(audio: bytes) -> Iterator[bytes]:
    """Audio cut as Twilio cuts it: 20 ms a message."""
    for offset in range(0, len(audio), FRAME):
        yield audio[offset : offset + FRAME]
