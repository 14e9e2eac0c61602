"""The audio benchmark's report (its figures are read by `voxledger bench`, never asserted:
speed is measured by benchmarks, not by timed tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxledger.adapters.audio.bench import measure_segmenter_speed
from voxledger.adapters.audio.segmenter import SegmenterConfig
from voxledger.adapters.audio.wav import read_wav
from voxledger.domain.errors import BadInput

FIXTURES = Path(__file__).parent / "fixtures" / "audio"


def test_the_benchmark_reports_medians_and_spread_for_webrtcvad_and_the_whole_adapter() -> None:
    audio = read_wav(FIXTURES / "speech_16k.wav")
    report = measure_segmenter_speed(audio.pcm, audio.sample_rate, repeats=2, chunk_ms=20)
    assert report["audio_s"] == pytest.approx(len(audio.pcm) / 2 / 16000)
    for key in ("vad_only_x_realtime", "listener_x_realtime"):
        figures = report[key]
        assert set(figures) == {"median", "min", "max"}
        assert 0 < figures["min"] <= figures["median"] <= figures["max"]
    assert report["listener_share_of_vad_speed"] > 0


def test_the_benchmark_refuses_a_config_for_another_rate() -> None:
    audio = read_wav(FIXTURES / "speech_8k.wav")
    with pytest.raises(BadInput, match="16000 Hz but the PCM is 8000 Hz"):
        measure_segmenter_speed(audio.pcm, audio.sample_rate, segmenter=SegmenterConfig())
