"""The voice routes: phone calls over Twilio Media Streams (`/v1/media-stream`, the URL a TwiML
`<Stream>` names), a plain PCM stream for other clients (`/v1/audio-stream`), and
`POST /v1/conversations/{id}/speech`, by which the application that drives a call makes the
assistant speak on it.

Both WebSockets are checked before the upgrade: a refused handshake is an HTTP error with an
`ErrorBody` and records nothing. After it, each frame goes to the stream's session in order
and what the session answers goes back in order. A malformed frame closes the socket with
1008 (policy violation) and the reason, after what was valid has been recorded; a socket that
goes away without its stream's end is recorded as the conversation's disconnect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

import anyio
import msgspec
import structlog
from eventsourcing.persistence import PersistenceError
from litestar import Request, Router, WebSocket, post, websocket
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    NotAuthorizedException,
    PermissionDeniedException,
    WebSocketDisconnect,
)
from litestar.params import FromPath, FromQuery, Parameter
from litestar.types import Message
from psycopg import Error as PsycopgError

from ...domain.conversation import Status
from ...domain.errors import BadInput, InvalidTransition, Unavailable, VoxledgerError
from ..async_engine import AsyncEngine
from ..audio.convert import AudioFormat
from ..audio.live import LiveStream, LiveStreams, Speech
from ..audio.pcm_stream import PcmStreamSession
from ..audio.twilio import (
    MediaStreamSession,
    Start,
    call_conversation_id,
    parse_message,
    signature_is_valid,
)
from .bodies import ErrorBody, ShortText
from .errors import first_line, status_of
from .guards import bearer_token, require_bearer
from .settings import ENV_TWILIO_AUTH_TOKEN, Settings

log = structlog.get_logger("voxledger.voice")

MEDIA_STREAM = "/v1/media-stream"
AUDIO_STREAM = "/v1/audio-stream"
NORMAL_CLOSURE, POLICY_VIOLATION, INTERNAL_ERROR = 1000, 1008, 1011
# The database failed: not the client's fault (503 at the handshake, 1011 after it).
DATABASE_DOWN = (Unavailable, PersistenceError, PsycopgError)
# One answer in one request: about a minute of 16-bit PCM at 8 kHz. Longer speech goes in
# several requests, each played after the one before.
SPEECH_MAX_BYTES = 2 * 1024 * 1024
MarkName = Annotated[str | None, Parameter(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]

_WEBSOCKET_SCHEME = {"https": "wss", "http": "ws"}

Clock = Callable[[], datetime]
Frame = Callable[[Message], Awaitable[list[str]]]


def voice_router(settings: Settings) -> Router:
    """The voice routes, with the settings they check handshakes against."""
    speech = Router(
        path="/v1",
        route_handlers=[post_speech],
        guards=[bearer_token(settings.api_token)],
        security=[{"bearer": []}],
        tags=["voice"],
    )
    return Router(
        path="/",
        route_handlers=[media_stream, audio_stream, speech],
        dependencies={
            "voice_settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False)
        },
    )


# -- Twilio Media Streams --------------------------------------------------------------------


@websocket(MEDIA_STREAM)
async def media_stream(
    socket: WebSocket[Any, Any, Any],
    async_engine: NamedDependency[AsyncEngine],
    live_streams: NamedDependency[LiveStreams],
    clock: NamedDependency[Clock],
    voice_settings: NamedDependency[Settings],
) -> None:
    """A phone call's audio from Twilio into its conversation, and the assistant's back."""
    token = voice_settings.twilio_auth_token
    if token is None:
        detail = f"the Twilio media stream is off: {ENV_TWILIO_AUTH_TOKEN} is not set"
        await _refuse(socket, 403, detail)
        return
    signature = socket.headers.get("x-twilio-signature", "")
    url = signed_url(socket.scope, socket.headers.get("host", ""), voice_settings.public_url)
    if not signature or not signature_is_valid(token, url, None, signature):
        await _refuse(socket, 403, "missing or wrong X-Twilio-Signature")
        return
    await socket.accept()
    session = MediaStreamSession(async_engine, started_at=clock())
    live = LiveStream(session, _sender(socket))
    claimed: list[UUID] = []

    async def frame(message: Message) -> list[str]:
        text = message.get("text")
        if text is None:
            raise BadInput("Twilio sends JSON text frames, not binary ones")
        parsed = parse_message(text)
        if isinstance(parsed, Start) and not claimed:
            # Claimed before anything is recorded: a call already heard here is refused.
            cid = session.conversation_id or call_conversation_id(parsed.start.call_sid)
            await live_streams.claim(cid, live)
            claimed.append(cid)
            structlog.contextvars.bind_contextvars(conversation_id=str(cid))
        return await session.handle_message(parsed)

    try:
        await _converse(socket, live, frame, session.drop, lambda: session.stopped, "twilio")
    finally:
        for cid in claimed:
            live_streams.release(cid, live)


def signed_url(scope: Mapping[str, Any], host: str, public_url: str | None) -> str:
    """The URL Twilio signed for this handshake: the public base URL (when the server sits
    behind a proxy) or else the request's own host, as wss://, with the request's path and
    query string."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    query = scope.get("query_string", b"").decode("latin-1")
    if public_url is None:
        base = f"wss://{host}"
    else:
        scheme, rest = public_url.split("://", 1)
        base = f"{_WEBSOCKET_SCHEME.get(scheme, scheme)}://{rest}"
    return base + path + (f"?{query}" if query else "")


# -- the plain PCM stream --------------------------------------------------------------------


class AudioStreamQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The PCM stream's query parameters: the conversation to hear it in (a new one if not
    given, with this participant), and how the PCM is laid out."""

    sample_rate: int
    channels: int = 1
    channel: Literal["left", "right", "mix"] | None = None
    conversation: UUID | None = None
    participant: ShortText | None = None


@websocket(AUDIO_STREAM)
async def audio_stream(
    socket: WebSocket[Any, Any, Any],
    async_engine: NamedDependency[AsyncEngine],
    live_streams: NamedDependency[LiveStreams],
    clock: NamedDependency[Clock],
    voice_settings: NamedDependency[Settings],
) -> None:
    """16-bit little-endian PCM in binary frames into a conversation; each recorded fact
    back as a JSON text frame (see adapters/audio/pcm_stream.py)."""
    try:
        require_bearer(socket, voice_settings.api_token)
    except (NotAuthorizedException, PermissionDeniedException) as refused:
        await _refuse(socket, refused.status_code, refused.detail, refused.headers)
        return
    live = LiveStream()
    try:
        query = _audio_stream_query(socket.query_params.dict())
        if query.conversation is not None:
            if query.participant is not None:
                raise BadInput("participant is for a new conversation, not an existing one")
            state = await async_engine.get_conversation(query.conversation)
            if state.status == Status.ENDED:
                raise InvalidTransition(f"conversation {query.conversation} has ended")
        cid = query.conversation or uuid4()
        session = PcmStreamSession(
            async_engine,
            cid,
            AudioFormat(sample_rate=query.sample_rate, channels=query.channels),
            started_at=clock(),
            channel=query.channel,
            connection_id=uuid4().hex,
            new_conversation=query.conversation is None,
            participant=query.participant,
        )
        await live_streams.claim(cid, live)
    except DATABASE_DOWN as failed:
        log.error("voice.database_unavailable", error=first_line(failed))
        await _refuse(socket, 503, "the database is unavailable")
        return
    except VoxledgerError as refused:
        await _refuse(socket, status_of(refused), str(refused))
        return
    try:
        structlog.contextvars.bind_contextvars(conversation_id=str(cid))
        await socket.accept()

        async def frame(message: Message) -> list[str]:
            data = message.get("bytes")
            if data is not None:
                return await session.feed(data)
            return await session.control(message.get("text") or "")

        await _converse(
            socket, live, frame, session.drop, lambda: session.stopped, "audio", session.open
        )
    finally:
        live_streams.release(cid, live)


def _audio_stream_query(params: Mapping[str, list[str]]) -> AudioStreamQuery:
    """The query parameters, validated once (BadInput naming the parameter)."""
    repeated = sorted(name for name, values in params.items() if len(values) > 1)
    if repeated:
        raise BadInput(f"query parameter {repeated[0]!r} is given more than once")
    try:
        return msgspec.convert(
            {name: values[0] for name, values in params.items()}, AudioStreamQuery, strict=False
        )
    except msgspec.ValidationError as exc:
        raise BadInput(f"invalid query: {str(exc).replace('$.', 'query.')}") from None


# -- the assistant speaks on a call ----------------------------------------------------------


@post(
    "/conversations/{conversation_id:uuid}/speech",
    status_code=202,
    request_max_body_size=SPEECH_MAX_BYTES,
    summary="Play the assistant's audio on a live call",
)
async def post_speech(
    request: Request[Any, Any, Any],
    live_streams: NamedDependency[LiveStreams],
    conversation_id: FromPath[UUID],
    encoding: FromQuery[Literal["pcm16", "mulaw"]] = "pcm16",
    sample_rate: Annotated[int, Parameter(ge=8000, le=96000)] = 8000,
    mark: MarkName = None,
) -> Speech:
    """The body is the assistant's audio, mono: 16-bit little-endian PCM (any rate from 8 to
    96 kHz) or mu-law. It is played to the caller after what is already playing; the turn
    (the one in progress, or one started now) responds, and completes when Twilio confirms
    the returned mark played, unless the caller barges in first."""
    structlog.contextvars.bind_contextvars(conversation_id=str(conversation_id))
    audio_format = (
        AudioFormat(encoding="mulaw", bits=8, sample_rate=sample_rate)
        if encoding == "mulaw"
        else AudioFormat(sample_rate=sample_rate)
    )
    return await live_streams.speak(conversation_id, await request.body(), audio_format, mark=mark)


# -- one WebSocket conversation --------------------------------------------------------------


async def _converse(
    socket: WebSocket[Any, Any, Any],
    live: LiveStream,
    frame: Frame,
    drop: Callable[[str], Awaitable[None]],
    stopped: Callable[[], bool],
    kind: str,
    opening: Callable[[], Awaitable[list[str]]] | None = None,
) -> None:
    """The session's opening messages, then each frame to the session and its answers
    back, in order, until the stream stops (then the socket closes normally), the socket
    goes away, or a frame is refused."""
    log.info("voice.stream_opened", stream=kind)
    try:
        if opening is not None:
            async with live.lock:
                for text in await opening():
                    await socket.send_text(text)
        while not stopped():
            message = await socket.receive()
            if message["type"] == "websocket.disconnect":
                await _record_drop(live, drop, f"{kind} stream dropped (code {message['code']})")
                return
            async with live.lock:
                for text in await frame(message):
                    await socket.send_text(text)
        log.info("voice.stream_stopped", stream=kind)
        await _close(socket, NORMAL_CLOSURE, "stream stopped")
    except DATABASE_DOWN as failed:
        log.error("voice.database_unavailable", stream=kind, error=first_line(failed))
        await _record_drop(live, drop, f"{kind} stream failed: the database is unavailable")
        await _close(socket, INTERNAL_ERROR, "the database is unavailable")
    except VoxledgerError as refused:
        reason = first_line(refused)
        log.info("voice.stream_refused", stream=kind, reason=reason)
        await _record_drop(live, drop, f"{kind} stream closed: {reason}")
        await _close(socket, POLICY_VIOLATION, reason)
    except (WebSocketDisconnect, OSError):  # an answer to a socket that has gone
        await _record_drop(live, drop, f"{kind} stream dropped")
    except Exception:
        log.error("voice.stream_failed", stream=kind, exc_info=True)
        await _record_drop(live, drop, f"{kind} stream failed")
        await _close(socket, INTERNAL_ERROR, "internal error")


async def _record_drop(
    live: LiveStream, drop: Callable[[str], Awaitable[None]], reason: str
) -> None:
    """Record that the stream ended without its end (best effort: the database may be the
    reason it ended); shielded, so a server shutting down still records it."""
    with anyio.CancelScope(shield=True):
        try:
            async with live.lock:
                await drop(reason)
        except Exception as error:
            log.warning("voice.disconnect_not_recorded", reason=reason, error=first_line(error))
        else:
            log.info("voice.stream_dropped", reason=reason)


def _sender(socket: WebSocket[Any, Any, Any]) -> Callable[[str], Awaitable[None]]:
    """How the assistant's audio reaches a call from outside its socket's own loop."""

    async def send(text: str) -> None:
        try:
            await socket.send_text(text)
        except (WebSocketDisconnect, OSError):
            raise InvalidTransition("the call's WebSocket has gone away") from None

    return send


async def _refuse(
    socket: WebSocket[Any, Any, Any],
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer the handshake with an HTTP error and a JSON body instead of the upgrade."""
    await socket.receive()  # the handshake itself
    log.info("voice.handshake_refused", path=socket.scope["path"], status=status, detail=detail)
    if "websocket.http.response" not in (socket.scope.get("extensions") or {}):
        await socket.close(POLICY_VIOLATION, _reason(detail))  # the server answers 403
        return
    body = msgspec.json.encode(ErrorBody(HTTPStatus(status).phrase.lower(), detail))
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await socket.send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await socket.send({"type": "websocket.http.response.body", "body": body})


async def _close(socket: WebSocket[Any, Any, Any], code: int, reason: str) -> None:
    with suppress(WebSocketDisconnect, OSError, RuntimeError):  # gone: nothing to close
        await socket.close(code, _reason(reason))


def _reason(text: str) -> str:
    """A close reason fits in 123 bytes of UTF-8 (RFC 6455, 5.5)."""
    return text.encode()[:123].decode(errors="ignore")
