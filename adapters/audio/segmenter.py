"""Streaming voice-activity segmentation: PCM in, speech start and utterance facts out.

Hysteresis follows py-webrtcvad's `vad_collector` example (a ring of the last `padding_ms` of
frame decisions; trigger when more than `start_ratio` of it is voiced, release when more than
`stop_ratio` of it is unvoiced), but every boundary is a sample index, so the outputs are a
pure function of the PCM: any chunking of the same stream gives the same values.

In noise webrtcvad hears an onset late and lets a fading end go early, so both boundaries
are refined by energy against the stream's own noise floor, measured on the frames before
each utterance (percentiles of their levels: it adapts to whatever noise the line
carries). The onset is searched back from webrtcvad's first voiced frame (at most
`onset_search_ms`) over frames clearly above the floor, either in plain level or in the level
of the sample-to-sample difference (which whitens low-frequency rumble such as brown noise
and lifts fricatives); the end is carried forward over such frames and padded by
`hangover_ms`. Per frame the segmenter still only asks webrtcvad; levels are computed with
numpy once per utterance boundary, so the refinement costs almost nothing per second.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import msgspec
import numpy as np
import webrtcvad

from ...domain.errors import BadInput

if TYPE_CHECKING:
    from .silero import SileroSegmenter

SUPPORTED_RATES = (8000, 16000, 32000, 48000)
SILERO_RATES = (8000, 16000)
# Speech detectors: webrtcvad (always there, fast) or Silero VAD (the voice-silero extra).
VADS = ("webrtcvad", "silero")
FRAME_MS_CHOICES = (10, 20, 30)
SILENCE_FLOOR_DBFS = -100.0
_FULL_SCALE_SQ = 32768.0 * 32768.0
# Frames of an open utterance measured per numpy call: large enough to amortise the call,
# small enough that an endless utterance holds little PCM.
_MEASURE_BATCH = 64
# The noise floor is measured on up to this much audio before an utterance; with less than
# _MIN_FLOOR_MS of it (utterances close together) the previous floor is kept.
_FLOOR_HISTORY_MS = 1000
_MIN_FLOOR_MS = 150
# A frame is energetic when its level is this far above the noise's median plus twice the
# noise's own upper spread (90th percentile less median): white noise frames of 10-30 ms
# vary by well under a decibel, brown noise by several, and this keeps both out while the
# first syllable's attack gets in.
_ENERGY_MARGIN_DB = 3.0
# Speech quieter than this is not energetic even over digital silence.
_ABSOLUTE_FLOOR_DB = -75.0
# webrtcvad's voiced frames belong to one run across gaps this short (in noise it drops
# frames inside a syllable); the onset is searched before the run's first voiced frame.
_RUN_GAP_MS = 240
# An energetic stretch continues over a dip this short (a stop consonant's closure).
_CLOSURE_MS = 90
# An open utterance lasts until its last run of this many voiced frames: webrtcvad voices
# short bursts of noise at 10 dB SNR, speech holds a syllable longer.
_CONFIRM_FRAMES = 4


class SegmenterConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How one stream is cut into utterances; validated once, when built."""

    sample_rate: int = 16000
    frame_ms: int = 30
    aggressiveness: int = 3
    padding_ms: int = 300
    start_ratio: float = 0.9
    stop_ratio: float = 0.9
    pre_roll_ms: int = 30
    min_speech_ms: int = 250
    onset_search_ms: int = 150
    hangover_ms: int = 60
    vad: str = "webrtcvad"

    def __post_init__(self) -> None:
        if self.vad not in VADS:
            raise BadInput(
                f"SegmenterConfig.vad must be one of {', '.join(VADS)}, got {self.vad!r}"
            )
        rates = SILERO_RATES if self.vad == "silero" else SUPPORTED_RATES
        _require_choice("sample_rate", self.sample_rate, rates, "Hz", self.vad)
        _require_choice("frame_ms", self.frame_ms, FRAME_MS_CHOICES, "ms")
        _require_choice("aggressiveness", self.aggressiveness, (0, 1, 2, 3), "")
        _require_frame_multiple("padding_ms", self.padding_ms, self.frame_ms, minimum=1)
        _require_frame_multiple("pre_roll_ms", self.pre_roll_ms, self.frame_ms, minimum=0)
        for name in ("onset_search_ms", "hangover_ms"):
            _require_frame_multiple(name, getattr(self, name), self.frame_ms, minimum=0)
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


def open_segmenter(config: SegmenterConfig) -> Segmenter | SileroSegmenter:
    """The segmenter of the configured speech detector (BadInput if Silero is not installed)."""
    if config.vad == "silero":
        from .silero import SileroSegmenter

        return SileroSegmenter(config)
    return Segmenter(config)


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
        frame_ms = config.frame_ms
        self._padding_frames = config.padding_ms // frame_ms
        self._pre_roll_frames = config.pre_roll_ms // frame_ms
        self._search_frames = config.onset_search_ms // frame_ms
        self._hangover_frames = config.hangover_ms // frame_ms
        self._run_gap_frames = max(1, _RUN_GAP_MS // frame_ms)
        self._closure_frames = max(1, _CLOSURE_MS // frame_ms)
        self._floor_frames = _FLOOR_HISTORY_MS // frame_ms
        self._min_floor_frames = max(1, _MIN_FLOOR_MS // frame_ms)
        # A run may reach back this far past the ring; bounds how long sporadic voicing in
        # noise can hold the settled sample back.
        self._run_reach_frames = 2 * self._padding_frames
        self._start_threshold = config.start_ratio * self._padding_frames
        self._stop_threshold = config.stop_ratio * self._padding_frames
        self._min_speech = config.sample_rate * config.min_speech_ms // 1000

        self._remainder = b""
        self._frames_done = 0
        self._closed = False
        # The classic collector's ring, as voiced flags of the newest frames, plus a count.
        self._ring: deque[bool] = deque(maxlen=self._padding_frames)
        self._ring_voiced = 0
        self._voiced_run = 0
        # The newest frames' PCM, enough to reach back over a run, the onset search, the
        # pre-roll and the noise history when an utterance opens, and over the ring when it
        # closes. Frames are views into the fed chunks, not copies.
        self._recent: deque[bytes | memoryview] = deque(
            maxlen=self._run_reach_frames
            + self._padding_frames
            + self._search_frames
            + self._pre_roll_frames
            + self._floor_frames
        )
        self._recent_voiced: deque[bool] = deque(maxlen=self._recent.maxlen)
        # The current voiced run: its first voiced frame and its latest one (-1: none yet).
        self._run_start = 0
        self._run_last = -(10**9)
        # Noise floor (80th percentile of frame levels, dB) in plain and difference level.
        self._floor: tuple[float, float] | None = None
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
        before it, and an open utterance is known to last at least until it). It trails the
        audio by the onset search and pre-roll (and, while noise keeps a voiced run alive
        without triggering, by that run).
        """
        if self._closed:
            return self.samples_fed
        if self._triggered:
            if self._announced:
                return (self._last_voiced_frame + 1) * self._frame_len
            return self._start
        earliest = self._frames_done
        if self._frames_done - self._run_last <= self._run_gap_frames:
            earliest = max(self._run_start, self._frames_done - self._run_reach_frames)
        earliest -= self._search_frames + self._pre_roll_frames
        return max(earliest, self._previous_end_frame) * self._frame_len

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
        remember_voiced = self._recent_voiced.append
        padding, run_gap = self._padding_frames, self._run_gap_frames
        start_threshold, stop_threshold = self._start_threshold, self._stop_threshold
        ring_voiced, triggered = self._ring_voiced, self._triggered
        run, confirm, longest = self._voiced_run, _CONFIRM_FRAMES, 2 * padding
        k = self._frames_done
        for frame in frames:
            voiced = is_speech(frame, rate, frame_len)
            remember(frame)
            remember_voiced(voiced)
            if len(ring) == padding:
                ring_voiced -= ring[0]
            ring.append(voiced)
            ring_voiced += voiced
            if not triggered:
                if voiced:
                    if k - self._run_last > run_gap:
                        self._run_start = k
                    self._run_last = k
                if ring_voiced > start_threshold:
                    self._trigger(k)
                    ring.clear()
                    ring_voiced = 0
                    run = confirm
                    triggered = True
                    if self._announced:
                        events.append(self._started())
                k += 1
                continue
            unmeasured.append(frame)
            # Short voiced runs in noise do not prolong an utterance: its last voiced frame
            # is one of a run at least _CONFIRM_FRAMES long.
            run = run + 1 if voiced else 0
            if run >= confirm:
                self._last_voiced_frame = k
                if not self._announced and (k + 1) * frame_len - self._start >= self._min_speech:
                    self._announced = True
                    events.append(self._started())
            if len(unmeasured) >= _MEASURE_BATCH:
                self._measure()
            if len(ring) - ring_voiced > stop_threshold or k - self._last_voiced_frame > longest:
                self._measure()
                end_frame = self._release(k)
                if self._announced:
                    events.append(
                        self._ended(
                            end_frame * frame_len,
                            self._sum_sq_at_last_voiced,
                            self._peak_sq_at_last_voiced / frame_len,
                        )
                    )
                self._previous_end_frame = end_frame
                self._triggered = self._announced = triggered = False
                ring.clear()
                ring_voiced = 0
                self._run_last = -(10**9)
            k += 1
        self._frames_done = k
        self._ring_voiced = ring_voiced
        self._voiced_run = run
        return events

    def _trigger(self, frame: int) -> None:
        """Open an utterance at its refined onset, less the pre-roll."""
        first_voiced = max(
            self._run_start,
            frame - self._run_reach_frames - len(self._ring) + 1,
            self._previous_end_frame,
        )
        onset = self._onset(first_voiced, frame)
        start_frame = max(onset - self._pre_roll_frames, self._previous_end_frame)
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

    def _levels(
        self, first: int, last: int, *, newest: int, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frames first..last-1, still in the recent buffer whose newest frame is `newest`:
        each one's sum of squares (exact if asked: float64 sums of squared int16 are), and
        its level and difference level in dB."""
        recent = self._recent
        views = [recent[i - newest - 1] for i in range(first, last)]
        dtype = np.float64 if exact else np.float32
        samples = np.frombuffer(b"".join(views), dtype="<i2").astype(dtype)
        frames = samples.reshape(len(views), self._frame_len)
        energy = np.einsum("ij,ij->i", frames, frames)
        step = np.diff(samples, prepend=samples[:1]).reshape(frames.shape)
        diff_energy = np.einsum("ij,ij->i", step, step)
        scale = 1.0 / (self._frame_len * _FULL_SCALE_SQ)
        with np.errstate(divide="ignore"):
            levels = 10.0 * np.log10(np.stack((energy, diff_energy)) * scale)
        np.maximum(levels, _ABSOLUTE_FLOOR_DB, out=levels)
        return energy, levels[0], levels[1]

    def _onset(self, first_voiced: int, trigger: int) -> int:
        """The first energetic frame of the stretch that leads into the trigger, searched
        back to `onset_search_ms` before webrtcvad's first voiced frame; the noise floor is
        measured on the frames before that."""
        oldest = trigger + 1 - len(self._recent)
        lowest = max(first_voiced - self._search_frames, self._previous_end_frame, oldest)
        history_from = max(lowest - self._floor_frames, self._previous_end_frame, oldest)
        _, level, diff_level = self._levels(history_from, trigger + 1, newest=trigger)
        history = lowest - history_from
        if history >= self._min_floor_frames:
            self._floor = (_threshold(level[:history]), _threshold(diff_level[:history]))
        if self._floor is None:
            return first_voiced
        plain, diff = self._floor
        energetic = (level > plain) | (diff_level > diff)
        # Back from the trigger over one stretch of frames that are energetic or voiced (a
        # dip in either is bridged by the other, or if no longer than a closure); the onset
        # is the earliest energetic frame in it.
        voiced = self._recent_voiced
        onset, gap = None, 0
        for j in range(trigger, lowest - 1, -1):
            if energetic[j - history_from]:
                onset, gap = j, 0
            elif voiced[j - trigger - 1]:
                gap = 0
            else:
                gap += 1
                if gap > self._closure_frames:
                    break
        return first_voiced if onset is None else onset

    def _release(self, frame: int) -> int:
        """Close the open utterance while processing `frame`: its end frame (exclusive),
        carried past the last voiced frame over energetic frames and the hangover, and its
        levels folded up to there."""
        last = self._last_voiced_frame + 1
        energy, level, diff_level = self._levels(last, frame + 1, newest=frame, exact=True)
        end = last
        if self._floor is not None:
            plain, diff = self._floor
            for i in range(len(energy)):
                if level[i] > plain or diff_level[i] > diff:
                    end = last + i + 1
                else:
                    break
        end = min(end + self._hangover_frames, frame + 1)
        extra = energy[: end - last]
        if len(extra):
            self._sum_sq_at_last_voiced += float(extra.sum())
            self._peak_sq_at_last_voiced = max(self._peak_sq_at_last_voiced, float(extra.max()))
        return end

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


def _threshold(levels: np.ndarray) -> float:
    """The level (dB) above which a frame is louder than this noise ever gets by itself."""
    ranked = np.sort(levels)
    median, high = ranked[(len(ranked) - 1) // 2], ranked[(len(ranked) - 1) * 9 // 10]
    return float(median + 2.0 * (high - median) + _ENERGY_MARGIN_DB)


def dbfs(mean_square: float) -> float:
    """Level of int16 audio with this mean square, in dB relative to full scale (floored)."""
    if mean_square <= 0.0:
        return SILENCE_FLOOR_DBFS
    return max(SILENCE_FLOOR_DBFS, 10.0 * math.log10(mean_square / _FULL_SCALE_SQ))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require_choice(
    name: str, value: object, choices: tuple[int, ...], unit: str, vad: str = "webrtcvad"
) -> None:
    if not _is_int(value) or value not in choices:
        allowed = ", ".join(str(c) for c in choices)
        raise BadInput(
            f"SegmenterConfig.{name} must be one of {allowed}{' ' + unit if unit else ''} "
            f"(what {vad} supports), got {value!r}"
        )


def _require_frame_multiple(name: str, value: object, frame_ms: int, *, minimum: int) -> None:
    if not _is_int(value) or value < minimum or value % frame_ms:
        raise BadInput(
            f"SegmenterConfig.{name} must be a whole multiple of frame_ms ({frame_ms} ms)"
            f"{' and positive' if minimum else ''}, got {value!r}"
        )
