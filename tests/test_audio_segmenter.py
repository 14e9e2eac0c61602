"""Cutting real speech into utterances: accuracy, chunking invariance and refused input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxledger.adapters.audio.listener import Listener
from voxledger.adapters.audio.segmenter import (
    Segmenter,
    SegmenterConfig,
    SpeechEnded,
    SpeechStarted,
    Utterance,
    dbfs,
    open_segmenter,
)
from voxledger.adapters.audio.silero import silero_available
from voxledger.adapters.audio.turns import TurnConfig
from voxledger.adapters.audio.wav import read_wav
from voxledger.domain.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "audio"
TRUTH = json.loads((FIXTURES / "truth.json").read_text())
SPEECH = read_wav(FIXTURES / "speech_16k.wav")


def segment(pcm: bytes, config: SegmenterConfig) -> list[SpeechStarted | SpeechEnded]:
    segmenter = Segmenter(config)
    return segmenter.feed(pcm) + segmenter.close()


def utterances(events: list[SpeechStarted | SpeechEnded]) -> list[Utterance]:
    return [e.utterance for e in events if isinstance(e, SpeechEnded)]


def in_chunks(pcm: bytes, sizes: list[int]) -> list[bytes]:
    """Cut `pcm` into consecutive chunks, cycling through `sizes` (bytes) until it runs out."""
    chunks, offset, i = [], 0, 0
    while offset < len(pcm):
        chunks.append(pcm[offset : offset + sizes[i % len(sizes)]])
        offset += sizes[i % len(sizes)]
        i += 1
    return chunks


@pytest.mark.parametrize(
    "name", ["speech_16k.wav", "speech_noise_20db_16k.wav", "speech_8k.wav", "long_16k.wav"]
)
def test_utterances_match_the_clean_signal_within_60_ms_at_start_and_400_ms_at_end(
    name: str,
) -> None:
    audio = read_wav(FIXTURES / name)
    found = utterances(segment(audio.pcm, SegmenterConfig(sample_rate=audio.sample_rate)))
    truth = TRUTH[name]
    assert len(found) == len(truth)
    for utterance, true in zip(found, truth, strict=True):
        assert abs(utterance.start_s - true["start_s"]) <= 0.060, (utterance, true)
        assert abs(utterance.end_s - true["end_s"]) <= 0.400, (utterance, true)


@pytest.mark.parametrize("name", ["silence_16k.wav", "noise_16k.wav"])
def test_no_utterance_is_heard_where_nobody_speaks(name: str) -> None:
    audio = read_wav(FIXTURES / name)
    assert segment(audio.pcm, SegmenterConfig(sample_rate=audio.sample_rate)) == []


def test_each_utterance_is_announced_once_before_it_ends_with_the_same_start() -> None:
    events = segment(SPEECH.pcm, SegmenterConfig())
    assert [type(e) for e in events] == [SpeechStarted, SpeechEnded] * 3
    for started, ended in zip(events[::2], events[1::2], strict=True):
        assert started.start_sample == ended.utterance.start_sample


def test_times_in_seconds_come_from_sample_indices_only() -> None:
    for utterance in utterances(segment(SPEECH.pcm, SegmenterConfig())):
        assert utterance.start_s == utterance.start_sample / 16000
        assert utterance.end_s == utterance.end_sample / 16000
        assert utterance.duration_s == (utterance.end_sample - utterance.start_sample) / 16000


def test_utterance_levels_are_measured_on_its_own_samples() -> None:
    samples = np.frombuffer(SPEECH.pcm, "<i2").astype(np.float64)
    frame = SegmenterConfig().frame_samples
    for utterance in utterances(segment(SPEECH.pcm, SegmenterConfig())):
        own = samples[utterance.start_sample : utterance.end_sample]
        frames = own.reshape(-1, frame)
        assert utterance.mean_dbfs == pytest.approx(dbfs(float(np.mean(own**2))), abs=1e-9)
        assert utterance.peak_dbfs == pytest.approx(
            dbfs(float((frames**2).mean(axis=1).max())), abs=1e-9
        )
        assert -60 < utterance.mean_dbfs < utterance.peak_dbfs < 0


def test_digital_silence_is_floored_at_minus_100_dbfs() -> None:
    assert dbfs(0.0) == -100.0
    assert dbfs(1e-30) == -100.0
    assert dbfs(32768.0**2) == pytest.approx(0.0)


def test_pre_roll_moves_each_start_earlier_by_its_length() -> None:
    plain = utterances(segment(SPEECH.pcm, SegmenterConfig(pre_roll_ms=0)))
    rolled = utterances(segment(SPEECH.pcm, SegmenterConfig(pre_roll_ms=90)))
    assert [u.start_sample - 1440 for u in plain] == [u.start_sample for u in rolled]
    assert [u.end_sample for u in plain] == [u.end_sample for u in rolled]


def test_utterances_shorter_than_min_speech_are_not_reported() -> None:
    # Phrase one lasts 2.8 s, phrases two and three about 1.5 s each.
    config = SegmenterConfig(start_ratio=0.0, min_speech_ms=2000)
    found = utterances(segment(SPEECH.pcm, config))
    assert len(found) == 1
    assert found[0].duration_s > 2.0


def test_an_utterance_still_open_at_close_ends_at_the_last_sample() -> None:
    cut = SPEECH.pcm[: 2 * 32000]  # two seconds: phrase one is still being spoken
    segmenter = Segmenter(SegmenterConfig())
    events = segmenter.feed(cut)
    assert [type(e) for e in events] == [SpeechStarted]
    (ended,) = segmenter.close()
    assert isinstance(ended, SpeechEnded)
    assert ended.utterance.end_sample == 32000


def test_the_settled_sample_never_goes_back_and_no_speech_starts_or_ends_before_it() -> None:
    segmenter = Segmenter(SegmenterConfig())
    settled = 0
    for chunk in in_chunks(SPEECH.pcm, [640, 1000, 3]):
        for event in segmenter.feed(chunk):
            at = (
                event.start_sample
                if isinstance(event, SpeechStarted)
                else event.utterance.end_sample
            )
            assert at >= settled
        assert settled <= segmenter.settled_sample <= segmenter.samples_fed
        settled = segmenter.settled_sample
    segmenter.close()
    assert segmenter.settled_sample == segmenter.samples_fed == len(SPEECH.pcm) // 2


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=12000), min_size=1, max_size=40),
    playback=st.booleans(),
)
def test_any_chunking_of_the_same_pcm_gives_identical_outputs(
    sizes: list[int], playback: bool
) -> None:
    pcm = SPEECH.pcm + bytes(2 * 16000)  # a second more of silence: the last turn ends too

    def listen(chunks: list[bytes]) -> list[object]:
        listener = Listener(SegmenterConfig(), TurnConfig(silence_timeout_ms=800))
        if playback:
            # Playback during phrase two: its barge-in depends on the sample clock alone.
            listener.assistant_playing(True, 60000)
            listener.assistant_playing(False, 100000)
        facts: list[object] = []
        for chunk in chunks:
            facts += listener.feed(chunk)
        return facts + listener.close()

    whole = listen([pcm])
    assert listen(in_chunks(pcm, sizes)) == whole
    kinds = {type(fact).__name__ for fact in whole}
    assert kinds >= {"SpeechStarted", "SpeechEnded", "UserTurnEnded", "SilenceTimeout"}
    assert ("BargeIn" in kinds) == playback


def test_a_long_stream_in_20_ms_chunks_matches_the_whole_file() -> None:
    audio = read_wav(FIXTURES / "long_16k.wav")
    segmenter = Segmenter(SegmenterConfig())
    events = []
    for chunk in in_chunks(audio.pcm, [640]):
        events += segmenter.feed(chunk)
    events += segmenter.close()
    assert events == segment(audio.pcm, SegmenterConfig())
    assert len(utterances(events)) == len(TRUTH["long_16k.wav"])


def test_a_chunk_may_split_a_sample_when_its_other_byte_follows() -> None:
    segmenter = Segmenter(SegmenterConfig())
    events = []
    for chunk in in_chunks(SPEECH.pcm, [1, 999, 641]):
        events += segmenter.feed(chunk)
    assert events + segmenter.close() == segment(SPEECH.pcm, SegmenterConfig())


def test_a_stream_ending_mid_sample_is_refused_at_close_and_can_still_be_completed() -> None:
    segmenter = Segmenter(SegmenterConfig())
    events = segmenter.feed(SPEECH.pcm[:-1])
    with pytest.raises(BadInput, match="middle of a sample"):
        segmenter.close()
    events += segmenter.feed(SPEECH.pcm[-1:])
    assert events + segmenter.close() == segment(SPEECH.pcm, SegmenterConfig())


@pytest.mark.parametrize("bad", ["text", [1, 2, 3], np.zeros(160, dtype=np.float32), None])
def test_a_rejected_chunk_leaves_the_segmenter_unchanged(bad: object) -> None:
    half = len(SPEECH.pcm) // 2 + 1  # odd: a half sample is pending when the bad chunk comes
    segmenter = Segmenter(SegmenterConfig())
    events = segmenter.feed(SPEECH.pcm[:half])
    fed, settled = segmenter.samples_fed, segmenter.settled_sample
    with pytest.raises(BadInput, match="16-bit little-endian mono PCM"):
        segmenter.feed(bad)  # type: ignore[arg-type]
    assert (segmenter.samples_fed, segmenter.settled_sample) == (fed, settled)
    events += segmenter.feed(SPEECH.pcm[half:]) + segmenter.close()
    assert events == segment(SPEECH.pcm, SegmenterConfig())


def test_feeding_after_close_is_refused() -> None:
    segmenter = Segmenter(SegmenterConfig())
    segmenter.close()
    with pytest.raises(BadInput, match="closed"):
        segmenter.feed(b"\x00\x00")
    assert segmenter.close() == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sample_rate", 22050, r"sample_rate must be one of 8000, 16000, 32000, 48000 Hz"),
        ("sample_rate", 16000.0, r"sample_rate must be one of"),
        ("frame_ms", 25, r"frame_ms must be one of 10, 20, 30 ms"),
        ("aggressiveness", 4, r"aggressiveness must be one of 0, 1, 2, 3"),
        ("padding_ms", 0, r"padding_ms must be a whole multiple of frame_ms \(30 ms\) and pos"),
        ("padding_ms", 250, r"padding_ms must be a whole multiple of frame_ms"),
        ("pre_roll_ms", -30, r"pre_roll_ms must be a whole multiple of frame_ms"),
        ("start_ratio", 1.0, r"start_ratio must be a number in \[0, 1\)"),
        ("stop_ratio", -0.1, r"stop_ratio must be a number in \[0, 1\)"),
        ("stop_ratio", "0.9", r"stop_ratio must be a number"),
        ("min_speech_ms", -1, r"min_speech_ms must be a whole number >= 0"),
    ],
)
def test_a_bad_config_value_is_refused_naming_the_field(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(BadInput, match=message):
        SegmenterConfig(**{field: value})  # type: ignore[arg-type]


HELD_OUT = sorted(name for name in TRUTH if name.startswith("heldout_"))


def held_out_errors(name: str, vad: str) -> list[tuple[float, float]]:
    audio = read_wav(FIXTURES / name)
    segmenter = open_segmenter(SegmenterConfig(sample_rate=audio.sample_rate, vad=vad))
    found = utterances(segmenter.feed(audio.pcm) + segmenter.close())
    truth = TRUTH[name]
    assert len(found) == len(truth)
    return [
        (u.start_s - t["start_s"], u.end_s - t["end_s"]) for u, t in zip(found, truth, strict=True)
    ]


@pytest.mark.parametrize("name", HELD_OUT)
def test_held_out_voices_in_white_and_brown_noise_are_cut_as_silero_manages(name: str) -> None:
    for onset, end in held_out_errors(name, "webrtcvad"):
        assert abs(onset) <= 0.060 and -0.050 <= end <= 0.400, (onset, end)


@pytest.mark.skipif(not silero_available(), reason="the voice-silero extra is not installed")
@pytest.mark.parametrize("name", [n for n in HELD_OUT if "white20" in n])
def test_silero_finds_the_same_utterances_in_held_out_speech(name: str) -> None:
    for onset, end in held_out_errors(name, "silero"):
        assert abs(onset) <= 0.100 and -0.100 <= end <= 0.400, (onset, end)
