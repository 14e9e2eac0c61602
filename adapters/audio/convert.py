"""Any common audio into the one shape the segmenter hears: 16-bit mono PCM at its rate.

Bytes of a known encoding (PCM 8/16/24/32-bit, float 32/64-bit, mu-law, A-law), any rate from
8 to 96 kHz and one or more channels go in, in chunks of any size (a chunk may split a sample
or a multi-channel frame); 16-bit mono PCM at the segmenter's rate comes out. Rates are
converted by soxr's streaming resampler: the concatenated output is the same for every
chunking of the same input (soxr's ResampleStream is deterministic and keeps its own
history); only how many samples each chunk yields varies, since soxr holds back about a
filter's length until more input or `flush()` arrives.
"""

from __future__ import annotations

from typing import Literal

import msgspec
import numpy as np
import soxr

from ...domain.errors import BadInput
from .codecs import ALAW_TO_PCM16, MULAW_TO_PCM16
from .segmenter import SUPPORTED_RATES

Encoding = Literal["pcm", "float", "mulaw", "alaw"]
Channel = Literal["left", "right", "mix"]
CHANNELS: tuple[Channel, ...] = ("left", "right", "mix")
MIN_RATE, MAX_RATE = 8000, 96000
# Bits per sample each encoding may have.
_WIDTHS: dict[str, tuple[int, ...]] = {
    "pcm": (8, 16, 24, 32),
    "float": (32, 64),
    "mulaw": (8,),
    "alaw": (8,),
}
_SILERO_RATES = (8000, 16000)


class AudioFormat(msgspec.Struct, frozen=True, kw_only=True):
    """How incoming audio bytes are laid out; validated once, when built."""

    encoding: Encoding = "pcm"
    bits: int = 16
    sample_rate: int = 16000
    channels: int = 1

    def __post_init__(self) -> None:
        if self.encoding not in _WIDTHS:
            raise BadInput(
                f"audio encoding must be one of {', '.join(_WIDTHS)}, got {self.encoding!r}"
            )
        if self.bits not in _WIDTHS[self.encoding]:
            allowed = ", ".join(str(b) for b in _WIDTHS[self.encoding])
            raise BadInput(f"{self.encoding} audio has {allowed}-bit samples, not {self.bits}")
        rate = self.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
            raise BadInput(f"sample rate must be {MIN_RATE} to {MAX_RATE} Hz, got {rate!r}")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int):
            raise BadInput(f"channel count must be a whole number, got {self.channels!r}")
        if not 1 <= self.channels <= 16:
            raise BadInput(f"audio must have 1 to 16 channels, got {self.channels}")

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample on every channel."""
        return self.bits // 8 * self.channels

    def describe(self) -> str:
        """A short human description: '24-bit pcm, 2 channels at 44100 Hz'."""
        where = "mono" if self.channels == 1 else f"{self.channels} channels"
        return f"{self.bits}-bit {self.encoding}, {where} at {self.sample_rate} Hz"


def segmenter_rate(sample_rate: int, vad: str = "webrtcvad") -> int:
    """The rate the segmenter hears a stream of `sample_rate` at: its own when the VAD takes
    it, else 8 kHz for telephone rates and 16 kHz for anything wider."""
    own = SUPPORTED_RATES if vad == "webrtcvad" else _SILERO_RATES
    if sample_rate in own:
        return sample_rate
    return 8000 if sample_rate <= 8000 else 16000


def require_channel_choice(fmt: AudioFormat, channel: str | None) -> Channel | None:
    """The channel choice, checked against the audio: stereo without one is refused."""
    if channel is not None and channel not in CHANNELS:
        raise BadInput(f"channel must be one of {', '.join(CHANNELS)}, got {channel!r}")
    if fmt.channels > 1 and channel is None:
        raise BadInput(
            f"the audio has {fmt.channels} channels, not mono; choose which one to hear: "
            "channel left, right or mix (the command line's --channel left|right|mix)"
        )
    return channel  # type: ignore[return-value]


class PcmConverter:
    """Turns chunks of audio in `fmt` into 16-bit mono PCM at `out_rate`, in order."""

    def __init__(self, fmt: AudioFormat, out_rate: int, *, channel: str | None = None) -> None:
        self.format = fmt
        self.out_rate = out_rate
        self._channel = require_channel_choice(fmt, channel)
        self._pending = b""
        self._resampler = (
            None
            if out_rate == fmt.sample_rate
            else soxr.ResampleStream(fmt.sample_rate, out_rate, 1, dtype="float32", quality="HQ")
        )

    def convert(self, chunk: bytes | bytearray | memoryview) -> bytes:
        """The next bytes in; the PCM they complete out (possibly empty)."""
        if not isinstance(chunk, bytes | bytearray | memoryview):
            raise BadInput(f"audio chunk must be bytes, got {type(chunk).__name__}")
        data = self._pending + bytes(chunk) if self._pending else bytes(chunk)
        whole = len(data) - len(data) % self.format.frame_bytes
        self._pending = data[whole:]
        if not whole:
            return b""
        return self._out(self._mono(data[:whole]), last=False)

    def flush(self) -> bytes:
        """The end of the stream: the resampler's held-back tail (BadInput if the stream
        stopped inside a sample)."""
        if self._pending:
            raise BadInput(
                f"the audio ends inside a sample ({len(self._pending)} stray bytes of "
                f"{self.format.describe()})"
            )
        return self._out(np.zeros(0, dtype=np.float32), last=True)

    def _mono(self, data: bytes) -> np.ndarray:
        """Samples of the chosen channel (or their mean), as float32 in [-1, 1)."""
        fmt = self.format
        samples = _decode(data, fmt).reshape(-1, fmt.channels)
        if fmt.channels == 1 or self._channel == "left":
            return samples[:, 0]
        if self._channel == "right":
            return samples[:, 1]
        return samples.mean(axis=1, dtype=np.float32)

    def _out(self, samples: np.ndarray, *, last: bool) -> bytes:
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        return _to_pcm16(samples)


def _decode(data: bytes, fmt: AudioFormat) -> np.ndarray:
    """Interleaved samples of any supported encoding as float32 in [-1, 1)."""
    scale = np.float32(1 / 32768)
    if fmt.encoding == "mulaw":
        return MULAW_TO_PCM16[np.frombuffer(data, np.uint8)] * scale
    if fmt.encoding == "alaw":
        return ALAW_TO_PCM16[np.frombuffer(data, np.uint8)] * scale
    if fmt.encoding == "float":
        values = np.frombuffer(data, "<f4" if fmt.bits == 32 else "<f8").astype(np.float32)
        return np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=-1.0)
    if fmt.bits == 8:  # WAV's 8-bit PCM is unsigned
        return (np.frombuffer(data, np.uint8).astype(np.float32) - 128) / 128
    if fmt.bits == 16:
        return np.frombuffer(data, "<i2") * scale
    if fmt.bits == 32:
        return (np.frombuffer(data, "<i4") / 2147483648.0).astype(np.float32)
    raw = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
    value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
    value = np.where(value & 0x800000, value - 0x1000000, value)
    return (value / 8388608.0).astype(np.float32)


def _to_pcm16(samples: np.ndarray) -> bytes:
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()
