"""A Twilio Media Stream of real speech, message by message as Twilio sends it, recorded into a
real conversation on PostgreSQL; the messages sent back; the signature check."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import anyio
import pytest

from voxledger.adapters.audio.codecs import mulaw_encode
from voxledger.adapters.audio.twilio import (
    MediaStreamSession,
    call_conversation_id,
    signature_is_valid,
    twilio_signature,
)
from voxledger.adapters.audio.wav import read_wav
from voxledger.adapters.bootstrap import open_async_engine, open_engine
from voxledger.domain.conversation import TRANSITIONS, Conversation
from voxledger.domain.engine import Engine
from voxledger.domain.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "audio"
TRUTH = json.loads((FIXTURES / "truth.json").read_text())
STARTED = datetime(2026, 11, 21, 14, 2, tzinfo=UTC)
STREAM_SID, CALL_SID = "MZ18ad3ab5a668481ce02b83e7395059f0", "CA7c2d4a9b0e1f23456789abcdef012345"
# The caller's audio exactly as Twilio carries it: 8 kHz mu-law, 20 ms (160 bytes) a message.
CALLER = (FIXTURES / "speech_mulaw_8k.wav").read_bytes()[58:]


class Twilio:
    """Writes Twilio's messages for one stream, numbering them as Twilio does."""

    def __init__(self, call_sid: str = CALL_SID) -> None:
        self.sequence = 0
        self.call_sid = call_sid

    def _next(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, **format_changes: object) -> str:
        media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next(),
                "start": {
                    "accountSid": "AC0123456789abcdef0123456789abcdef",
                    "streamSid": STREAM_SID,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {**media_format, **format_changes},
                    "customParameters": {"caller": "+15550100"},
                },
                "streamSid": STREAM_SID,
            }
        )

    def media(self, chunk: int, payload: bytes) -> str:
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next(),
                "media": {
                    "track": "inbound",
                    "chunk": str(chunk),
                    "timestamp": str(20 * (chunk - 1)),
                    "payload": base64.b64encode(payload).decode(),
                },
                "streamSid": STREAM_SID,
            }
        )

    def mark(self, name: str) -> str:
        return json.dumps(
            {"event": "mark", "sequenceNumber": self._next(), "streamSid": STREAM_SID,
             "mark": {"name": name}}
        )  # fmt: skip

    def stop(self) -> str:
        return json.dumps(
            {"event": "stop", "sequenceNumber": self._next(), "streamSid": STREAM_SID,
             "stop": {"accountSid": "AC0123456789abcdef0123456789abcdef",
                      "callSid": self.call_sid}}
        )  # fmt: skip


def frames(audio: bytes) -> list[bytes]:
    return [audio[o : o + 160] for o in range(0, len(audio), 160)]


async def call(
    engine: Engine,
    audio: bytes,
    *,
    pace_s: float = 0.0,
    stop: bool = True,
    call_sid: str = CALL_SID,
) -> MediaStreamSession:
    twilio = Twilio(call_sid)
    session = MediaStreamSession(open_async_engine(engine), started_at=STARTED)
    assert await session.handle(twilio.connected()) == []
    assert await session.handle(twilio.start()) == []
    for chunk, payload in enumerate(frames(audio), start=1):
        assert await session.handle(twilio.media(chunk, payload)) == []
        if pace_s:
            await anyio.sleep(pace_s)
    if stop:
        await session.handle(twilio.stop())
    return session


def events(engine: Engine, session: MediaStreamSession) -> list[tuple]:
    assert session.conversation_id is not None
    return [(h.type, h.timestamp, h.data) for h in engine.history(session.conversation_id)]


def test_a_call_streamed_as_twilio_media_records_speech_on_the_stream_clock(
    engine: Engine, database_url: str, schema: str
) -> None:
    session = anyio.run(lambda: call(engine, CALLER))
    cid = session.conversation_id
    history = engine.history(cid)
    started = [h for h in history if h.type == "SpeechStarted"]
    ended = [h for h in history if h.type == "SpeechEnded"]
    truth = TRUTH["speech_8k.wav"]
    assert len(started) == len(ended) == len(truth)
    for start, end, true in zip(started, ended, truth, strict=True):
        assert abs((start.timestamp - STARTED).total_seconds() - true["start_s"]) <= 0.060
        assert -0.050 <= (end.timestamp - STARTED).total_seconds() - true["end_s"] <= 0.400
    kinds = [h.type for h in history]
    assert kinds[:3] == ["Started", "Connected", "ListeningStarted"]
    assert kinds[-1] == "Disconnected" and "UserTurnEnded" in kinds
    state = engine.get_conversation(cid)
    assert state.status == "disconnected" and state.connection.connection_id == STREAM_SID
    assert (state.channel, state.participant) == ("twilio", CALL_SID)
    assert cid == call_conversation_id(CALL_SID)
    assert state.metadata["customParameters"] == {"caller": "+15550100"}
    # Replaying the stored events in a fresh engine rebuilds the same state.
    with open_engine(database_url, schema=schema) as fresh:
        assert fresh.get_conversation(cid) == state


def test_the_same_call_paced_in_real_time_records_the_same_events(engine: Engine) -> None:
    opening = CALLER[: 8000 * 2]  # two seconds: the first phrase starts
    fast = anyio.run(lambda: call(engine, opening, call_sid="CA-fast"))
    paced = anyio.run(lambda: call(engine, opening, pace_s=0.02, call_sid="CA-paced"))
    assert events(engine, fast)[1:] == events(engine, paced)[1:]
    assert "SpeechStarted" in [e[0] for e in events(engine, paced)]


def test_a_gap_in_the_media_timestamps_is_heard_as_silence(engine: Engine) -> None:
    async def gapped() -> MediaStreamSession:
        twilio = Twilio()
        session = MediaStreamSession(open_async_engine(engine), started_at=STARTED)
        await session.handle(twilio.start())
        for chunk, payload in enumerate(frames(CALLER), start=1):
            if not 100 <= chunk < 150:  # one second of messages lost
                await session.handle(twilio.media(chunk, payload))
        return session

    session = anyio.run(gapped)
    assert session.stream is not None
    assert session.stream.listener.samples_fed == len(CALLER)


def test_a_stream_dropped_without_stop_leaves_a_consistent_conversation(
    engine: Engine, database_url: str, schema: str
) -> None:
    session = anyio.run(lambda: call(engine, CALLER[: len(CALLER) // 2], stop=False))
    del session.stream  # the WebSocket died: nothing more is heard or recorded
    cid = session.conversation_id
    with open_engine(database_url, schema=schema) as fresh:
        state = fresh.get_conversation(cid)
        history = fresh.history(cid)
    assert [h.version for h in history] == list(range(1, state.version + 1))
    assert state.status in TRANSITIONS and state.status == "listening"
    assert "SpeechStarted" in [h.type for h in history]


def test_the_assistant_speaks_until_twilio_echoes_its_mark_and_the_turn_completes(
    engine: Engine,
) -> None:
    async def run() -> tuple[MediaStreamSession, list[str]]:
        twilio = Twilio()
        session = MediaStreamSession(open_async_engine(engine), started_at=STARTED)
        await session.handle(twilio.start())
        silence = mulaw_encode(bytes(320))
        for chunk in range(1, 11):
            await session.handle(twilio.media(chunk, silence))
        await open_async_engine(engine).start_turn(session.conversation_id, at=STARTED)
        sent = await session.speak(read_wav(FIXTURES / "speech_8k.wav").pcm[:16000])
        assert session.assistant_speaking
        name = json.loads(sent[-1])["mark"]["name"]
        await session.handle(twilio.mark(name))
        return session, sent

    session, sent = anyio.run(run)
    media = [json.loads(m) for m in sent[:-1]]
    assert all(m["event"] == "media" and m["streamSid"] == STREAM_SID for m in media)
    assert sum(len(base64.b64decode(m["media"]["payload"])) for m in media) == 8000
    assert json.loads(sent[-1])["event"] == "mark"
    assert not session.assistant_speaking
    state = engine.get_conversation(session.conversation_id)
    assert state.usage.turns == 1 and not state.current_turn_active


def test_the_caller_speaking_over_the_assistant_interrupts_it_and_clears_its_audio(
    engine: Engine,
) -> None:
    async def run() -> list[str]:
        twilio = Twilio()
        session = MediaStreamSession(open_async_engine(engine), started_at=STARTED)
        await session.handle(twilio.start())
        await open_async_engine(engine).start_turn(session.conversation_id, at=STARTED)
        await session.speak(bytes(8000 * 2 * 5))  # five seconds of the assistant
        replies: list[str] = []
        for chunk, payload in enumerate(frames(CALLER[: 8000 * 3]), start=1):
            replies += await session.handle(twilio.media(chunk, payload))
        assert not session.assistant_speaking
        return replies

    replies = anyio.run(run)
    assert [json.loads(r) for r in replies] == [{"event": "clear", "streamSid": STREAM_SID}]
    interrupted = [h for h in engine.history(engine_last(engine)) if h.type == "TurnInterrupted"]
    assert interrupted and interrupted[0].data["reason"] == "barge-in"


def test_the_assistant_speaking_with_no_turn_in_progress_starts_one_for_its_words(
    engine: Engine,
) -> None:
    async def run() -> MediaStreamSession:
        twilio = Twilio()
        session = MediaStreamSession(open_async_engine(engine), started_at=STARTED)
        await session.handle(twilio.start())
        silence = mulaw_encode(bytes(320))
        for chunk in range(1, 26):  # half a second of the line before the greeting
            await session.handle(twilio.media(chunk, silence))
        sent = await session.speak(read_wav(FIXTURES / "speech_8k.wav").pcm[:8000], "hello")
        assert json.loads(sent[-1])["mark"] == {"name": "hello"}
        with pytest.raises(BadInput, match="already waiting"):
            await session.speak(bytes(320), "hello")
        await session.handle(twilio.mark("hello"))
        return session

    session = anyio.run(run)
    history = engine.history(session.conversation_id)
    turn = [h for h in history if h.type in ("TurnStarted", "ResponseStarted", "TurnCompleted")]
    assert [h.type for h in turn] == ["TurnStarted", "ResponseStarted", "TurnCompleted"]
    # On the stream's clock: the greeting started after half a second of the call.
    assert {(h.timestamp - STARTED).total_seconds() for h in turn} == {0.5}
    state = engine.get_conversation(session.conversation_id)
    assert state.usage.turns == 1 and state.status == "listening"


def test_the_caller_barging_in_on_a_greeting_interrupts_the_turn_the_greeting_started(
    engine: Engine,
) -> None:
    async def run() -> list[str]:
        twilio = Twilio()
        session = MediaStreamSession(open_async_engine(engine), started_at=STARTED)
        await session.handle(twilio.start())
        await session.speak(bytes(8000 * 2 * 5))
        replies: list[str] = []
        for chunk, payload in enumerate(frames(CALLER[: 8000 * 3]), start=1):
            replies += await session.handle(twilio.media(chunk, payload))
        await session.handle(twilio.mark("voxledger-1"))  # echoed by the clear: ignored
        await session.handle(twilio.stop())
        return replies

    replies = anyio.run(run)
    assert [json.loads(r)["event"] for r in replies] == ["clear"]
    kinds = [h.type for h in engine.history(engine_last(engine))]
    assert kinds.count("TurnInterrupted") == 1 and "TurnCompleted" not in kinds
    assert kinds[-1] == "Disconnected"


def test_a_stream_dropped_mid_utterance_records_what_was_heard_and_the_disconnect(
    engine: Engine, database_url: str, schema: str
) -> None:
    async def run() -> MediaStreamSession:
        session = await call(engine, CALLER[: 8000 * 2], stop=False)  # speech from 0.5 s
        await session.drop("twilio stream dropped")
        await session.drop("twice")  # the second time there is nothing left to record
        with pytest.raises(BadInput, match="stopped"):
            await session.speak(bytes(320))
        return session

    session = anyio.run(run)
    with open_engine(database_url, schema=schema) as fresh:
        state = fresh.get_conversation(session.conversation_id)
        history = fresh.history(session.conversation_id)
    assert [h.type for h in history][-2:] == ["SpeechEnded", "Disconnected"]
    assert (history[-1].timestamp - STARTED).total_seconds() == 2.0
    assert history[-1].data["reason"] == "twilio stream dropped"
    assert state.status == "disconnected" and not state.audio.speech_active


def test_a_later_stream_of_the_same_call_continues_its_conversation(engine: Engine) -> None:
    first = anyio.run(lambda: call(engine, CALLER[: 8000 * 2]))
    second = anyio.run(lambda: call(engine, CALLER[: 8000 * 2]))
    assert first.conversation_id == second.conversation_id
    state = engine.get_conversation(second.conversation_id)
    assert state.connection.reconnect_count == 1 and state.status == "disconnected"


def test_a_stream_takes_over_a_call_whose_earlier_stream_was_lost_with_its_process(
    engine: Engine,
) -> None:
    anyio.run(lambda: call(engine, CALLER[: 8000 * 2], stop=False))  # never stopped nor dropped
    second = anyio.run(lambda: call(engine, CALLER[: 8000 * 2]))
    history = engine.history(second.conversation_id)
    lost = next(h for h in history if h.type == "Disconnected")
    assert lost.data["reason"] == f"stream {STREAM_SID} lost"
    after = [h.type for h in history[history.index(lost) :]]
    assert after[:3] == ["Disconnected", "Connected", "ListeningStarted"]
    assert "SpeechStarted" in after


def test_media_jumping_far_past_the_audio_received_is_refused(engine: Engine) -> None:
    async def run() -> None:
        twilio = Twilio()
        session = MediaStreamSession(open_async_engine(engine), started_at=STARTED)
        await session.handle(twilio.start())
        await session.handle(twilio.media(1, b"\xff" * 160))
        with pytest.raises(BadInput, match="jumps more than 60 s"):
            await session.handle(twilio.media(3100, b"\xff" * 160))  # a minute later

    anyio.run(run)


def engine_last(engine: Engine) -> UUID:
    """The conversation the test just made (the only one in its schema)."""
    (cid,) = list(engine.store.ids_of(Conversation.Started))
    return cid


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json", "not valid"),
        ('{"event": "media"}', "not valid"),
        ('{"event": "unknown", "sequenceNumber": "2"}', "not valid"),
        ('{"event": "start", "sequenceNumber": 2, "streamSid": "MZ1", "start": {}}', "not valid"),
    ],
)
def test_a_malformed_message_is_refused_and_records_nothing(
    engine: Engine, message: str, reason: str
) -> None:
    async def run() -> None:
        session = MediaStreamSession(open_async_engine(engine), started_at=STARTED)
        with pytest.raises(BadInput, match=reason):
            await session.handle(message)

    anyio.run(run)
    assert list(engine.store.ids_of(Conversation.Started)) == []


def test_media_out_of_order_or_for_another_stream_or_badly_encoded_is_refused(
    engine: Engine,
) -> None:
    async def run() -> None:
        twilio = Twilio()
        session = MediaStreamSession(open_async_engine(engine), started_at=STARTED)
        with pytest.raises(BadInput, match="has not started"):
            await session.handle(twilio.media(1, b"\xff" * 160))
        with pytest.raises(BadInput, match="audio/x-mulaw at 8000 Hz"):
            await session.handle(twilio.start(sampleRate=16000))
        await session.handle(twilio.start())
        version = (
            await open_async_engine(engine).get_conversation(session.conversation_id)
        ).version
        good = json.loads(twilio.media(1, b"\xff" * 160))
        for field, value, reason in [
            ("sequenceNumber", "1", "not after"),
            ("streamSid", "MZother", "not this stream"),
        ]:
            with pytest.raises(BadInput, match=reason):
                await session.handle(json.dumps({**good, field: value}))
        bad_payload = {**good, "sequenceNumber": "90", "media": {**good["media"], "payload": "%%"}}
        with pytest.raises(BadInput, match="not valid base64"):
            await session.handle(json.dumps(bad_payload))
        numeric = {**good, "sequenceNumber": "91", "media": {**good["media"], "timestamp": 20}}
        with pytest.raises(BadInput, match="not valid"):
            await session.handle(json.dumps(numeric))
        assert (
            await open_async_engine(engine).get_conversation(session.conversation_id)
        ).version == version

    anyio.run(run)


def test_the_twilio_signature_covers_the_url_and_every_sorted_parameter() -> None:
    url = "wss://voice.example.com/v1/media-stream?conversation=42"
    params = {"CallSid": CALL_SID, "From": "+15550100", "To": "+15550199"}
    signature = twilio_signature("auth-token", url, params)
    assert len(base64.b64decode(signature)) == 20  # a SHA-1 digest
    assert signature_is_valid("auth-token", url, dict(reversed(params.items())), signature)
    assert not signature_is_valid("other-token", url, params, signature)
    assert not signature_is_valid("auth-token", url + "&x=1", params, signature)
    assert not signature_is_valid("auth-token", url, {**params, "To": "+1"}, signature)
    assert not signature_is_valid("auth-token", url, params, signature[:-2] + "A=")
    assert twilio_signature("t", url) == twilio_signature("t", url, {})
