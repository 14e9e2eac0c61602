"""Live calls with several workers: a call is held by the worker that took its WebSocket
(the kernel picks it, not a hash of the conversation), so the others reach it through their
peers' sockets. `POST .../speech` that reaches a worker without the call asks the others
for it, and the one that holds it plays the audio and answers; a stream about to be heard
asks the others whether one of them hears the conversation already, and is refused (409)
if so, as a second stream in one worker is.

A worker that cannot be reached, or is lost while it answers whether it hears a
conversation, holds no call: its WebSockets went with it. One lost while it was playing
speech is an outage (503): the audio may have gone out before it died."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec
import structlog

from ...domain.errors import BadInput, Conflict, NotFound, Unavailable, VoxledgerError
from ..audio.live import LiveStreams, Speech
from .errors import first_line, status_of
from .peers import DECLINED, HEARS_ROUTE, SPEECH_ROUTE, PeerAnswer, PeerLost, PeerRequest, Peers
from .voice import DATABASE_DOWN

log = structlog.get_logger("voxledger.voice")

if TYPE_CHECKING:
    from ..audio.convert import AudioFormat

HEARD = PeerAnswer(204, [], b"")
SPOKEN = 202


class SpeechRequest(msgspec.Struct, array_like=True, frozen=True):
    """Speech handed to the worker that holds the call: the audio, its format (an
    `AudioFormat`'s fields: numpy loads only in the worker that converts the audio), the
    mark."""

    audio: bytes
    audio_format: dict[str, Any] | None
    mark: str | None


# A refusal from the worker that holds the call, raised again where the request arrived.
_ERROR_OF_STATUS: dict[int, type[VoxledgerError]] = {
    400: BadInput,
    404: NotFound,
    409: Conflict,
    503: Unavailable,
}
_ENCODER = msgspec.msgpack.Encoder()
_SPEECH_REQUEST = msgspec.msgpack.Decoder(SpeechRequest)
_SPEECH = msgspec.msgpack.Decoder(Speech)


class OtherWorkers:
    """The live streams of the server's other workers, as `LiveStreams` reaches them, and
    this worker's answers to their questions about its own."""

    def __init__(self, peers: Peers, streams: LiveStreams) -> None:
        self.peers = peers
        self.streams = streams
        peers.answer_with(self._answer, SPEECH_ROUTE, HEARS_ROUTE)
        streams.reach(self)

    async def hears(self, conversation_id: UUID) -> bool:
        try:
            answers = await self.peers.ask_others(
                PeerRequest(HEARS_ROUTE, b"", str(conversation_id))
            )
        except PeerLost:  # a worker that died holds no call
            return False
        return bool(answers)

    async def speak(
        self,
        conversation_id: UUID,
        audio: bytes,
        audio_format: AudioFormat | None,
        mark: str | None,
    ) -> Speech | None:
        fields = msgspec.structs.asdict(audio_format) if audio_format is not None else None
        body = _ENCODER.encode(SpeechRequest(audio, fields, mark))
        request = PeerRequest(SPEECH_ROUTE, body, str(conversation_id))
        answers = await self.peers.ask_others(request)
        if not answers:
            return None
        # One worker holds a conversation's call (see `LiveStreams.claim`).
        worker, answer = next(iter(answers.items()))
        structlog.contextvars.bind_contextvars(served_by=worker)  # for the request's log line
        if answer.status == SPOKEN:
            return _SPEECH.decode(answer.body)
        refused = _ERROR_OF_STATUS.get(answer.status)
        if refused is None:  # the app's own 500
            raise RuntimeError(answer.body.decode())
        raise refused(answer.body.decode())

    async def _answer(self, request: PeerRequest) -> PeerAnswer:
        """Another worker's question about a conversation: declined unless this worker
        holds its call."""
        try:
            conversation_id = UUID(request.conversation_id)
        except (TypeError, ValueError):
            return DECLINED
        if conversation_id not in self.streams:
            return DECLINED
        if request.route == HEARS_ROUTE:
            return HEARD
        from ..audio.convert import AudioFormat

        try:
            speech = _SPEECH_REQUEST.decode(request.body)
            audio_format = (
                msgspec.convert(speech.audio_format, AudioFormat)
                if speech.audio_format is not None
                else None
            )
            spoken = await self.streams.speak_here(
                conversation_id, speech.audio, audio_format, mark=speech.mark
            )
        except NotFound:  # the call ended meanwhile
            return DECLINED
        except VoxledgerError as refused:
            return PeerAnswer(status_of(refused), [], str(refused).encode())
        except DATABASE_DOWN as failed:
            log.error("voice.database_unavailable", error=first_line(failed))
            return PeerAnswer(503, [], b"the database is unavailable")
        except Exception:  # a defect, answered as the app answers one (not by dropping the
            # connection, which the chats handed over on it share)
            log.exception("voice.speech_failed", conversation_id=str(conversation_id))
            return PeerAnswer(500, [], b"the worker holding the call failed to play it")
        return PeerAnswer(SPOKEN, [], _ENCODER.encode(spoken))
