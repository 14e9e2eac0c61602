"""The listening pipeline keeps up with webrtcvad: at least a seventh of its speed."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxledger.adapters.audio.bench import measure_segmenter_speed
from voxledger.adapters.audio.segmenter import SegmenterConfig
from voxledger.adapters.audio.wav import read_wav
from voxledger.domain.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "audio"


@pytest.mark.slow
def test_the_whole_adapter_runs_at_least_a_seventh_as_fast_as_webrtcvad_alone() -> None:
    # 2,000x real time against webrtcvad's 14,000x on the reference machine; a ratio, so a
    # slower CI runner does not fail the test for being slow overall.
    audio = read_wav(FIXTURES / "long_16k.wav")
    report = measure_segmenter_speed(audio.pcm, audio.sample_rate, repeats=3, chunk_ms=20)
    assert report["audio_s"] == pytest.approx(59.1, abs=0.1)
    assert report["listener_x_realtime"]["median"] > 0
    assert report["listener_share_of_vad_speed"] >= 1 / 7, report


def test_the_benchmark_refuses_a_config_for_another_rate() -> None:
    audio = read_wav(FIXTURES / "speech_8k.wav")
    with pytest.raises(BadInput, match="16000 Hz but the PCM is 8000 Hz"):
        measure_segmenter_speed(audio.pcm, audio.sample_rate, segmenter=SegmenterConfig())
