"""Audio: the voice adapter (segmenter and turn detector) against webrtcvad alone, in times
real time, and both speech detectors' accuracy on the held-out noisy recordings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...adapters.audio.bench import measure_accuracy, measure_segmenter_speed
from ...adapters.audio.wav import read_wav
from ...domain.errors import BadInput
from .harness import Bench, Figure, Result


def audio(bench: Bench) -> Result:
    """The voice adapter (segmenter + turn detector) vs webrtcvad alone, x real time."""
    pcm, rate, source = speech_for_benchmark()
    report = measure_segmenter_speed(pcm, rate, repeats=bench.setting.runs)
    ours = Figure(**report["listener_x_realtime"], runs=bench.setting.runs)
    vad = Figure(**report["vad_only_x_realtime"], runs=bench.setting.runs)
    figures, references, accuracy = {"x_realtime": ours}, {"webrtcvad alone": vad}, []
    default_met = True
    noisy = noisy_speech_for_benchmark()
    if noisy:
        for backend in ("webrtcvad", "silero"):
            try:
                found = measure_accuracy(noisy, backend)
            except BadInput:  # Silero VAD is an optional extra
                accuracy.append(f"{backend}: not installed")
                continue
            target = figures if backend == "webrtcvad" else references
            for key in ("worst_onset_ms", "earliest_end_ms", "latest_end_ms", "x_realtime"):
                value = float(found[key])  # type: ignore[arg-type]
                target[f"{backend} noisy {key}"] = Figure(value, value, value, 1)
            accuracy.append(f"{backend}: {found['files_met']}/{found['files']} files met")
            if backend == "webrtcvad":
                default_met = found["files_met"] == found["files"]
    return Result(
        "audio adapter",
        "x real time (one core); onset/end errors in ms on held-out noisy speech",
        figures,
        references,
        {"ours / webrtcvad": ours.median / vad.median},
        ">= 2,000x real time; onsets within 60 ms, ends 50 ms early to 400 ms late",
        ours.median >= 2000 and default_met,
        notes=f"{report['audio_s']:.1f} s of {source}; noisy files: {'; '.join(accuracy)}",
    )


def speech_for_benchmark() -> tuple[bytes, int, str]:
    """The long speech fixture when running from a checkout, else a synthetic stand-in."""
    fixture = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "audio" / "long_16k.wav"
    if fixture.exists():
        audio = read_wav(fixture)
        return audio.pcm, audio.sample_rate, "real speech (tests/fixtures/audio/long_16k.wav)"
    rng = np.random.default_rng(7)
    seconds = np.arange(16000 * 60) / 16000
    bursts = (np.sin(2 * np.pi * 0.25 * seconds) > 0).astype(float)
    signal = bursts * rng.normal(0, 3000, seconds.size) * np.sin(2 * np.pi * 180 * seconds)
    return signal.astype("<i2").tobytes(), 16000, "synthetic voiced bursts (no fixture found)"


def noisy_speech_for_benchmark() -> list[tuple[str, Any, list[dict[str, float]]]]:
    """The held-out noisy fixtures with their truth, when running from a checkout."""
    folder = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "audio"
    if not (folder / "truth.json").exists():
        return []
    truth = json.loads((folder / "truth.json").read_text())
    names = sorted(n for n in truth if n.startswith("heldout_"))
    return [(n, read_wav(folder / n), truth[n]) for n in names]
