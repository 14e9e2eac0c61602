"""G.711 mu-law and A-law (ITU-T G.711), as table lookups: one byte is one sample.

Telephone audio (Twilio Media Streams, most SIP trunks) arrives as 8 kHz mu-law; A-law is
its European sibling. Decoding maps each byte through a 256-entry table to 16-bit PCM;
mu-law encoding maps each 16-bit sample through a 65,536-entry table, built once.
"""

from __future__ import annotations

import numpy as np

_MULAW_BIAS = 0x84
_MULAW_CLIP = 32635
_MULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def _mulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype("<i2")


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    # In A-law the sign bit set means a positive sample.
    return np.where(a & 0x80, magnitude, -magnitude).astype("<i2")


def _mulaw_encode_table() -> np.ndarray:
    # The reference encoder (CCITT's, as in Sun's g711.c): 14-bit magnitude, bias 33,
    # segment found by its upper bounds.
    x = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(x), _MULAW_CLIP >> 2) + (_MULAW_BIAS >> 2)
    segment = np.searchsorted(_MULAW_SEGMENT_ENDS, magnitude, side="left")
    encoded = ((segment << 4) | ((magnitude >> (segment + 1)) & 0x0F)) ^ mask
    # Indexed by the sample's bit pattern read as unsigned: rotate so index 0 is sample 0.
    return np.roll(encoded.astype(np.uint8), -32768)


MULAW_TO_PCM16 = _mulaw_decode_table()
ALAW_TO_PCM16 = _alaw_decode_table()
_PCM16_TO_MULAW = _mulaw_encode_table()


def mulaw_decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """mu-law bytes to 16-bit samples (one per byte)."""
    return MULAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes | bytearray | memoryview) -> np.ndarray:
    """A-law bytes to 16-bit samples (one per byte)."""
    return ALAW_TO_PCM16[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(samples: np.ndarray | bytes | bytearray | memoryview) -> bytes:
    """16-bit samples (an int16 array, or little-endian PCM bytes) to mu-law bytes."""
    if isinstance(samples, np.ndarray):
        pcm = samples.astype("<i2", copy=False)
    else:
        pcm = np.frombuffer(samples, dtype="<i2")
    return _PCM16_TO_MULAW[pcm.view(np.uint16)].tobytes()
