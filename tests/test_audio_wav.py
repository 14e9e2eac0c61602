"""Reading WAV files as streams: any common encoding, rate and channel layout, converted to the
16-bit mono PCM the segmenter hears; what cannot be read is refused by name."""

from __future__ import annotations

import io
import json
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voxledger.adapters.audio.segmenter import Segmenter, SegmenterConfig, SpeechEnded
from voxledger.adapters.audio.wav import open_wav, read_wav, stream_wav
from voxledger.domain.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "audio"
TRUTH = json.loads((FIXTURES / "truth.json").read_text())
SPEECH_16K = np.frombuffer(read_wav(FIXTURES / "speech_16k.wav").pcm, "<i2")


def wav_file(
    samples: np.ndarray,
    rate: int,
    *,
    tag: int = 1,
    bits: int = 16,
    extensible: bool = False,
    data_size: int | None = None,
) -> bytes:
    """A WAV file written by hand (frames x channels of already-encoded sample values)."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    channels = frames.shape[1]
    if bits == 24:
        as_int = frames.astype("<i4").reshape(-1)
        data = np.stack([(as_int >> s) & 0xFF for s in (0, 8, 16)], axis=1).astype(np.uint8)
        data = data.tobytes()
    else:
        data = frames.tobytes()
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block,
                      block, bits)  # fmt: skip
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + guid_tail
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST\x04\x00\x00\x00abcd"
    body += b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fft_resample(x: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling by FFT: an independent reference, not the code under test."""
    n = round(len(x) * new_rate / rate)
    spectrum = np.fft.rfft(x.astype(np.float64))
    out = np.zeros(n // 2 + 1, dtype=complex)
    keep = min(len(spectrum), len(out))
    out[:keep] = spectrum[:keep]
    return np.fft.irfft(out, n) * (n / len(x))


def utterances(pcm: bytes, rate: int) -> list[tuple[float, float]]:
    segmenter = Segmenter(SegmenterConfig(sample_rate=rate))
    events = segmenter.feed(pcm) + segmenter.close()
    return [(e.utterance.start_s, e.utterance.end_s) for e in events if isinstance(e, SpeechEnded)]


def assert_matches_truth(found: list[tuple[float, float]], truth: list[dict]) -> None:
    assert len(found) == len(truth)
    for (start, end), true in zip(found, truth, strict=True):
        assert abs(start - true["start_s"]) <= 0.060
        assert -0.050 <= end - true["end_s"] <= 0.400


def test_16_bit_mono_at_a_webrtcvad_rate_passes_through_unchanged() -> None:
    audio = read_wav(FIXTURES / "speech_16k.wav")
    with wave.open(str(FIXTURES / "speech_16k.wav"), "rb") as w:
        assert audio == (16000, w.readframes(w.getnframes()))


@pytest.mark.parametrize("name", ["speech_mulaw_8k.wav", "speech_alaw_8k.wav"])
def test_g711_wav_files_made_by_sox_decode_to_the_speech_they_carry(name: str) -> None:
    audio = read_wav(FIXTURES / name)
    clean = np.frombuffer(read_wav(FIXTURES / "speech_8k.wav").pcm, "<i2").astype(float)
    decoded = np.frombuffer(audio.pcm, "<i2").astype(float)
    assert audio.sample_rate == 8000 and len(decoded) == len(clean)
    # G.711 keeps about 38 dB of signal to quantisation noise on speech.
    noise = np.sqrt(np.mean((decoded - clean) ** 2))
    assert 20 * np.log10(np.sqrt(np.mean(clean**2)) / noise) > 30
    assert_matches_truth(utterances(audio.pcm, 8000), TRUTH["speech_8k.wav"])


@pytest.mark.parametrize(
    ("tag", "bits", "encode"),
    [
        (1, 8, lambda x: (x // 256 + 128).astype(np.uint8)),
        (1, 24, lambda x: x.astype(np.int32) * 256),
        (1, 32, lambda x: x.astype("<i4") * 65536),
        (3, 32, lambda x: (x / 32768).astype("<f4")),
        (3, 64, lambda x: (x / 32768).astype("<f8")),
    ],
)
@pytest.mark.parametrize("extensible", [False, True])
def test_pcm_and_float_samples_of_every_width_read_as_16_bit(tag, bits, encode, extensible) -> None:
    data = wav_file(encode(SPEECH_16K), 16000, tag=tag, bits=bits, extensible=extensible)
    audio = read_wav(data)
    got = np.frombuffer(audio.pcm, "<i2").astype(int)
    tolerance = 256 if bits == 8 else 1
    assert audio.sample_rate == 16000
    assert np.abs(got - SPEECH_16K).max() <= tolerance


@pytest.mark.parametrize("rate", [11025, 22050, 44100, 48000, 96000])
def test_any_rate_from_8_to_96_khz_is_resampled_and_segments_like_the_original(rate) -> None:
    resampled = np.clip(np.rint(fft_resample(SPEECH_16K, 16000, rate)), -32768, 32767)
    audio = read_wav(wav_file(resampled.astype("<i2"), rate))
    assert audio.sample_rate in (8000, 16000, 48000)
    assert_matches_truth(utterances(audio.pcm, audio.sample_rate), TRUTH["speech_16k.wav"])


def test_stereo_is_refused_naming_the_channel_choice() -> None:
    with pytest.raises(BadInput, match=r"2 channels, not mono; choose .*left, right or mix"):
        read_wav(FIXTURES / "stereo_16k.wav")


@pytest.mark.parametrize(("channel", "expected"), [("left", 1.0), ("right", 0.0), ("mix", 0.5)])
def test_a_stereo_channel_is_chosen_or_the_channels_mixed(channel: str, expected: float) -> None:
    with wave.open(str(FIXTURES / "stereo_16k.wav"), "rb") as w:
        both = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, 2)
    # The fixture has speech on the left and silence on the right.
    mono = np.frombuffer(read_wav(FIXTURES / "stereo_16k.wav", channel=channel).pcm, "<i2")
    assert len(mono) == len(both)
    assert np.abs(mono - both[:, 0] * expected).max() <= 0.5


def test_downmix_is_the_mix_channel() -> None:
    source = FIXTURES / "stereo_16k.wav"
    assert read_wav(source, downmix=True) == read_wav(source, channel="mix")


def test_an_unknown_channel_choice_is_refused() -> None:
    with pytest.raises(BadInput, match="channel must be one of left, right, mix, got 'centre'"):
        read_wav(FIXTURES / "stereo_16k.wav", channel="centre")


def test_a_file_is_read_in_chunks_never_whole() -> None:
    class CountingFile(io.BytesIO):
        largest = 0

        def read(self, n: int | None = -1) -> bytes:
            block = super().read(n)
            CountingFile.largest = max(CountingFile.largest, len(block))
            return block

    data = (FIXTURES / "long_16k.wav").read_bytes()
    with open_wav(CountingFile(data)) as reader:
        rate, chunks = stream_wav(reader, chunk_ms=20)
        pcm = b"".join(chunks)
    assert rate == 16000 and pcm == read_wav(data).pcm
    assert CountingFile.largest <= 640


def test_a_stream_of_unknown_length_is_read_to_its_end() -> None:
    data = wav_file(SPEECH_16K, 16000, data_size=0xFFFFFFFF)
    assert read_wav(data).pcm == SPEECH_16K.tobytes()


def test_chunked_resampling_gives_the_same_pcm_as_the_whole_file() -> None:
    data = wav_file(np.rint(fft_resample(SPEECH_16K, 16000, 44100)).astype("<i2"), 44100)
    outputs = set()
    for chunk_ms in (1, 7, 20, 333):
        with open_wav(data) as reader:
            outputs.add(b"".join(stream_wav(reader, chunk_ms=chunk_ms)[1]))
    assert len(outputs) == 1


@pytest.mark.parametrize(("tag", "name"), [(2, "ADPCM"), (0x55, "MP3"), (0x1234, "0x1234")])
def test_compressed_encodings_are_refused_by_name(tag: int, name: str) -> None:
    with pytest.raises(BadInput, match=rf"WAV holds .*{name}.*; expected a WAV file of PCM"):
        read_wav(wav_file(SPEECH_16K[:160], 16000, tag=tag))


def test_12_bit_samples_are_refused() -> None:
    with pytest.raises(BadInput, match=r"12-bit samples; expected"):
        read_wav(wav_file(SPEECH_16K[:160], 16000, bits=12))


@pytest.mark.parametrize("rate", [4000, 192000])
def test_a_rate_outside_8_to_96_khz_is_refused(rate: int) -> None:
    with pytest.raises(BadInput, match=rf"{rate} Hz; expected .* 8000 to 96000 Hz"):
        read_wav(wav_file(SPEECH_16K[:160], rate))


@pytest.mark.parametrize(
    "garbage",
    [b"", b"hello", b"ID3\x03" + bytes(100), b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(40)],
)
def test_non_wav_bytes_are_refused(garbage: bytes) -> None:
    with pytest.raises(BadInput, match=r"not a WAV file"):
        read_wav(garbage)


def test_a_file_cut_short_is_refused_as_truncated_before_any_audio_is_read() -> None:
    data = (FIXTURES / "speech_16k.wav").read_bytes()
    with pytest.raises(BadInput, match=r"truncated: header declares \d+ frames, data holds \d+"):
        open_wav(data[: len(data) // 2])


def test_a_file_cut_inside_its_header_is_refused() -> None:
    data = (FIXTURES / "speech_16k.wav").read_bytes()
    for cut in (16, 30, 40):
        with pytest.raises(BadInput, match="WAV"):
            read_wav(data[:cut])


def test_a_missing_file_is_bad_input_not_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read WAV file"):
        read_wav(tmp_path / "nope.wav")
