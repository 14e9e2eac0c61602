"""Turn-taking facts from real speech: user turn ended, silence timeout and barge-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxledger.adapters.audio.listener import Listener
from voxledger.adapters.audio.segmenter import (
    SegmenterConfig,
    SpeechEnded,
    SpeechStarted,
    Utterance,
)
from voxledger.adapters.audio.turns import (
    BargeIn,
    SilenceTimeout,
    TurnConfig,
    TurnDetector,
    TurnEvent,
    UserTurnEnded,
)
from voxledger.adapters.audio.wav import read_wav
from voxledger.domain.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "audio"
TRUTH = json.loads((FIXTURES / "truth.json").read_text())
SPEECH = read_wav(FIXTURES / "speech_16k.wav").pcm
RATE = 16000
PHRASE_ONE = TRUTH["speech_16k.wav"][0]


def silence(seconds: float) -> bytes:
    return bytes(2 * int(RATE * seconds))


def phrase_one(seconds: float | None = None) -> bytes:
    """The first phrase of the speech fixture, or only its first `seconds` of speech."""
    start = PHRASE_ONE["start_sample"]
    end = PHRASE_ONE["end_sample"] if seconds is None else start + int(RATE * seconds)
    return SPEECH[2 * start : 2 * end]


def listen(
    pcm: bytes, turns: TurnConfig, playback: tuple[tuple[bool, int], ...] = ()
) -> list[TurnEvent]:
    """Run `pcm` through a Listener in 20 ms chunks, with playback changes known up front."""
    listener = Listener(SegmenterConfig(), turns)
    for playing, at_sample in playback:
        listener.assistant_playing(playing, at_sample)
    facts: list[TurnEvent] = []
    for offset in range(0, len(pcm), 640):
        facts += listener.feed(pcm[offset : offset + 640])
    return facts + listener.close()


def of_type(facts: list[TurnEvent], kind: type) -> list:
    return [fact for fact in facts if isinstance(fact, kind)]


def test_barge_in_is_detected_when_the_user_talks_over_playback() -> None:
    pcm = silence(1.0) + phrase_one() + silence(1.0)
    facts = listen(pcm, TurnConfig(min_barge_in_ms=800), playback=((True, 0),))
    (started,) = of_type(facts, SpeechStarted)
    (barge_in,) = of_type(facts, BargeIn)
    assert barge_in.at_sample == started.start_sample + 12800
    assert barge_in.at_s == barge_in.at_sample / RATE
    assert barge_in.speech_s == 0.8
    kinds = [type(f) for f in facts]
    assert kinds.index(SpeechStarted) < kinds.index(BargeIn) < kinds.index(SpeechEnded)


def test_barge_in_is_not_triggered_by_a_blip_shorter_than_the_minimum() -> None:
    pcm = silence(1.0) + phrase_one(0.5) + silence(2.0)
    facts = listen(pcm, TurnConfig(min_barge_in_ms=800), playback=((True, 0),))
    (blip,) = [e.utterance for e in of_type(facts, SpeechEnded)]
    assert 0.3 < blip.duration_s < 0.8  # the segmenter heard it as speech...
    assert of_type(facts, BargeIn) == []  # ...but it was too short to take the floor


def test_barge_in_counts_only_the_speech_after_playback_started() -> None:
    pcm = silence(1.0) + phrase_one() + silence(1.0)
    playback_from = RATE * 2
    facts = listen(pcm, TurnConfig(min_barge_in_ms=300), playback=((True, playback_from),))
    (started,) = of_type(facts, SpeechStarted)
    (barge_in,) = of_type(facts, BargeIn)
    assert barge_in.at_sample == playback_from + 4800
    assert barge_in.speech_s == (playback_from + 4800 - started.start_sample) / RATE


def test_no_barge_in_when_playback_stops_before_the_minimum() -> None:
    pcm = silence(1.0) + phrase_one() + silence(1.0)
    stops = RATE * 1 + 4000  # a quarter second into the phrase
    facts = listen(pcm, TurnConfig(min_barge_in_ms=400), playback=((True, 0), (False, stops)))
    assert of_type(facts, SpeechEnded)
    assert of_type(facts, BargeIn) == []


def test_a_blip_over_playback_is_backchannel_and_does_not_end_a_user_turn() -> None:
    pcm = silence(1.0) + phrase_one(0.5) + silence(2.0)
    facts = listen(pcm, TurnConfig(min_barge_in_ms=800), playback=((True, 0),))
    assert of_type(facts, SpeechEnded)
    assert of_type(facts, UserTurnEnded) == []


def test_the_user_turn_ends_after_the_end_of_turn_silence() -> None:
    facts = listen(SPEECH + silence(1.0), TurnConfig(end_of_turn_ms=700))
    ends = [e.utterance.end_sample for e in of_type(facts, SpeechEnded)]
    turns = of_type(facts, UserTurnEnded)
    assert [t.at_sample for t in turns] == [end + 11200 for end in ends]
    assert [t.utterance_count for t in turns] == [1, 1, 1]
    assert all(t.at_s == t.at_sample / RATE for t in turns)


def test_pauses_shorter_than_the_end_of_turn_silence_keep_one_turn() -> None:
    facts = listen(SPEECH + silence(2.0), TurnConfig(end_of_turn_ms=1500))
    last_end = of_type(facts, SpeechEnded)[-1].utterance.end_sample
    (turn,) = of_type(facts, UserTurnEnded)
    assert turn.utterance_count == 3
    assert turn.at_sample == last_end + 24000
    assert facts[-1] == turn


def test_no_user_turn_ends_before_its_silence_has_been_heard() -> None:
    # The fixture's last phrase is followed by 0.5 s only: the stream ends before 700 ms.
    facts = listen(SPEECH, TurnConfig(end_of_turn_ms=700))
    assert len(of_type(facts, UserTurnEnded)) == 2


def test_the_silence_timeout_fires_once_per_silence() -> None:
    pcm = read_wav(FIXTURES / "silence_16k.wav").pcm
    facts = listen(pcm, TurnConfig(silence_timeout_ms=1000))
    assert facts == [SilenceTimeout(at_sample=16000, at_s=1.0, silence_s=1.0)]


def test_the_silence_timeout_fires_again_after_the_assistant_has_spoken() -> None:
    facts = listen(
        silence(10.0),
        TurnConfig(silence_timeout_ms=1000),
        playback=((True, 2 * RATE), (False, 3 * RATE)),
    )
    assert facts == [
        SilenceTimeout(at_sample=16000, at_s=1.0, silence_s=1.0),
        SilenceTimeout(at_sample=64000, at_s=4.0, silence_s=4.0),
    ]


def test_no_silence_timeout_while_the_assistant_plays() -> None:
    facts = listen(silence(5.0), TurnConfig(silence_timeout_ms=1000), playback=((True, 0),))
    assert facts == []


def test_speech_starts_a_new_silence_period() -> None:
    pcm = read_wav(FIXTURES / "long_16k.wav").pcm
    facts = listen(pcm, TurnConfig(silence_timeout_ms=3000))
    # Only the 5 s pause after the eighth phrase is long enough; the timeout counts from its
    # utterance's end.
    (timeout,) = of_type(facts, SilenceTimeout)
    eighth = of_type(facts, SpeechEnded)[7].utterance
    assert timeout.at_sample == eighth.end_sample + 48000
    assert timeout.silence_s == 3.0


def test_facts_are_stamped_when_they_became_true_not_when_noticed() -> None:
    detector = TurnDetector(TurnConfig(end_of_turn_ms=700, silence_timeout_ms=2000), RATE)
    utterance = Utterance(16000, 32000, 1.0, 2.0, 1.0, -10.0, -20.0)
    assert detector.observe(SpeechStarted(16000, 1.0)) == [SpeechStarted(16000, 1.0)]
    assert detector.observe(SpeechEnded(utterance)) == [SpeechEnded(utterance)]
    assert detector.advance(10 * RATE) == [
        UserTurnEnded(at_sample=43200, at_s=2.7, utterance_count=1),
        SilenceTimeout(at_sample=64000, at_s=4.0, silence_s=2.0),
    ]
    assert detector.clock == 10 * RATE


def test_a_playback_change_in_the_decided_past_is_refused() -> None:
    listener = Listener(SegmenterConfig())
    listener.feed(silence(1.0))
    with pytest.raises(BadInput, match="already decided"):
        listener.assistant_playing(True, at_sample=100)
    listener.assistant_playing(True)  # now is always allowed


@pytest.mark.parametrize("field", ["end_of_turn_ms", "silence_timeout_ms", "min_barge_in_ms"])
@pytest.mark.parametrize("value", [0, -5, 1.5, True])
def test_a_bad_turn_config_value_is_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(BadInput, match=rf"TurnConfig.{field} must be a whole number > 0"):
        TurnConfig(**{field: value})  # type: ignore[arg-type]
