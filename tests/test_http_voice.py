"""Live voice on a real `voxledger serve`: phone calls over Twilio Media Streams at
/v1/media-stream (real speech as 20 ms mu-law messages, in real time and as fast as the socket
takes them), the assistant's speech on a call, barge-in, refused handshakes and messages, a
stream killed mid-utterance; and the plain PCM16 stream at /v1/audio-stream."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import msgspec
import pytest
from test_http_server import (  # noqa: F401  (the shared harness and its fixtures)
    AUTH,
    TOKEN,
    VOXLEDGER,
    Server,
    events_stored,
    server_env_fixture,
    server_schema_fixture,
)
from test_http_workers import start_two_workers, worker_lines
from twilio_caller import Clear, Mark, TwilioCaller
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from voxledger.adapters.audio.codecs import mulaw_decode, mulaw_encode
from voxledger.adapters.audio.twilio import call_conversation_id, twilio_signature
from voxledger.adapters.audio.wav import read_wav
from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.conversation import TRANSITIONS
from voxledger.domain.engine import Engine
from voxledger.domain.errors import NotFound

AUDIO = Path(__file__).parent / "fixtures" / "audio"
TRUTH = json.loads((AUDIO / "truth.json").read_text())
TWILIO_TOKEN = "twilio-auth-token-for-tests"
PUBLIC_URL = "https://voice.example.test/calls"  # behind a proxy, under a path of its own
SIGNED_URL = "wss://voice.example.test/calls/v1/media-stream"
# The caller, exactly as Twilio carries a call: 8 kHz mu-law (the fixture's data chunk).
CALLER = (AUDIO / "speech_mulaw_8k.wav").read_bytes()[58:]
SILENCE = mulaw_encode(bytes(2 * 8000))  # a second of a quiet line
AUDIO_FACTS = ("SpeechStarted", "SpeechEnded", "UserTurnEnded", "SilenceDetected")


@pytest.fixture(scope="module", name="voice_env")
def voice_env_fixture(server_env: dict[str, str]) -> dict[str, str]:
    return {
        **server_env,
        "VOXLEDGER_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        "VOXLEDGER_PUBLIC_URL": PUBLIC_URL,
    }


@pytest.fixture(scope="module", name="server")
def server_fixture(
    voice_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    running = Server(voice_env, tmp_path_factory.mktemp("voice") / "server.log").start()
    yield running
    running.stop()


@pytest.fixture(name="client")
def client_fixture(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(name="engine")
def engine_fixture(database_url: str, server_schema: str) -> Iterator[Engine]:
    """An engine of the test's own on the server's schema, to read what the server stored."""
    with open_engine(database_url, schema=server_schema) as e:
        yield e


def caller(server: Server, call_sid: str, **kwargs: Any) -> TwilioCaller:
    """Twilio calling the server's media stream, the handshake signed for the public URL."""
    return TwilioCaller(
        server.url.replace("http://", "ws://") + "/v1/media-stream",
        auth_token=TWILIO_TOKEN,
        signed_url=SIGNED_URL,
        call_sid=call_sid,
        stream_sid="MZ" + call_sid[2:],
        custom_parameters={"caller": "+15550100"},
        **kwargs,
    )


def heard(engine: Engine, conversation_id: UUID) -> list[tuple[str, float, dict[str, Any]]]:
    """The audio facts recorded, each at its seconds after the stream began listening."""
    history = engine.history(conversation_id)
    origin = next(h.timestamp for h in history if h.type == "ListeningStarted")
    return [
        (h.type, (h.timestamp - origin).total_seconds(), h.data)
        for h in history
        if h.type in AUDIO_FACTS
    ]


def listened(
    engine: Engine, env: dict[str, str], wav: Path, tmp_path: Path
) -> list[tuple[str, float, dict[str, Any]]]:
    """The same facts for the same audio heard by `voxledger listen`."""
    result = subprocess.run(
        [*VOXLEDGER, "listen", str(wav), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return heard(engine, UUID(json.loads(result.stdout)["conversation_id"]))


def mulaw_wav(path: Path, audio: bytes) -> Path:
    """Mu-law audio as the 16-bit WAV it decodes to (what the stream hears)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(mulaw_decode(audio).tobytes())
    return path


def wait_for_event(engine: Engine, conversation_id: UUID, kind: str, count: int = 1) -> None:
    """Wait for the server to record an event (what a dropped socket leaves, say: it is
    recorded once the server notices the drop)."""
    deadline = time.monotonic() + 30
    kinds: list[str] = []
    while time.monotonic() < deadline:
        with contextlib.suppress(NotFound):  # the conversation may not have started yet
            kinds = [h.type for h in engine.history(conversation_id)]
        if kinds.count(kind) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {kind} in {kinds}")


# -- Twilio Media Streams -------------------------------------------------------------------


def test_a_call_streamed_as_fast_as_the_socket_takes_it_records_what_listen_hears(
    server: Server,
    client: httpx.Client,
    engine: Engine,
    voice_env: dict[str, str],
    database_url: str,
    server_schema: str,
    tmp_path: Path,
) -> None:
    with caller(server, "CA0001fast") as twilio:
        twilio.start()
        twilio.stream(CALLER)
        twilio.stop()
    assert (twilio.close_code, twilio.received) == (1000, [])
    cid = call_conversation_id("CA0001fast")
    history = engine.history(cid)
    assert [h.type for h in history][:3] == ["Started", "Connected", "ListeningStarted"]
    assert history[0].data["channel"] == "twilio"
    assert history[0].data["participant"] == "CA0001fast"
    assert history[-1].type == "Disconnected"
    assert history[-1].data["reason"] == "twilio stream stopped"

    facts = heard(engine, cid)
    assert facts == listened(engine, voice_env, AUDIO / "speech_mulaw_8k.wav", tmp_path)
    starts = [at for kind, at, _ in facts if kind == "SpeechStarted"]
    assert len(starts) == len(TRUTH["speech_8k.wav"])

    # The server's view (its cached conversation) is what replaying the events rebuilds.
    served = client.get(f"/v1/conversations/{cid}", headers=AUTH).json()["conversation"]
    with open_engine(database_url, schema=server_schema) as fresh:
        replayed = fresh.get_conversation(cid)
    assert json.loads(msgspec.json.encode(replayed)) == served
    assert replayed.participant == "CA0001fast" and replayed.metadata == {
        "streamSid": "MZ0001fast",
        "customParameters": {"caller": "+15550100"},
    }


def test_a_call_paced_in_real_time_records_the_same_facts_as_one_streamed_fast(
    server: Server, engine: Engine, voice_env: dict[str, str], tmp_path: Path
) -> None:
    opening = CALLER[: 8000 * 21 // 5]  # 4.2 s: the first phrase and the end of its turn
    with caller(server, "CA0002paced") as twilio:
        twilio.start()
        twilio.stream(opening, pace_s=0.020)
        twilio.stop()
    with caller(server, "CA0002fast") as twilio:
        twilio.start()
        twilio.stream(opening)
        twilio.stop()
    paced = heard(engine, call_conversation_id("CA0002paced"))
    fast = heard(engine, call_conversation_id("CA0002fast"))
    assert paced == fast
    assert [kind for kind, _, _ in paced] == ["SpeechStarted", "SpeechEnded", "UserTurnEnded"]
    assert paced == listened(engine, voice_env, mulaw_wav(tmp_path / "a.wav", opening), tmp_path)


def test_a_handshake_without_twilios_signature_of_the_public_url_is_refused_and_records_nothing(
    server: Server, database_url: str, server_schema: str
) -> None:
    before = events_stored(database_url, server_schema)
    url = server.url.replace("http://", "ws://") + "/v1/media-stream"
    own_url = url.replace("ws://", "wss://")  # what the server sees, not what Twilio signed
    for headers in [
        {},
        {"X-Twilio-Signature": ""},
        {"X-Twilio-Signature": twilio_signature("another-token", SIGNED_URL)},
        {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, own_url)},
        {"X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, SIGNED_URL + "?call=1")},
    ]:
        with pytest.raises(InvalidStatus) as refused:
            connect(url, additional_headers=headers, open_timeout=30)
        response = refused.value.response
        assert response.status_code == 403
        assert json.loads(response.body) == {
            "error": "forbidden",
            "detail": "missing or wrong X-Twilio-Signature",
        }
    # The query string is part of what Twilio signs.
    signed = twilio_signature(TWILIO_TOKEN, SIGNED_URL + "?tenant=7")
    with connect(url + "?tenant=7", additional_headers={"X-Twilio-Signature": signed}):
        pass
    assert events_stored(database_url, server_schema) == before


def test_the_assistants_speech_is_sent_as_twilio_media_and_its_mark_echo_completes_the_turn(
    server: Server, client: httpx.Client, engine: Engine
) -> None:
    words = read_wav(AUDIO / "speech_8k.wav").pcm[: 2 * 12000]  # 1.5 s of the assistant
    cid = call_conversation_id("CA0004speech")
    with caller(server, "CA0004speech") as twilio:
        twilio.start()
        twilio.stream(SILENCE[:4000])  # half a second of the line
        wait_for_event(engine, cid, "ListeningStarted")  # the server has taken the call
        response = client.post(f"/v1/conversations/{cid}/speech", content=words, headers=AUTH)
        assert response.status_code == 202, response.text
        assert response.json() == {
            "conversation_id": str(cid),
            "mark": "voxledger-1",
            "duration_s": 1.5,
            "messages": 3,
        }
        mark = twilio.wait_for(Mark)
        assert bytes(twilio.audio_out) == mulaw_encode(words)
        twilio.stream(SILENCE[:800])
        twilio.play_out()  # the audio played: Twilio echoes the mark
        twilio.stream(SILENCE[:800])
        twilio.stop()
    assert isinstance(mark, Mark) and mark.mark.name == "voxledger-1"
    turn = [h for h in engine.history(cid) if h.type.startswith(("Turn", "Response"))]
    assert [h.type for h in turn] == ["TurnStarted", "ResponseStarted", "TurnCompleted"]
    listening = next(h.timestamp for h in engine.history(cid) if h.type == "ListeningStarted")
    started, responding, completed = ((h.timestamp - listening).total_seconds() for h in turn)
    # On the call's clock: it starts where the caller's audio had reached when the speech
    # came in (the server may not have heard all the line yet), ends at the mark's echo.
    assert started == responding <= 0.5 and completed == 0.6


def test_the_caller_speaking_over_the_assistant_interrupts_its_turn_and_the_server_clears(
    server: Server, client: httpx.Client, engine: Engine
) -> None:
    cid = call_conversation_id("CA0005barge")
    with caller(server, "CA0005barge") as twilio:
        twilio.start()
        twilio.stream(SILENCE[:2000])
        wait_for_event(engine, cid, "ListeningStarted")  # the server has taken the call
        speech = client.post(
            f"/v1/conversations/{cid}/speech",
            content=mulaw_encode(bytes(2 * 8000 * 5)),  # five seconds of the assistant
            params={"encoding": "mulaw", "mark": "answer-1"},
            headers=AUTH,
        )
        assert speech.status_code == 202, speech.text
        twilio.wait_for(Mark)
        twilio.stream(CALLER[: 8000 * 2])  # the caller talks over it from 0.5 s on
        clear = twilio.wait_for(Clear)
        twilio.stream(SILENCE[:1600])
        twilio.stop()
    assert isinstance(clear, Clear) and clear.streamSid == "MZ0005barge"
    history = engine.history(cid)
    kinds = [h.type for h in history]
    assert "TurnCompleted" not in kinds  # the mark echoed after the clear completes nothing
    (interrupted,) = [h for h in history if h.type == "TurnInterrupted"]
    assert interrupted.data["reason"] == "barge-in"
    started = next(h for h in history if h.type == "SpeechStarted")
    assert kinds.index("ResponseStarted") < kinds.index("SpeechStarted")
    assert started.timestamp < interrupted.timestamp


def test_the_speech_endpoint_is_documented_in_the_openapi_schema(client: httpx.Client) -> None:
    schema = client.get("/schema/openapi.json").json()
    speech = schema["paths"]["/v1/conversations/{conversation_id}/speech"]["post"]
    assert speech["tags"] == ["voice"] and speech["security"] == [{"bearer": []}]
    assert {p["name"] for p in speech["parameters"]} >= {"encoding", "sample_rate", "mark"}


def test_speech_is_refused_without_a_live_call_the_token_or_whole_samples(
    server: Server, client: httpx.Client, engine: Engine
) -> None:
    nobody = call_conversation_id("CA-not-calling")
    refused = client.post(f"/v1/conversations/{nobody}/speech", content=b"\0\0", headers=AUTH)
    assert refused.status_code == 404 and "no live call" in refused.json()["detail"]
    assert client.post(f"/v1/conversations/{nobody}/speech", content=b"\0\0").status_code == 401
    cid = call_conversation_id("CA0006refused")
    with caller(server, "CA0006refused") as twilio:
        twilio.start()
        twilio.stream(SILENCE[:800])
        wait_for_event(engine, cid, "ListeningStarted")  # the server has taken the call
        url = f"/v1/conversations/{cid}/speech"
        for content, params, reason in [
            (b"\0\0\0", {}, "ends inside a sample"),
            (b"", {}, "no audio"),
            (b"\0\0", {"encoding": "opus"}, "encoding"),
            (b"\0\0", {"sample_rate": "4000"}, "sample_rate"),
            (b"\0\0", {"mark": "no spaces allowed"}, "mark"),
        ]:
            response = client.post(url, content=content, params=params, headers=AUTH)
            assert response.status_code == 400, response.text
            assert reason in json.dumps(response.json())
        twilio.stop()
    assert twilio.received == []


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("not json", "Twilio message is not valid"),
        ('{"event": "media", "sequenceNumber": "9"}', "Twilio message is not valid"),
        (b"\x00\x01", "Twilio sends JSON text frames"),
    ],
)
def test_a_malformed_message_closes_the_socket_after_recording_what_was_valid(
    server: Server, engine: Engine, message: str | bytes, reason: str
) -> None:
    call_sid = f"CA0007bad{len(message)}"
    with caller(server, call_sid) as twilio:
        twilio.start()
        twilio.stream(CALLER[: 8000 * 3 // 2])  # speech from 0.5 s, still going at 1.5 s
        twilio.send_raw(message)
        twilio.wait_closed()
    assert twilio.close_code == 1008 and twilio.close_reason.startswith(reason)
    history = engine.history(call_conversation_id(call_sid))
    assert [h.type for h in history][-2:] == ["SpeechEnded", "Disconnected"]
    assert history[-1].data["reason"].startswith(f"twilio stream closed: {reason}")
    listening = next(h.timestamp for h in history if h.type == "ListeningStarted")
    assert (history[-1].timestamp - listening).total_seconds() == 1.5


def test_a_socket_dropped_mid_utterance_leaves_a_consistent_conversation_recorded_as_a_disconnect(
    server: Server, engine: Engine, database_url: str, server_schema: str
) -> None:
    cid = call_conversation_id("CA0008dropped")
    with caller(server, "CA0008dropped") as twilio:
        twilio.start()
        twilio.stream(CALLER[: 8000 * 3 // 2])
        twilio.drop()
    wait_for_event(engine, cid, "Disconnected")
    with open_engine(database_url, schema=server_schema) as fresh:
        state = fresh.get_conversation(cid)
        history = fresh.history(cid)
    assert [h.version for h in history] == list(range(1, state.version + 1))
    assert state.status == "disconnected" and not state.audio.speech_active
    assert [h.type for h in history][-2:] == ["SpeechEnded", "Disconnected"]
    assert history[-1].data["reason"].startswith("twilio stream dropped")


def test_a_server_killed_mid_utterance_leaves_a_consistent_conversation_the_call_takes_up_again(
    voice_env: dict[str, str],
    engine: Engine,
    database_url: str,
    server_schema: str,
    tmp_path: Path,
) -> None:
    cid = call_conversation_id("CA0009killed")
    server = Server(voice_env, tmp_path / "killed.log").start()
    try:
        with caller(server, "CA0009killed") as twilio:
            twilio.start()
            twilio.stream(CALLER[: 8000 * 3 // 2])
            wait_for_event(engine, cid, "SpeechStarted")
            server.kill()
            twilio.wait_closed()
    finally:
        server.stop()
    with open_engine(database_url, schema=server_schema) as fresh:
        state = fresh.get_conversation(cid)
        history = fresh.history(cid)
    assert [h.version for h in history] == list(range(1, state.version + 1))
    assert state.status in TRANSITIONS and state.status == "listening"

    # The call's next stream, on a server started again, takes the conversation up.
    server = Server(voice_env, tmp_path / "again.log").start()
    try:
        with caller(server, "CA0009killed") as twilio:
            twilio.start()
            twilio.stream(CALLER[: 8000 * 2])
            twilio.stop()
    finally:
        server.stop()
    history = engine.history(cid)
    lost = next(h for h in history if h.type == "Disconnected")
    assert lost.data["reason"] == "stream MZ0009killed lost"
    after = [h.type for h in history[history.index(lost) :]]
    assert after[:3] == ["Disconnected", "Connected", "ListeningStarted"]
    assert after[-1] == "Disconnected" and "SpeechStarted" in after


def test_no_auth_token_turns_the_media_stream_off_and_no_public_url_signs_the_own_url(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    off = Server(server_env, tmp_path / "off.log").start()
    try:
        with pytest.raises(InvalidStatus) as refused:
            connect(off.url.replace("http://", "ws://") + "/v1/media-stream", open_timeout=30)
    finally:
        off.stop()
    assert refused.value.response.status_code == 403
    assert "VOXLEDGER_TWILIO_AUTH_TOKEN is not set" in refused.value.response.body.decode()

    env = {**server_env, "VOXLEDGER_TWILIO_AUTH_TOKEN": TWILIO_TOKEN}
    direct = Server(env, tmp_path / "direct.log").start()
    try:
        url = direct.url.replace("http://", "ws://") + "/v1/media-stream"
        own = url.replace("ws://", "wss://")
        with TwilioCaller(
            url, auth_token=TWILIO_TOKEN, signed_url=own, call_sid="CA0010", stream_sid="MZ0010"
        ) as twilio:
            twilio.start()
            twilio.stop()
    finally:
        direct.stop()
    assert twilio.close_code == 1000


# -- the plain PCM16 stream -----------------------------------------------------------------


def pcm_stream(server: Server, query: str, headers: dict[str, str]) -> ClientConnection:
    url = server.url.replace("http://", "ws://") + "/v1/audio-stream?" + query
    return connect(url, additional_headers=headers, open_timeout=30, max_size=None)


def messages(ws: ClientConnection, until: str) -> list[dict[str, Any]]:
    """Every JSON message up to and including the first of event `until`."""
    got = []
    while True:
        got.append(json.loads(ws.recv(timeout=30)))
        if got[-1]["event"] == until:
            return got


def test_the_pcm_stream_answers_only_with_the_bearer_token_and_a_valid_query(
    server: Server, database_url: str, server_schema: str
) -> None:
    before = events_stored(database_url, server_schema)
    for headers, status in [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            pcm_stream(server, "sample_rate=16000", headers)
        assert refused.value.response.status_code == status
        assert refused.value.response.headers["WWW-Authenticate"] == "Bearer"
    for query, status, reason in [
        ("", 400, "sample_rate"),
        ("sample_rate=4000", 400, "8000 to 96000"),
        ("sample_rate=16000&channels=2", 400, "channel left, right or mix"),
        ("sample_rate=16000&rate=8000", 400, "rate"),
        ("sample_rate=16000&sample_rate=8000", 400, "more than once"),
        ("sample_rate=16000&conversation=nope", 400, "conversation"),
        (f"sample_rate=16000&conversation={call_conversation_id('CA-none')}", 404, "no "),
        (
            f"sample_rate=16000&conversation={call_conversation_id('CA-none')}&participant=x",
            400,
            "participant is for a new conversation",
        ),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            pcm_stream(server, query, AUTH)
        assert refused.value.response.status_code == status, query
        assert reason in json.loads(refused.value.response.body)["detail"], query
    assert events_stored(database_url, server_schema) == before


def test_pcm_at_any_rate_is_heard_as_listen_hears_the_file_and_each_fact_comes_back(
    server: Server, engine: Engine, voice_env: dict[str, str], tmp_path: Path
) -> None:
    speech = read_wav(AUDIO / "speech_16k.wav")
    frame = 2 * 16000 // 50  # 20 ms
    with pcm_stream(server, "sample_rate=16000&participant=kiosk-3", AUTH) as ws:
        (started,) = messages(ws, "started")
        for offset in range(0, len(speech.pcm), frame):
            ws.send(speech.pcm[offset : offset + frame])
        ws.send(json.dumps({"event": "stop"}))
        facts = messages(ws, "stopped")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
    assert ws.close_code == 1000
    cid = UUID(started["conversation_id"])
    assert started["sample_rate"] == 16000
    recorded = heard(engine, cid)
    assert recorded == listened(engine, voice_env, AUDIO / "speech_16k.wav", tmp_path)
    kinds = {"speech_started": "SpeechStarted", "speech_ended": "SpeechEnded"}
    kinds |= {"turn_ended": "UserTurnEnded", "silence": "SilenceDetected"}
    assert [kinds[f["event"]] for f in facts[:-1]] == [kind for kind, _, _ in recorded]
    for fact, (_, at_s, _) in zip(facts, recorded, strict=False):
        assert fact.get("at_s", fact.get("end_s")) == pytest.approx(at_s, abs=1e-6)
    state = engine.get_conversation(cid)
    assert (state.channel, state.participant, state.status) == ("voice", "kiosk-3", "disconnected")


def test_the_pcm_stream_hears_stereo_at_44_1_khz_through_the_channel_chosen(
    server: Server, engine: Engine
) -> None:
    import numpy as np
    import soxr

    mono = read_wav(AUDIO / "speech_16k.wav")
    samples = np.frombuffer(mono.pcm, "<i2").astype(np.float32) / 32768
    wide = soxr.resample(samples, 16000, 44100)
    stereo = np.stack([np.zeros_like(wide), wide], axis=1)  # the words on the right only
    pcm = (np.clip(stereo, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes()
    frame = 4 * 441 * 2  # 20 ms of both channels
    with pcm_stream(server, "sample_rate=44100&channels=2&channel=right", AUTH) as ws:
        (started,) = messages(ws, "started")
        for offset in range(0, len(pcm), frame - 2):  # frames that split samples
            ws.send(pcm[offset : offset + frame - 2])
        ws.send(json.dumps({"event": "stop"}))
        facts = messages(ws, "stopped")
    assert started["sample_rate"] == 16000  # heard at the segmenter's rate
    onsets = [f["at_s"] for f in facts if f["event"] == "speech_started"]
    truth = [u["start_s"] for u in TRUTH["speech_16k.wav"]]
    assert len(onsets) == len(truth)
    assert all(abs(onset - true) <= 0.06 for onset, true in zip(onsets, truth, strict=True))


def test_speech_over_the_assistants_playback_on_the_pcm_stream_is_a_barge_in(
    server: Server, engine: Engine
) -> None:
    speech = read_wav(AUDIO / "speech_16k.wav").pcm
    frame = 2 * 16000 // 50
    with pcm_stream(server, "sample_rate=16000", AUTH) as ws:
        (started,) = messages(ws, "started")
        ws.send(json.dumps({"event": "playback", "playing": True}))
        for offset in range(0, 2 * 16000 * 2, frame):  # two seconds: words from 0.5 s on
            ws.send(speech[offset : offset + frame])
        barge_in = messages(ws, "barge_in")[-1]
        ws.send(json.dumps({"event": "playback", "playing": False}))  # it stopped playing
        ws.send(json.dumps({"event": "louder"}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "control message is not valid" in closed.value.rcvd.reason
    assert 0.5 < barge_in["at_s"] < 1.2
    history = engine.history(UUID(started["conversation_id"]))
    kinds = [h.type for h in history]
    assert kinds.index("ResponseStarted") < kinds.index("TurnInterrupted")
    assert "TurnCompleted" not in kinds and kinds[-1] == "Disconnected"


def test_a_conversation_heard_on_one_stream_is_refused_a_second_one(
    server: Server, client: httpx.Client, engine: Engine
) -> None:
    with pcm_stream(server, "sample_rate=8000", AUTH) as ws:
        (started,) = messages(ws, "started")
        cid = started["conversation_id"]
        with pytest.raises(InvalidStatus) as refused:
            pcm_stream(server, f"sample_rate=8000&conversation={cid}", AUTH)
        assert refused.value.response.status_code == 409
        speech = client.post(f"/v1/conversations/{cid}/speech", content=b"\0\0", headers=AUTH)
        assert speech.status_code == 409 and "PCM audio stream" in speech.json()["detail"]
        ws.send(json.dumps({"event": "stop"}))
        messages(ws, "stopped")
    # Once it has ended, the conversation can be heard again: it reconnects.
    with pcm_stream(server, f"sample_rate=8000&conversation={cid}", AUTH) as ws:
        messages(ws, "started")
    wait_for_event(engine, UUID(cid), "Disconnected", count=2)
    state = engine.get_conversation(UUID(cid))
    assert state.connection.reconnect_count == 1


# -- several workers -------------------------------------------------------------------------


def test_with_two_workers_speech_reaches_the_call_and_a_second_stream_is_refused_on_either(
    voice_env: dict[str, str], tmp_path: Path, engine: Engine
) -> None:
    """A call is held by the worker that took its WebSocket; speech posted on connections
    the kernel spreads over both workers is played on it, in order, and a second stream
    for the conversation is refused whichever worker it reaches."""
    log = tmp_path / "server.log"
    server = start_two_workers(voice_env, log)
    words = read_wav(AUDIO / "speech_8k.wav").pcm[: 2 * 1600]  # 0.2 s of the assistant
    cid = call_conversation_id("CA0011workers")
    try:
        with caller(server, "CA0011workers") as twilio:
            twilio.start()
            twilio.stream(SILENCE[:4000])
            wait_for_event(engine, cid, "ListeningStarted")
            for n in range(16):
                with httpx.Client(base_url=server.url, timeout=30) as fresh:  # either worker
                    spoken = fresh.post(
                        f"/v1/conversations/{cid}/speech",
                        content=words,
                        params={"mark": f"say-{n}"},
                        headers=AUTH,
                    )
                assert spoken.status_code == 202, spoken.text
                assert spoken.json() == {
                    "conversation_id": str(cid),
                    "mark": f"say-{n}",
                    "duration_s": 0.2,
                    "messages": 2,  # a media message and its mark
                }
            marks = [twilio.wait_for(Mark) for _ in range(16)]
            assert [m.mark.name for m in marks if isinstance(m, Mark)] == [
                f"say-{n}" for n in range(16)
            ]
            assert bytes(twilio.audio_out) == mulaw_encode(words) * 16
            refusals = []
            for _ in range(16):
                with pytest.raises(InvalidStatus) as refused:
                    pcm_stream(server, f"sample_rate=8000&conversation={cid}", AUTH)
                assert refused.value.response.status_code == 409
                refusals.append(refused.value.response.body.decode())
            twilio.stream(SILENCE[:800])
            twilio.stop()
        gone = [
            httpx.post(f"{server.url}/v1/conversations/{cid}/speech", content=words, headers=AUTH)
            for _ in range(4)
        ]
        assert {r.status_code for r in gone} == {404}
    finally:
        server.stop()
    (opened,) = worker_lines(log, "voice.stream_opened")
    holder = opened["worker"]
    speech = [line for line in worker_lines(log, "http.request") if "speech" in line["path"]]
    took = [line for line in speech if line["status"] == 202]
    assert len(took) == 16 and {line["worker"] for line in took} == {0, 1}
    assert all(line.get("served_by", line["worker"]) == holder for line in took)
    # Refused by the holder itself, and by the other worker, which asked it.
    assert any("by another worker" in r for r in refusals)
    assert any("by another worker" not in r for r in refusals)
    assert all("already heard on a live stream" in r for r in refusals)
    # The refused streams recorded nothing: the conversation was heard on one stream, once.
    assert [h.type for h in engine.history(cid)].count("ListeningStarted") == 1
