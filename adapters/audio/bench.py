"""How fast the listening pipeline runs, against webrtcvad alone on the same frames."""

from __future__ import annotations

import statistics
import time

import webrtcvad

from ...domain.errors import BadInput
from .listener import Listener
from .segmenter import SegmenterConfig
from .turns import TurnConfig


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
