"""Conversation facts decided from speech on the sample clock: turn end, silence, barge-in.

The detector never reads a wall clock. It hears the segmenter's `SpeechStarted` and
`SpeechEnded` and is told how far the audio is decided (`advance`). A fact is stamped with
the sample at which it became true, not the moment it was noticed, so the same audio gives
the same facts however it was chunked.
"""

from __future__ import annotations

from collections import deque

import msgspec

from ...domain.errors import BadInput
from .segmenter import SpeechEnded, SpeechStarted


class TurnConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Turn-taking policy, in milliseconds; validated once, when built."""

    end_of_turn_ms: int = 700
    silence_timeout_ms: int = 8000
    min_barge_in_ms: int = 300

    def __post_init__(self) -> None:
        for name in ("end_of_turn_ms", "silence_timeout_ms", "min_barge_in_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BadInput(f"TurnConfig.{name} must be a whole number > 0, got {value!r}")


class UserTurnEnded(msgspec.Struct, frozen=True, tag=True):
    """The user has finished their turn: end-of-turn silence followed their last utterance."""

    at_sample: int
    at_s: float
    utterance_count: int


class SilenceTimeout(msgspec.Struct, frozen=True, tag=True):
    """Nobody spoke for the whole timeout while we were listening (once per silence)."""

    at_sample: int
    at_s: float
    silence_s: float


class BargeIn(msgspec.Struct, frozen=True, tag=True):
    """The user has talked over the assistant's playback for at least the minimum time."""

    at_sample: int
    at_s: float
    speech_s: float


TurnEvent = SpeechStarted | SpeechEnded | UserTurnEnded | SilenceTimeout | BargeIn

# Facts due at the same sample are decided before a playback change at that sample: speech
# that lasted until the assistant stopped did overlap it.
_BARGE_IN, _TURN_END, _SILENCE, _PLAYBACK = range(4)


class TurnDetector:
    """Turns one stream's speech events into turn-taking facts on the same sample clock.

    Call `observe` with each segmenter event, in order, and `advance` with the sample before
    which speech and silence are final (`Segmenter.settled_sample`). An utterance heard while
    the assistant plays counts towards a user turn only if it barged in; a shorter one is
    backchannel ("mm-hm") and the assistant keeps the floor.
    """

    def __init__(self, config: TurnConfig, sample_rate: int) -> None:
        self.config = config
        self._rate = sample_rate
        self._end_of_turn = sample_rate * config.end_of_turn_ms // 1000
        self._silence_timeout = sample_rate * config.silence_timeout_ms // 1000
        self._min_barge_in = sample_rate * config.min_barge_in_ms // 1000

        self._clock = 0
        self._in_speech = False
        self._speech_start = 0
        self._last_speech_end = 0
        self._turn_utterances = 0
        self._barged_in = False
        self._heard_over_playback = False
        self._playing = False
        self._playing_since = 0
        self._listening_since = 0
        self._silence_reported = False
        self._playback_changes: deque[tuple[int, bool]] = deque()
        # The next due (sample, kind), kept between calls so that `advance`, called for
        # every chunk, costs one comparison while nothing is due.
        self._due = self._next_due()

    @property
    def clock(self) -> int:
        """The sample up to which facts have been decided."""
        return self._clock

    def assistant_playing(self, playing: bool, at_sample: int) -> None:
        """Record that the assistant's playback starts or stops at `at_sample`."""
        latest = self._playback_changes[-1][0] if self._playback_changes else self._clock
        if at_sample < latest:
            raise BadInput(
                f"playback change at sample {at_sample} is earlier than sample {latest}, "
                "which is already decided; pass the current sample count"
            )
        self._playback_changes.append((at_sample, playing))
        self._due = self._next_due()

    def observe(self, event: SpeechStarted | SpeechEnded) -> list[TurnEvent]:
        """Take one segmenter event; return the facts due before it, then the event itself."""
        if isinstance(event, SpeechStarted):
            facts = self._decide_until(event.start_sample)
            self._in_speech = True
            self._speech_start = max(event.start_sample, self._clock)
            self._barged_in = False
            self._heard_over_playback = self._playing
            self._silence_reported = False
        else:
            facts = self._decide_until(event.utterance.end_sample)
            self._in_speech = False
            self._last_speech_end = max(event.utterance.end_sample, self._clock)
            if self._barged_in or not self._heard_over_playback:
                self._turn_utterances += 1
        self._due = self._next_due()
        facts.append(event)
        return facts

    def advance(self, sample: int) -> list[TurnEvent]:
        """Speech and silence before `sample` are final: return the facts now due."""
        due = self._due
        if due is None or due[0] > sample:
            if sample > self._clock:
                self._clock = sample
            return []
        return self._decide_until(sample)

    def _decide_until(self, sample: int) -> list[TurnEvent]:
        facts: list[TurnEvent] = []
        while (due := self._next_due()) is not None and due[0] <= sample:
            at, kind = due
            self._clock = max(self._clock, at)
            if kind == _PLAYBACK:
                self._change_playback(self._playback_changes.popleft()[1], at)
            elif kind == _BARGE_IN:
                self._barged_in = True
                facts.append(BargeIn(at, at / self._rate, (at - self._speech_start) / self._rate))
            elif kind == _TURN_END:
                facts.append(UserTurnEnded(at, at / self._rate, self._turn_utterances))
                self._turn_utterances = 0
            else:
                self._silence_reported = True
                silence_s = (at - self._last_speech_end) / self._rate
                facts.append(SilenceTimeout(at, at / self._rate, silence_s))
        self._clock = max(self._clock, sample)
        self._due = due
        return facts

    def _next_due(self) -> tuple[int, int] | None:
        """The earliest pending fact or playback change, as (sample, kind)."""
        candidates = []
        if self._playback_changes:
            candidates.append((max(self._playback_changes[0][0], self._clock), _PLAYBACK))
        if self._in_speech:
            if self._playing and not self._barged_in:
                since = max(self._speech_start, self._playing_since)
                candidates.append((since + self._min_barge_in, _BARGE_IN))
        else:
            if self._turn_utterances:
                candidates.append((self._last_speech_end + self._end_of_turn, _TURN_END))
            if not self._playing and not self._silence_reported:
                since = max(self._last_speech_end, self._listening_since)
                candidates.append((since + self._silence_timeout, _SILENCE))
        return min(candidates) if candidates else None

    def _change_playback(self, playing: bool, at: int) -> None:
        if playing == self._playing:
            return
        self._playing = playing
        if playing:
            self._playing_since = at
            self._heard_over_playback = self._heard_over_playback or self._in_speech
        else:
            # A new stretch of listening: the silence timeout may fire again.
            self._listening_since = at
            self._silence_reported = False
