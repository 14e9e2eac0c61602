"""The speech detector a configuration names: webrtcvad's segmenter (always installed, fast)
or Silero VAD's (the voice-silero extra), both with the same outputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .segmenter import Segmenter, SegmenterConfig

if TYPE_CHECKING:
    from .silero import SileroSegmenter


def open_segmenter(config: SegmenterConfig) -> Segmenter | SileroSegmenter:
    """The segmenter of the configured speech detector (BadInput if Silero is not installed)."""
    if config.vad == "silero":
        # Imported here: onnxruntime and the model load only for those who chose Silero.
        from .silero import SileroSegmenter

        return SileroSegmenter(config)
    return Segmenter(config)
