"""How fast and how accurately the listening pipeline runs: against webrtcvad alone on the
same frames, and each speech detector against the truth of the same noisy files."""

from __future__ import annotations

import statistics
import time

import webrtcvad

from ...domain.errors import BadInput
from .listener import Listener
from .segmenter import SegmenterConfig, SpeechEnded
from .turns import TurnConfig
from .vad import open_segmenter
from .wav import PcmAudio


def measure_segmenter_speed(
    pcm: bytes,
    sample_rate: int,
    repeats: int = 5,
    *,
    chunk_ms: int = 20,
    segmenter: SegmenterConfig | None = None,
    turns: TurnConfig | None = None,
) -> dict[str, object]:
    """Time webrtcvad alone and the whole Listener over `pcm`, as multiples of real time.

    Each repeat uses fresh state; the Listener gets `chunk_ms` chunks as a call would send.
    Returns the median, min and max speed of each, and their ratio.
    """
    config = segmenter or SegmenterConfig(sample_rate=sample_rate)
    if config.sample_rate != sample_rate:
        raise BadInput(
            f"segmenter config is for {config.sample_rate} Hz but the PCM is {sample_rate} Hz"
        )
    audio_s = len(pcm) / 2 / sample_rate
    frame_bytes = 2 * config.frame_samples
    frames = [pcm[o : o + frame_bytes] for o in range(0, len(pcm) - frame_bytes + 1, frame_bytes)]
    chunk_bytes = 2 * (sample_rate * chunk_ms // 1000)
    chunks = [pcm[o : o + chunk_bytes] for o in range(0, len(pcm), chunk_bytes)]

    vad_speeds, listener_speeds = [], []
    for _ in range(repeats):
        vad = webrtcvad.Vad(config.aggressiveness)
        started = time.perf_counter()
        for frame in frames:
            vad.is_speech(frame, sample_rate)
        vad_speeds.append(audio_s / (time.perf_counter() - started))

        listener = Listener(config, turns)
        started = time.perf_counter()
        for chunk in chunks:
            listener.feed(chunk)
        listener.close()
        listener_speeds.append(audio_s / (time.perf_counter() - started))

    vad_median = statistics.median(vad_speeds)
    listener_median = statistics.median(listener_speeds)
    return {
        "audio_s": audio_s,
        "repeats": repeats,
        "chunk_ms": chunk_ms,
        "frame_ms": config.frame_ms,
        "vad_only_x_realtime": _spread(vad_speeds),
        "listener_x_realtime": _spread(listener_speeds),
        "listener_share_of_vad_speed": listener_median / vad_median,
    }


def _spread(speeds: list[float]) -> dict[str, float]:
    return {"median": statistics.median(speeds), "min": min(speeds), "max": max(speeds)}


def measure_accuracy(
    files: list[tuple[str, PcmAudio, list[dict[str, float]]]], vad: str = "webrtcvad"
) -> dict[str, object]:
    """Each file's utterances against its truth with one speech detector (`score_utterances`)
    and the speed in multiples of real time (20 ms chunks, the segmenter alone)."""
    audio_s = busy_s = 0.0
    if files:  # a first, untimed pass: the detector's and numpy's one-off set-up
        warm = open_segmenter(SegmenterConfig(sample_rate=files[0][1].sample_rate, vad=vad))
        warm.feed(files[0][1].pcm)
        warm.close()
    found: dict[str, list[tuple[float, float]]] = {}
    for name, audio, _ in files:
        segmenter = open_segmenter(SegmenterConfig(sample_rate=audio.sample_rate, vad=vad))
        chunk = 2 * audio.sample_rate // 50
        started = time.perf_counter()
        events = []
        for offset in range(0, len(audio.pcm), chunk):
            events += segmenter.feed(audio.pcm[offset : offset + chunk])
        events += segmenter.close()
        busy_s += time.perf_counter() - started
        audio_s += len(audio.pcm) / 2 / audio.sample_rate
        found[name] = [
            (e.utterance.start_s, e.utterance.end_s) for e in events if isinstance(e, SpeechEnded)
        ]
    truth = {name: true for name, _, true in files}
    return {"vad": vad, **score_utterances(found, truth), "x_realtime": audio_s / busy_s}


def score_utterances(
    found: dict[str, list[tuple[float, float]]], truth: dict[str, list[dict[str, float]]]
) -> dict[str, object]:
    """Utterances found (start and end seconds, by file) against the truth: onset and end
    errors in ms per utterance (end errors positive when late), the worst of each, and how
    many files met onsets within 60 ms and ends within 50 ms early / 400 ms late."""
    per_file: dict[str, list[tuple[float, float]]] = {}
    met = 0
    for name, utterances in found.items():
        true = truth[name]
        errors = [
            (1000 * (start - t["start_s"]), 1000 * (end - t["end_s"]))
            for (start, end), t in zip(utterances, true, strict=False)
        ]
        per_file[name] = errors
        if len(utterances) == len(true) and all(
            abs(onset) <= 60 and -50 <= end <= 400 for onset, end in errors
        ):
            met += 1
    everything = [e for errors in per_file.values() for e in errors]
    return {
        "files": len(found),
        "files_met": met,
        "errors_ms": per_file,
        "worst_onset_ms": max(abs(o) for o, _ in everything),
        "earliest_end_ms": min(e for _, e in everything),
        "latest_end_ms": max(e for _, e in everything),
    }
