"""Reading WAV files: only 16-bit PCM mono at a webrtcvad rate gets through."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voxledger.adapters.audio.wav import read_wav
from voxledger.domain.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "audio"


def wav_bytes(*, rate: int = 16000, channels: int = 1, width: int = 2, frames: int = 160) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * (frames * channels * width // 2))
    return out.getvalue()


def with_format_tag(data: bytes, tag: int) -> bytes:
    """A copy of a PCM WAV whose header claims another encoding (offset 20 in a plain file)."""
    assert data[12:16] == b"fmt "
    return data[:20] + struct.pack("<H", tag) + data[22:]


def test_a_16_bit_mono_fixture_reads_as_its_rate_and_samples() -> None:
    audio = read_wav(FIXTURES / "speech_16k.wav")
    with wave.open(str(FIXTURES / "speech_16k.wav"), "rb") as w:
        expected = w.readframes(w.getnframes())
    assert audio.sample_rate == 16000
    assert audio.pcm == expected


def test_every_webrtcvad_rate_is_accepted() -> None:
    assert read_wav(FIXTURES / "speech_8k.wav").sample_rate == 8000
    for rate in (8000, 16000, 32000, 48000):
        assert read_wav(wav_bytes(rate=rate)).sample_rate == rate


def test_bytes_and_binary_files_read_like_paths() -> None:
    data = (FIXTURES / "speech_8k.wav").read_bytes()
    assert read_wav(data) == read_wav(io.BytesIO(data)) == read_wav(FIXTURES / "speech_8k.wav")


def test_stereo_is_refused_naming_the_expected_format_and_the_option() -> None:
    with pytest.raises(BadInput, match=r"2 channels; expected 16-bit signed PCM, mono.*downmix"):
        read_wav(FIXTURES / "stereo_16k.wav")


def test_stereo_is_averaged_to_mono_when_downmix_is_asked_for() -> None:
    with wave.open(str(FIXTURES / "stereo_16k.wav"), "rb") as w:
        both = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    audio = read_wav(FIXTURES / "stereo_16k.wav", downmix=True)
    mono = np.frombuffer(audio.pcm, "<i2")
    # The fixture has speech on the left and silence on the right: the mix is half the left.
    assert audio.sample_rate == 16000
    assert len(mono) == len(both)
    assert np.abs(mono.astype(int) - both[:, 0] / 2).max() <= 0.5
    assert np.abs(mono).max() > 1000


def test_8_bit_samples_are_refused() -> None:
    with pytest.raises(BadInput, match=r"8-bit samples; expected 16-bit signed PCM"):
        read_wav(FIXTURES / "8bit_16k.wav")


def test_12_bit_samples_in_two_bytes_are_refused() -> None:
    data = wav_bytes()
    twelve_bit = data[:34] + struct.pack("<H", 12) + data[36:]
    with pytest.raises(BadInput, match=r"12-bit samples; expected 16-bit signed PCM"):
        read_wav(twelve_bit)


def test_an_unsupported_rate_is_refused_naming_the_supported_ones() -> None:
    with pytest.raises(BadInput, match=r"22050 Hz; expected .*8000, 16000, 32000 or 48000 Hz"):
        read_wav(wav_bytes(rate=22050))


def test_float_samples_are_refused_by_name() -> None:
    with pytest.raises(BadInput, match=r"IEEE float samples; expected 16-bit signed PCM"):
        read_wav(with_format_tag(wav_bytes(width=4), 3))


@pytest.mark.parametrize(("tag", "name"), [(7, "mu-law"), (6, "A-law"), (0x1234, "compressed")])
def test_compressed_encodings_are_refused_by_name(tag: int, name: str) -> None:
    with pytest.raises(BadInput, match=rf"{name}.*; expected 16-bit signed PCM"):
        read_wav(with_format_tag(wav_bytes(), tag))


def test_the_extensible_header_is_refused_with_what_to_do() -> None:
    with pytest.raises(BadInput, match=r"WAVE_FORMAT_EXTENSIBLE.*plain PCM header"):
        read_wav(with_format_tag(wav_bytes(), 0xFFFE))


@pytest.mark.parametrize(
    "garbage",
    [b"", b"hello", b"ID3\x03" + bytes(100), b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(40)],
)
def test_non_wav_bytes_are_refused(garbage: bytes) -> None:
    with pytest.raises(BadInput, match=r"not a WAV file.*expected 16-bit signed PCM"):
        read_wav(garbage)


def test_a_file_cut_short_is_refused_as_truncated() -> None:
    data = (FIXTURES / "speech_16k.wav").read_bytes()
    with pytest.raises(BadInput, match=r"truncated: header declares \d+ frames, data holds \d+"):
        read_wav(data[: len(data) // 2])


def test_a_file_cut_inside_its_header_is_refused() -> None:
    data = (FIXTURES / "speech_16k.wav").read_bytes()
    for cut in (16, 30, 40):
        with pytest.raises(BadInput, match="expected 16-bit signed PCM"):
            read_wav(data[:cut])


def test_a_missing_file_is_bad_input_not_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read WAV file"):
        read_wav(tmp_path / "nope.wav")
