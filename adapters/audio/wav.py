"""Reading WAV files into the one PCM shape the voice adapter accepts: 16-bit mono."""

from __future__ import annotations

import io
import os
import struct
import wave
from typing import BinaryIO, NamedTuple

import numpy as np

from ...domain.errors import BadInput
from .segmenter import SUPPORTED_RATES

EXPECTED = "16-bit signed PCM, mono, at 8000, 16000, 32000 or 48000 Hz"

# Format tags from the WAVE header; only PCM (1) carries what we need, the rest get a name in
# the error so the user knows what to re-encode.
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM (compressed)",
    0x0003: "IEEE float samples",
    0x0006: "A-law (compressed)",
    0x0007: "mu-law (compressed)",
    0x0011: "IMA ADPCM (compressed)",
    0x0055: "MP3 (compressed)",
}
_PCM = 0x0001
_EXTENSIBLE = 0xFFFE


class PcmAudio(NamedTuple):
    """Validated audio: 16-bit little-endian mono samples at a rate webrtcvad accepts."""

    sample_rate: int
    pcm: bytes


def read_wav(
    source: str | os.PathLike[str] | bytes | BinaryIO, *, downmix: bool = False
) -> PcmAudio:
    """Read a WAV file (path, bytes or binary file) as 16-bit mono PCM, or raise BadInput.

    With `downmix=True` a multi-channel file is averaged to mono instead of refused.
    """
    data = _read_all(source)
    bits = _pcm_bits_per_sample(data)
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            declared = w.getnframes()
            raw = w.readframes(declared)
    except (wave.Error, EOFError, struct.error) as exc:
        raise BadInput(f"unreadable WAV data ({exc}); expected {EXPECTED}") from exc
    if bits != 16 or width != 2:
        raise BadInput(f"WAV has {bits}-bit samples; expected {EXPECTED}")
    if rate not in SUPPORTED_RATES:
        raise BadInput(f"WAV sample rate is {rate} Hz; expected {EXPECTED}")
    if channels != 1 and not downmix:
        raise BadInput(
            f"WAV has {channels} channels; expected {EXPECTED} (pass downmix=True to average them)"
        )
    frame_bytes = channels * width
    if len(raw) < declared * frame_bytes:
        raise BadInput(
            f"WAV is truncated: header declares {declared} frames, data holds "
            f"{len(raw) // frame_bytes}; expected {EXPECTED}"
        )
    if channels == 1:
        return PcmAudio(rate, raw)
    return PcmAudio(rate, _average_channels(raw, channels))


def _read_all(source: str | os.PathLike[str] | bytes | BinaryIO) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        try:
            with open(source, "rb") as f:
                return f.read()
        except OSError as exc:
            raise BadInput(f"cannot read WAV file {os.fspath(source)!r}: {exc.strerror}") from exc
    return source.read()


def _pcm_bits_per_sample(data: bytes) -> int:
    """Bits per PCM sample from the 'fmt ' chunk; names the encoding when it is not PCM.

    The stdlib only says 'unknown format: 3', and rounds 12-bit samples up to two bytes.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise BadInput(f"not a WAV file (no RIFF/WAVE header); expected {EXPECTED}")
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk_id == b"fmt ":
            if size < 16 or pos + 8 + 16 > len(data):
                raise BadInput(f"WAV 'fmt ' chunk is truncated; expected {EXPECTED}")
            tag = int.from_bytes(data[pos + 8 : pos + 10], "little")
            if tag == _EXTENSIBLE:
                raise BadInput(
                    f"WAV uses the WAVE_FORMAT_EXTENSIBLE header; expected {EXPECTED} "
                    "with a plain PCM header"
                )
            if tag != _PCM:
                name = _FORMAT_NAMES.get(tag, f"compressed (format tag {tag:#06x})")
                raise BadInput(f"WAV holds {name}; expected {EXPECTED}")
            return int.from_bytes(data[pos + 22 : pos + 24], "little")
        pos += 8 + size + (size & 1)  # RIFF chunks are padded to an even length
    raise BadInput(f"WAV has no 'fmt ' chunk (truncated?); expected {EXPECTED}")


def _average_channels(raw: bytes, channels: int) -> bytes:
    interleaved = np.frombuffer(raw, dtype="<i2").reshape(-1, channels)
    mono = np.rint(interleaved.mean(axis=1))
    return mono.astype("<i2").tobytes()
