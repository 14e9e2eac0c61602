"""WAV files read as streams: the header parsed, the data read a chunk at a time.

Encodings: PCM 8 (unsigned), 16, 24 and 32-bit, IEEE float 32 and 64-bit, mu-law and A-law,
in the plain or the WAVE_FORMAT_EXTENSIBLE header; 8 to 96 kHz; one or more channels (more
than one needs an explicit choice: left, right or mix). A file is never read whole: a
two-hour call is streamed in chunks like a live one.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from ...domain.errors import BadInput
from .convert import MAX_RATE, MIN_RATE, AudioFormat, PcmConverter, segmenter_rate

EXPECTED = (
    f"a WAV file of PCM (8, 16, 24 or 32-bit), float, mu-law or A-law samples "
    f"at {MIN_RATE} to {MAX_RATE} Hz"
)
_ENCODINGS = {0x0001: "pcm", 0x0003: "float", 0x0006: "alaw", 0x0007: "mulaw"}
# Format tags we do not decode, named in the error so the user knows what to re-encode.
_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM (compressed)",
    0x0011: "IMA ADPCM (compressed)",
    0x0055: "MP3 (compressed)",
}
_EXTENSIBLE = 0xFFFE
# The data chunk's size when the writer did not know it (a live recording): read to the end.
_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
_READ_BYTES = 1 << 16


class PcmAudio(NamedTuple):
    """Whole audio, converted: 16-bit little-endian mono samples at a rate the segmenter takes."""

    sample_rate: int
    pcm: bytes


class WavReader:
    """One WAV file or byte stream, its header read; `chunks()` streams the data chunk."""

    def __init__(self, source: str | os.PathLike[str] | bytes | BinaryIO) -> None:
        self._owned = False
        if isinstance(source, bytes | bytearray | memoryview):
            self._file: BinaryIO = io.BytesIO(bytes(source))
        elif isinstance(source, str | os.PathLike):
            try:
                self._file = open(source, "rb")  # noqa: SIM115 (closed by close())
            except OSError as exc:
                raise BadInput(
                    f"cannot read WAV file {os.fspath(source)!r}: {exc.strerror}"
                ) from exc
            self._owned = True
        else:
            self._file = source
        try:
            self.format, self.data_bytes = self._read_header()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> WavReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._owned:
            self._file.close()

    @property
    def duration_s(self) -> float | None:
        """The audio's length, when the header says (None for a stream of unknown size)."""
        if self.data_bytes is None:
            return None
        return self.data_bytes // self.format.frame_bytes / self.format.sample_rate

    def chunks(self, size: int = _READ_BYTES) -> Iterator[bytes]:
        """The data chunk's bytes, `size` at a time (the last chunk may be shorter)."""
        left = self.data_bytes
        while left is None or left > 0:
            block = self._file.read(size if left is None else min(size, left))
            if not block:
                break
            if left is not None:
                left -= len(block)
            yield block
        if left:
            raise BadInput(f"WAV is truncated: its data chunk ends {left} bytes early")

    def _read_exact(self, n: int, what: str) -> bytes:
        data = self._file.read(n)
        if len(data) < n:
            raise BadInput(f"WAV {what} is truncated; expected {EXPECTED}")
        return data

    def _skip(self, n: int) -> None:
        if self._file.seekable():
            self._file.seek(n, io.SEEK_CUR)
        else:
            while n > 0:
                skipped = len(self._file.read(min(n, _READ_BYTES)))
                if not skipped:
                    break
                n -= skipped

    def _read_header(self) -> tuple[AudioFormat, int | None]:
        head = self._file.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise BadInput(f"not a WAV file (no RIFF/WAVE header); expected {EXPECTED}")
        fmt: AudioFormat | None = None
        while True:
            header = self._file.read(8)
            if len(header) < 8:
                what = "'data' chunk" if fmt else "'fmt ' chunk"
                raise BadInput(f"WAV has no {what} (truncated?); expected {EXPECTED}")
            chunk_id, size = header[:4], int.from_bytes(header[4:], "little")
            if chunk_id == b"fmt ":
                if size < 16:
                    raise BadInput(f"WAV 'fmt ' chunk is truncated; expected {EXPECTED}")
                fmt = _parse_fmt(self._read_exact(size, "'fmt ' chunk"))
                if size & 1:
                    self._skip(1)
            elif chunk_id == b"data":
                if fmt is None:
                    raise BadInput(
                        f"WAV has its 'data' before its 'fmt ' chunk; expected {EXPECTED}"
                    )
                return fmt, self._data_size(size, fmt)
            else:
                self._skip(size + (size & 1))  # RIFF chunks are padded to an even length

    def _data_size(self, declared: int, fmt: AudioFormat) -> int | None:
        """The data chunk's size, checked against the file's when the file can tell."""
        if declared in _UNKNOWN_SIZES:
            return None
        if self._file.seekable():
            here = self._file.tell()
            available = self._file.seek(0, io.SEEK_END) - here
            self._file.seek(here)
            if available < declared:
                frame = fmt.frame_bytes
                raise BadInput(
                    f"WAV is truncated: header declares {declared // frame} frames, data holds "
                    f"{available // frame}; expected {EXPECTED}"
                )
        return declared


def _parse_fmt(body: bytes) -> AudioFormat:
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == _EXTENSIBLE:
        if len(body) < 40:
            raise BadInput(f"WAV extensible 'fmt ' chunk is truncated; expected {EXPECTED}")
        valid_bits = int.from_bytes(body[18:20], "little")
        tag = int.from_bytes(body[24:26], "little")  # the sub-format GUID's first two bytes
        if valid_bits and valid_bits != bits:
            raise BadInput(
                f"WAV holds {valid_bits}-bit samples in {bits}-bit containers; expected {EXPECTED}"
            )
    if tag not in _ENCODINGS:
        name = _FORMAT_NAMES.get(tag, f"compressed (format tag {tag:#06x})")
        raise BadInput(f"WAV holds {name}; expected {EXPECTED}")
    encoding = _ENCODINGS[tag]
    if encoding == "pcm" and bits not in (8, 16, 24, 32):
        raise BadInput(f"WAV has {bits}-bit samples; expected {EXPECTED}")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise BadInput(f"WAV sample rate is {rate} Hz; expected {EXPECTED}")
    try:
        fmt = AudioFormat(encoding=encoding, bits=bits, sample_rate=rate, channels=channels)
    except BadInput as exc:
        raise BadInput(f"WAV header: {exc}; expected {EXPECTED}") from None
    return fmt


def open_wav(source: str | os.PathLike[str] | bytes | BinaryIO) -> WavReader:
    """Open a WAV file (path, bytes or binary file) and read its header, or raise BadInput."""
    return WavReader(source)


def stream_wav(
    reader: WavReader,
    *,
    channel: str | None = None,
    rate: int | None = None,
    chunk_ms: int = 20,
    vad: str = "webrtcvad",
) -> tuple[int, Iterator[bytes]]:
    """The rate the segmenter will hear, and the file as 16-bit mono PCM chunks of about
    `chunk_ms` at that rate (resampled when needed), read from the file as they are needed."""
    out_rate = rate or segmenter_rate(reader.format.sample_rate, vad)
    converter = PcmConverter(reader.format, out_rate, channel=channel)
    read_size = max(1, reader.format.sample_rate * chunk_ms // 1000) * reader.format.frame_bytes
    out_size = 2 * max(1, out_rate * chunk_ms // 1000)

    def chunks() -> Iterator[bytes]:
        pending = b""
        for block in reader.chunks(read_size):
            pending += converter.convert(block)
            while len(pending) >= out_size:
                yield pending[:out_size]
                pending = pending[out_size:]
        pending += converter.flush()
        for offset in range(0, len(pending), out_size):
            yield pending[offset : offset + out_size]

    return out_rate, chunks()


def read_wav(
    source: str | os.PathLike[str] | bytes | BinaryIO,
    *,
    channel: str | None = None,
    downmix: bool = False,
    rate: int | None = None,
) -> PcmAudio:
    """A short WAV file whole, as 16-bit mono PCM at a rate the segmenter takes (its own
    when webrtcvad takes it, else resampled), or BadInput. `downmix=True` is channel='mix'."""
    with open_wav(source) as reader:
        out_rate, chunks = stream_wav(
            reader, channel="mix" if downmix and channel is None else channel, rate=rate
        )
        return PcmAudio(out_rate, b"".join(chunks))
