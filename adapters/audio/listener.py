"""One audio stream's ears: the segmenter and the turn detector on a single sample clock."""

from __future__ import annotations

from .segmenter import SegmenterConfig, open_segmenter
from .turns import TurnConfig, TurnDetector, TurnEvent


class Listener:
    """Feeds PCM to a segmenter and its events to a turn detector, in order.

    This is the piece a voice adapter holds per call: PCM chunks in, speech and turn facts
    out, each stamped on the stream's sample clock.
    """

    def __init__(self, segmenter: SegmenterConfig, turns: TurnConfig | None = None) -> None:
        self._segmenter = open_segmenter(segmenter)
        self._turns = TurnDetector(turns or TurnConfig(), segmenter.sample_rate)
        self.sample_rate = segmenter.sample_rate

    @property
    def samples_fed(self) -> int:
        """Whole samples received so far: now, on the stream's clock."""
        return self._segmenter.samples_fed

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[TurnEvent]:
        """Take the next PCM bytes; return the speech and turn facts they decided."""
        facts: list[TurnEvent] = []
        for event in self._segmenter.feed(chunk):
            facts += self._turns.observe(event)
        facts += self._turns.advance(self._segmenter.settled_sample)
        return facts

    def assistant_playing(self, playing: bool, at_sample: int | None = None) -> None:
        """Record that playback starts or stops, by default now (at the samples fed so far)."""
        self._turns.assistant_playing(
            playing, self._segmenter.samples_fed if at_sample is None else at_sample
        )

    def close(self) -> list[TurnEvent]:
        """End the stream: close any open utterance and decide the facts due by its end."""
        facts: list[TurnEvent] = []
        for event in self._segmenter.close():
            facts += self._turns.observe(event)
        facts += self._turns.advance(self._segmenter.settled_sample)
        return facts
