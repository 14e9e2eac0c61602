"""Streaming voice-activity segmentation: PCM in, speech start and utterance facts out.

Hysteresis follows py-webrtcvad's `vad_collector` example (a ring of the last `padding_ms` of
frame decisions; trigger when more than `start_ratio` of it is voiced, release when more than
`stop_ratio` of it is unvoiced), but every boundary is a sample index, so the outputs are a
pure function of the PCM: any chunking of the same stream gives the same values.
"""

from __future__ import annotations

import math
from collections import deque

import msgspec
import numpy as np
import webrtcvad

from ...domain.errors import BadInput

SUPPORTED_RATES = (8000, 16000, 32000, 48000)
FRAME_MS_CHOICES = (10, 20, 30)
SILENCE_FLOOR_DBFS = -100.0
_FULL_SCALE_SQ = 32768.0 * 32768.0
# Frames of an open utterance measured per numpy call: large enough to amortise the call,
# small enough that an endless utterance holds little PCM.
_MEASURE_BATCH = 64


class SegmenterConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How one stream is cut into utterances; validated once, when built."""

    sample_rate: int = 16000
    frame_ms: int = 30
    aggressiveness: int = 3
    padding_ms: int = 300
    start_ratio: float = 0.9
    stop_ratio: float = 0.9
    pre_roll_ms: int = 0
    min_speech_ms: int = 250

    def __post_init__(self) -> None:
        _require_choice("sample_rate", self.sample_rate, SUPPORTED_RATES, "Hz")
        _require_choice("frame_ms", self.frame_ms, FRAME_MS_CHOICES, "ms")
        _require_choice("aggressiveness", self.aggressiveness, (0, 1, 2, 3), "")
        _require_frame_multiple("padding_ms", self.padding_ms, self.frame_ms, minimum=1)
        _require_frame_multiple("pre_roll_ms", self.pre_roll_ms, self.frame_ms, minimum=0)
        for name in ("start_ratio", "stop_ratio"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0.0 <= value < 1.0
            ):
                raise BadInput(
                    f"SegmenterConfig.{name} must be a number in [0, 1) (more than this share "
                    f"of the ring must agree), got {value!r}"
                )
        if not _is_int(self.min_speech_ms) or self.min_speech_ms < 0:
            raise BadInput(
                f"SegmenterConfig.min_speech_ms must be a whole number >= 0, "
                f"got {self.min_speech_ms!r}"
            )

    @property
    def frame_samples(self) -> int:
        """Samples in one VAD frame."""
        return self.sample_rate * self.frame_ms // 1000


class SpeechStarted(msgspec.Struct, frozen=True, tag=True):
    """The user started speaking at this sample (known a little later, at the trigger)."""

    start_sample: int
    start_s: float


class Utterance(msgspec.Struct, frozen=True):
    """One stretch of speech on the stream's sample clock, with its loudness."""

    start_sample: int
    end_sample: int
    start_s: float
    end_s: float
    duration_s: float
    peak_dbfs: float
    mean_dbfs: float


class SpeechEnded(msgspec.Struct, frozen=True, tag=True):
    """The user stopped speaking; carries the whole utterance."""

    utterance: Utterance


SegmentEvent = SpeechStarted | SpeechEnded


class Segmenter:
    """Cuts one audio stream into utterances; feed it PCM chunks of any size, then close it.

    Chunks may split a sample (an odd length is kept until its other byte arrives); only
    `close()` refuses a stream that ends in the middle of a sample. A refused call changes
    nothing, so the caller can fix the input and go on.
    """

    def __init__(self, config: SegmenterConfig) -> None:
        self.config = config
        self._vad = webrtcvad.Vad(config.aggressiveness)
        self._rate = config.sample_rate
        self._frame_len = config.frame_samples
        self._frame_bytes = 2 * self._frame_len
        self._padding_frames = config.padding_ms // config.frame_ms
        self._pre_roll_frames = config.pre_roll_ms // config.frame_ms
        self._start_threshold = config.start_ratio * self._padding_frames
        self._stop_threshold = config.stop_ratio * self._padding_frames
        self._min_speech = config.sample_rate * config.min_speech_ms // 1000

        self._remainder = b""
        self._frames_done = 0
        self._closed = False
        # The classic collector's ring, as voiced flags of the newest frames, plus a count.
        self._ring: deque[bool] = deque(maxlen=self._padding_frames)
        self._ring_voiced = 0
        # The newest frames' PCM, enough to reach back over the ring and the pre-roll when an
        # utterance opens. Frames are views into the fed chunks, not copies.
        self._recent: deque[bytes | memoryview] = deque(
            maxlen=self._padding_frames + self._pre_roll_frames
        )
        self._previous_end_frame = 0
        self._triggered = False
        self._announced = False
        self._start = 0
        self._last_voiced_frame = 0
        # The open utterance's frames not yet measured: levels are computed with numpy over
        # many frames at once, at release or every _MEASURE_BATCH frames, never per chunk.
        self._unmeasured: list[bytes | memoryview] = []
        self._first_unmeasured = 0
        self._sum_sq = 0.0
        self._peak_sq = 0.0
        self._sum_sq_at_last_voiced = 0.0
        self._peak_sq_at_last_voiced = 0.0

    @property
    def samples_fed(self) -> int:
        """Whole samples received so far: the stream's sample clock."""
        return (self._frames_done * self._frame_bytes + len(self._remainder)) // 2

    @property
    def settled_sample(self) -> int:
        """Speech or silence before this sample is final: no later output will change it.

        A turn detector may treat time before it as decided (no utterance can still start
        before it, and an open utterance is known to last at least until it).
        """
        if self._closed:
            return self.samples_fed
        if self._triggered:
            if self._announced:
                return (self._last_voiced_frame + 1) * self._frame_len
            return self._start
        ring = self._ring
        if self._ring_voiced:
            earliest = self._frames_done - len(ring) + ring.index(True)
        else:
            earliest = self._frames_done
        earliest = max(earliest - self._pre_roll_frames, self._previous_end_frame)
        return earliest * self._frame_len

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[SegmentEvent]:
        """Take the next PCM bytes (16-bit little-endian mono) and return what they decided."""
        if self._closed:
            raise BadInput("the segmenter is closed; start a new one for a new stream")
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise BadInput(
                f"audio chunk must be bytes of 16-bit little-endian mono PCM, "
                f"got {type(chunk).__name__}"
            )
        # A copy unless already immutable: frames are kept as views, and callers reuse buffers.
        data = chunk if isinstance(chunk, bytes) else bytes(chunk)
        buf = self._remainder + data if self._remainder else data
        frame_bytes = self._frame_bytes
        count = len(buf) // frame_bytes
        self._remainder = buf[count * frame_bytes :]
        if not count:
            return []
        if count == 1:
            frames: list[bytes | memoryview] | tuple[bytes] = (
                buf if len(buf) == frame_bytes else buf[:frame_bytes],
            )
        else:
            view = memoryview(buf)
            frames = [view[o : o + frame_bytes] for o in range(0, count * frame_bytes, frame_bytes)]
        return self._process(frames)

    def close(self) -> list[SegmentEvent]:
        """End the stream: an utterance still open ends at the last sample received."""
        if self._closed:
            return []
        if len(self._remainder) % 2:
            raise BadInput(
                "the stream ends in the middle of a sample (an odd number of bytes in total); "
                "16-bit PCM needs two bytes per sample"
            )
        events: list[SegmentEvent] = []
        if self._triggered:
            self._measure()
            tail = np.frombuffer(self._remainder, dtype="<i2").astype(np.float64)
            tail_sq = float(tail @ tail)
            end = self._frames_done * self._frame_len + len(tail)
            peak_mean_sq = self._peak_sq / self._frame_len
            if len(tail):
                peak_mean_sq = max(peak_mean_sq, tail_sq / len(tail))
            if self._announced or end - self._start >= self._min_speech:
                if not self._announced:
                    events.append(self._started())
                events.append(self._ended(end, self._sum_sq + tail_sq, peak_mean_sq))
        self._closed = True
        self._triggered = False
        return events

    def _process(self, frames: list[bytes | memoryview] | tuple[bytes]) -> list[SegmentEvent]:
        """Run VAD and the collector's hysteresis over whole frames, in order."""
        is_speech, rate, frame_len = self._vad.is_speech, self._rate, self._frame_len
        events: list[SegmentEvent] = []
        ring, remember, unmeasured = self._ring, self._recent.append, self._unmeasured
        padding = self._padding_frames
        start_threshold, stop_threshold = self._start_threshold, self._stop_threshold
        ring_voiced, triggered = self._ring_voiced, self._triggered
        k = self._frames_done
        for frame in frames:
            voiced = is_speech(frame, rate, frame_len)
            remember(frame)
            if len(ring) == padding:
                ring_voiced -= ring[0]
            ring.append(voiced)
            ring_voiced += voiced
            if not triggered:
                if ring_voiced > start_threshold:
                    self._trigger(k)
                    ring.clear()
                    ring_voiced = 0
                    triggered = True
                    if self._announced:
                        events.append(self._started())
                k += 1
                continue
            unmeasured.append(frame)
            if voiced:
                self._last_voiced_frame = k
                if not self._announced and (k + 1) * frame_len - self._start >= self._min_speech:
                    self._announced = True
                    events.append(self._started())
            if len(unmeasured) >= _MEASURE_BATCH:
                self._measure()
            if len(ring) - ring_voiced > stop_threshold:
                self._measure()
                end = (self._last_voiced_frame + 1) * frame_len
                if self._announced:
                    events.append(
                        self._ended(
                            end,
                            self._sum_sq_at_last_voiced,
                            self._peak_sq_at_last_voiced / frame_len,
                        )
                    )
                self._previous_end_frame = self._last_voiced_frame + 1
                self._triggered = self._announced = triggered = False
                ring.clear()
                ring_voiced = 0
            k += 1
        self._frames_done = k
        self._ring_voiced = ring_voiced
        return events

    def _trigger(self, frame: int) -> None:
        """Open an utterance at the first voiced frame still in the ring, less the pre-roll."""
        ring = self._ring
        first_voiced = frame - len(ring) + 1 + ring.index(True)
        start_frame = max(first_voiced - self._pre_roll_frames, self._previous_end_frame)
        recent = self._recent
        self._unmeasured[:] = [recent[i] for i in range(start_frame - frame - 1, 0)]
        self._first_unmeasured = start_frame
        self._sum_sq = self._peak_sq = 0.0
        self._sum_sq_at_last_voiced = self._peak_sq_at_last_voiced = 0.0
        self._triggered = True
        self._start = start_frame * self._frame_len
        # Only a voiced frame can raise the voiced count over the threshold.
        self._last_voiced_frame = frame
        self._announced = (frame + 1) * self._frame_len - self._start >= self._min_speech

    def _measure(self) -> None:
        """Fold the unmeasured frames' energies into the open utterance's sums.

        Energies are sums of squared int16 values: whole numbers far below 2**53, which
        float64 adds exactly, so the sums do not depend on how frames were batched.
        """
        frames = self._unmeasured
        if not frames:
            return
        samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)
        samples = samples.reshape(len(frames), self._frame_len)
        energies = np.einsum("ij,ij->i", samples, samples)
        running_sum = np.cumsum(energies)
        running_peak = np.maximum.accumulate(energies)
        last_voiced = self._last_voiced_frame - self._first_unmeasured
        if last_voiced >= 0:
            self._sum_sq_at_last_voiced = self._sum_sq + float(running_sum[last_voiced])
            self._peak_sq_at_last_voiced = max(self._peak_sq, float(running_peak[last_voiced]))
        self._sum_sq += float(running_sum[-1])
        self._peak_sq = max(self._peak_sq, float(running_peak[-1]))
        self._first_unmeasured += len(frames)
        frames.clear()

    def _started(self) -> SpeechStarted:
        return SpeechStarted(self._start, self._start / self._rate)

    def _ended(self, end: int, sum_sq: float, peak_mean_sq: float) -> SpeechEnded:
        start, rate = self._start, self._rate
        return SpeechEnded(
            Utterance(
                start_sample=start,
                end_sample=end,
                start_s=start / rate,
                end_s=end / rate,
                duration_s=(end - start) / rate,
                peak_dbfs=dbfs(peak_mean_sq),
                mean_dbfs=dbfs(sum_sq / (end - start)),
            )
        )


def dbfs(mean_square: float) -> float:
    """Level of int16 audio with this mean square, in dB relative to full scale (floored)."""
    if mean_square <= 0.0:
        return SILENCE_FLOOR_DBFS
    return max(SILENCE_FLOOR_DBFS, 10.0 * math.log10(mean_square / _FULL_SCALE_SQ))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_choice(name: str, value: object, choices: tuple[int, ...], unit: str) -> None:
    if not _is_int(value) or value not in choices:
        allowed = ", ".join(str(c) for c in choices)
        raise BadInput(
            f"SegmenterConfig.{name} must be one of {allowed}{' ' + unit if unit else ''} "
            f"(what webrtcvad supports), got {value!r}"
        )


def _require_frame_multiple(name: str, value: object, frame_ms: int, *, minimum: int) -> None:
    if not _is_int(value) or value < minimum or value % frame_ms:
        raise BadInput(
            f"SegmenterConfig.{name} must be a whole multiple of frame_ms ({frame_ms} ms)"
            f"{' and positive' if minimum else ''}, got {value!r}"
        )
