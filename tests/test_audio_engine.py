"""The voice adapter recording into real conversations on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from voxledger.adapters.audio.segmenter import SegmenterConfig
from voxledger.adapters.audio.stream import VoiceStream, stream_audio
from voxledger.adapters.audio.turns import TurnConfig
from voxledger.adapters.audio.wav import read_wav
from voxledger.adapters.bootstrap import open_async_engine
from voxledger.domain.engine import Engine
from voxledger.domain.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "audio"
TRUTH = json.loads((FIXTURES / "truth.json").read_text())
SPEECH = read_wav(FIXTURES / "speech_16k.wav")
STARTED = datetime(2026, 11, 21, 14, 2, tzinfo=UTC)
CONFIG = SegmenterConfig(sample_rate=16000)


async def chunked(pcm: bytes, size: int = 640):
    for offset in range(0, len(pcm), size):
        yield pcm[offset : offset + size]


def listen(engine: Engine, pcm: bytes) -> tuple:
    cid = engine.start_conversation("voice", at=STARTED)
    facts = anyio.run(
        lambda: stream_audio(
            open_async_engine(engine), cid, chunked(pcm), started_at=STARTED, segmenter=CONFIG
        )
    )
    return cid, facts


def test_speech_in_a_file_becomes_speech_and_turn_events_on_the_sample_clock(
    engine: Engine,
) -> None:
    cid, _ = listen(engine, SPEECH.pcm)
    history = engine.history(cid)
    started = [h for h in history if h.type == "SpeechStarted"]
    ended = [h for h in history if h.type == "SpeechEnded"]
    truth = TRUTH["speech_16k.wav"]
    assert len(started) == len(ended) == len(truth)
    for start, end, true in zip(started, ended, truth, strict=True):
        start_s = (start.timestamp - STARTED).total_seconds()
        end_s = (end.timestamp - STARTED).total_seconds()
        assert abs(start_s - true["start_s"]) <= 0.060
        assert abs(end_s - true["end_s"]) <= 0.400
        assert end.data["duration_s"] == pytest.approx(end_s - start_s, abs=1e-6)
    assert [h.type for h in history].count("UserTurnEnded") >= len(truth) - 1
    state = engine.get_conversation(cid)
    assert state.audio.listening and not state.audio.speech_active
    assert state.usage.audio_seconds == pytest.approx(sum(e.data["duration_s"] for e in ended))


def test_replaying_a_file_into_two_fresh_conversations_records_identical_events(
    engine: Engine,
) -> None:
    first, _ = listen(engine, SPEECH.pcm)
    second, _ = listen(engine, SPEECH.pcm)

    def events(cid):
        return [(h.type, h.timestamp, h.data) for h in engine.history(cid)[1:]]

    assert events(first) == events(second)
    assert len(events(first)) > 6


def test_pure_silence_records_no_speech(engine: Engine) -> None:
    cid, _ = listen(engine, read_wav(FIXTURES / "silence_16k.wav").pcm)
    assert not [h for h in engine.history(cid) if h.type.startswith("Speech")]


def test_speaking_over_the_assistant_interrupts_its_turn(engine: Engine) -> None:
    true = TRUTH["speech_16k.wav"][0]
    speech = SPEECH.pcm[: int(true["end_s"] * 16000) * 2 + 3200]
    cid = engine.start_conversation("voice", at=STARTED)

    async def call() -> None:
        stream = VoiceStream(open_async_engine(engine), cid, started_at=STARTED, segmenter=CONFIG)
        await stream.open()
        await open_async_engine(engine).start_turn(cid, at=STARTED)
        await stream.assistant_responds()
        async for chunk in chunked(speech):
            await stream.feed(chunk)
        await stream.close()

    anyio.run(call)
    state = engine.get_conversation(cid)
    assert state.usage.interruptions == 1 and not state.current_turn_active
    interrupted = [h for h in engine.history(cid) if h.type == "TurnInterrupted"]
    assert interrupted[0].data["reason"] == "barge-in"


def test_a_blip_over_the_assistant_does_not_interrupt_it(engine: Engine) -> None:
    true = TRUTH["speech_16k.wav"][0]
    start = int(true["start_s"] * 16000) * 2
    blip = bytes(16000) + SPEECH.pcm[start : start + 2 * 16000 * 15 // 100] + bytes(32000)
    cid = engine.start_conversation("voice", at=STARTED)

    async def call() -> None:
        stream = VoiceStream(
            open_async_engine(engine),
            cid,
            started_at=STARTED,
            segmenter=CONFIG,
            turns=TurnConfig(min_barge_in_ms=300),
        )
        await stream.open()
        await open_async_engine(engine).start_turn(cid, at=STARTED)
        await stream.assistant_responds()
        async for chunk in chunked(blip):
            await stream.feed(chunk)

    anyio.run(call)
    state = engine.get_conversation(cid)
    assert state.usage.interruptions == 0 and state.current_turn_active


@pytest.mark.parametrize(("chunk", "reason"), [("not bytes", "bytes"), (b"\x00", None)])
def test_a_rejected_chunk_records_nothing(engine: Engine, chunk, reason) -> None:
    cid = engine.start_conversation("voice", at=STARTED)

    async def call() -> None:
        stream = VoiceStream(open_async_engine(engine), cid, started_at=STARTED, segmenter=CONFIG)
        await stream.open()
        version = (await open_async_engine(engine).get_conversation(cid)).version
        if reason:
            with pytest.raises(BadInput):
                await stream.feed(chunk)
        else:
            await stream.feed(chunk)  # half a sample waits for its other byte...
            with pytest.raises(BadInput):
                await stream.close()  # ...and a stream cannot end on it
        assert (await open_async_engine(engine).get_conversation(cid)).version == version

    anyio.run(call)


def test_listen_command_prints_the_utterances_it_recorded(cli_env: dict[str, str]) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxledger.scripts.main",
            "listen",
            str(FIXTURES / "speech_noise_20db_16k.wav"),
            "--json",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert len(out["utterances"]) == len(TRUTH["speech_noise_20db_16k.wav"])
    stereo = subprocess.run(
        [
            sys.executable,
            "-m",
            "voxledger.scripts.main",
            "listen",
            str(FIXTURES / "stereo_16k.wav"),
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stereo.returncode == 1 and "mono" in stereo.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--chunk-ms", "0"], "--chunk-ms must be 1 to 60000 ms, got 0"),
        (["--chunk-ms", "-20"], "--chunk-ms must be 1 to 60000 ms, got -20"),
        (["--started-at", "9999-12-31T23:59:00+00:00"], "leaves no room for the audio"),
        (["--started-at", "9999-12-31T23:59:58Z"], "leaves no room for the audio"),
        (["--started-at", "0001-01-01T00:00:00+14:00"], "outside the years"),
        (["--end-of-turn-ms", "0"], "--end-of-turn-ms must be a whole number > 0"),
    ],
)
def test_listen_refuses_a_bad_argument_in_one_line_before_writing_anything(
    cli_env: dict[str, str], engine: Engine, arguments: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voxledger.scripts.main", "listen",
         str(FIXTURES / "speech_8k.wav"), *arguments],
        env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr
    from voxledger.domain.conversation import Conversation

    assert list(engine.store.ids_of(Conversation.Started)) == []


def test_listen_reads_a_long_file_as_a_stream_not_into_memory(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Twenty minutes of real speech and pauses (19 MB): the command's peak memory is that
    of a short file, give or take, never the file's size again (once, let alone twice)."""
    with wave.open(str(FIXTURES / "speech_8k.wav")) as source:
        params, speech = source.getparams(), source.readframes(source.getnframes())
    pause = b"\0" * (params.framerate * params.sampwidth * 5)
    long_file = tmp_path / "twenty_minutes.wav"
    with wave.open(str(long_file), "wb") as sink:
        sink.setparams(params)
        written = 0
        while written < 20 * 60 * params.framerate * params.sampwidth:
            sink.writeframes(speech + pause)
            written += len(speech) + len(pause)

    def peak_mb(path: Path) -> float:
        process = subprocess.Popen(
            [sys.executable, "-m", "voxledger.scripts.main", "listen", str(path)],
            env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _, status, usage = os.wait4(process.pid, 0)  # this child's own peak, no other's
        finally:
            if process.returncode is None and process.poll() is None:
                process.kill()
        assert os.waitstatus_to_exitcode(status) == 0
        return usage.ru_maxrss / 1024  # kB on Linux

    short = peak_mb(FIXTURES / "speech_8k.wav")
    long = peak_mb(long_file)
    size_mb = long_file.stat().st_size / 2**20
    assert size_mb > 18
    assert long < short + size_mb / 2, (short, long, size_mb)
