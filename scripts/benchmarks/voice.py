"""Voice over WebSocket: the held-out noisy recordings streamed into the real HTTP app (served
on 127.0.0.1 in this process, on the benchmark's schema) as fast as the socket takes them, as a
PCM stream at each file's own rate and as a Twilio call (8 kHz mu-law in 20 ms messages, the
16 kHz files resampled by soxr); the onset and end errors of what was recorded against the
truth, next to the segmenter alone on the same files, and the speed through the socket and the
database in multiples of real time."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

from ...adapters.audio.bench import measure_accuracy, score_utterances
from ...adapters.audio.codecs import mulaw_encode
from ...adapters.audio.convert import AudioFormat, PcmConverter
from ...adapters.audio.twilio import call_conversation_id, twilio_signature
from ...adapters.audio.wav import PcmAudio
from ...adapters.bootstrap import open_app, open_services
from ...adapters.http.settings import Settings
from ...adapters.services import Services
from .audio import noisy_speech_for_benchmark
from .harness import Bench, Figure, Result

Found = dict[str, list[tuple[float, float]]]


def voice_socket(bench: Bench) -> Result:
    """The segmenter's figures on the held-out noisy files through both WebSockets."""
    files = noisy_speech_for_benchmark()
    target = "onsets within 60 ms, ends 50 ms early to 400 ms late, on every file, both sockets"
    unit = "onset/end errors in ms on held-out noisy speech; x real time through socket + database"
    if not files:
        return Result("voice over WebSocket", unit, {}, {}, {}, target, False, "no fixtures found")
    truth = {name: true for name, _, true in files}
    alone = measure_accuracy(files)
    token, twilio_token = secrets.token_hex(16), secrets.token_hex(16)
    settings = Settings(api_token=token, twilio_auth_token=twilio_token)
    ours: dict[str, Figure] = {}
    notes = []
    with (
        open_services(bench.url, schema=bench.schema) as services,
        _serving(services, settings) as port,
    ):
        paths: dict[str, Callable[[str, PcmAudio], list[tuple[float, float]]]] = {
            "pcm stream": lambda _, audio: _over_pcm_stream(port, token, audio),
            "twilio call": lambda name, audio: _over_twilio(
                port, twilio_token, services, name, audio
            ),
        }
        met = True
        for path, stream in paths.items():
            found: Found = {}
            started = time.perf_counter()
            for name, audio, _ in files:
                found[name] = stream(name, audio)
            busy_s = time.perf_counter() - started
            audio_s = sum(len(a.pcm) / 2 / a.sample_rate for _, a, _ in files)
            scored = score_utterances(found, truth)
            for key in ("worst_onset_ms", "earliest_end_ms", "latest_end_ms"):
                ours[f"{path} {key}"] = _once(float(scored[key]))  # type: ignore[arg-type]
            ours[f"{path} x_realtime"] = _once(audio_s / busy_s)
            notes.append(f"{path}: {scored['files_met']}/{scored['files']} files met")
            met = met and scored["files_met"] == scored["files"]
    references = {
        f"segmenter alone {key}": _once(float(alone[key]))  # type: ignore[arg-type]
        for key in ("worst_onset_ms", "earliest_end_ms", "latest_end_ms")
    }
    notes_text = f"{len(files)} files; {'; '.join(notes)}"
    return Result("voice over WebSocket", unit, ours, references, {}, target, met, notes_text)


def _once(value: float) -> Figure:
    return Figure(value, value, value, 1)


@contextmanager
def _serving(services: Services, settings: Settings) -> Iterator[int]:
    """The app on a free port of 127.0.0.1, in a thread of this process, stopped after."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = open_app(services, settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="voice-bench-server")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            raise RuntimeError("the benchmark's server did not start")
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def _over_pcm_stream(port: int, token: str, audio: PcmAudio) -> list[tuple[float, float]]:
    """Stream 20 ms binary frames, stop, and read the utterances back from the facts."""
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{port}/v1/audio-stream?sample_rate={audio.sample_rate}"
    frame = 2 * audio.sample_rate // 50
    utterances = []
    # A short benchmark call needs no keepalive pings (nor their thread, whose timed join
    # libfaketime upsets when .ci/on-another-date runs the bench smoke test).
    with connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, ping_interval=None
    ) as ws:
        for offset in range(0, len(audio.pcm), frame):
            ws.send(audio.pcm[offset : offset + frame])
        ws.send(json.dumps({"event": "stop"}))
        for text in ws:
            fact: dict[str, Any] = json.loads(text)
            if fact["event"] == "speech_ended":
                utterances.append((fact["start_s"], fact["end_s"]))
    return utterances


def _over_twilio(
    port: int, token: str, services: Services, name: str, audio: PcmAudio
) -> list[tuple[float, float]]:
    """Call as Twilio does (a signed handshake, then connected, start, media every 20 ms of
    8 kHz mu-law, stop), and read the utterances back from the conversation's history."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    pcm = audio.pcm
    if audio.sample_rate != 8000:
        converter = PcmConverter(AudioFormat(sample_rate=audio.sample_rate), 8000)
        pcm = converter.convert(pcm) + converter.flush()
    mulaw = mulaw_encode(pcm)
    call_sid = f"CA{secrets.token_hex(16)}"
    url = f"ws://127.0.0.1:{port}/v1/media-stream"
    signature = twilio_signature(token, url.replace("ws://", "wss://"))
    stream_sid = f"MZ{secrets.token_hex(16)}"
    messages = [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {
            "event": "start",
            "start": {
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"file": name},
            },
        },
        *(
            {
                "event": "media",
                "media": {
                    "track": "inbound",
                    "chunk": str(n + 1),
                    "timestamp": str(20 * n),
                    "payload": base64.b64encode(mulaw[o : o + 160]).decode(),
                },
            }
            for n, o in enumerate(range(0, len(mulaw), 160))
        ),
        {"event": "stop", "stop": {"accountSid": "AC0", "callSid": call_sid}},
    ]
    # No keepalive pings, as above.
    with connect(
        url, additional_headers={"X-Twilio-Signature": signature}, ping_interval=None
    ) as ws:
        for number, message in enumerate(messages):
            if number:
                message |= {"sequenceNumber": str(number), "streamSid": stream_sid}
            ws.send(json.dumps(message))
        try:
            for _ in ws:
                pass  # a call without the assistant gets nothing back; the server closes
        except ConnectionClosed:
            pass
    return _utterances(services, call_conversation_id(call_sid))


def _utterances(services: Services, conversation_id: UUID) -> list[tuple[float, float]]:
    """Each recorded utterance's start and end, in seconds after the stream began listening."""
    history = services.engine.history(conversation_id)
    origin = next(h.timestamp for h in history if h.type == "ListeningStarted")
    return [
        (
            (h.timestamp - origin).total_seconds() - h.data["duration_s"],
            (h.timestamp - origin).total_seconds(),
        )
        for h in history
        if h.type == "SpeechEnded"
    ]
