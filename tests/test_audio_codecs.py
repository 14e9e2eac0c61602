"""G.711 mu-law and A-law: table lookups that agree with the reference codec."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from voxledger.adapters.audio.codecs import alaw_decode, mulaw_decode, mulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    audioop = pytest.importorskip("audioop")  # the stdlib's C codec, gone in Python 3.13

EVERY_BYTE = bytes(range(256))
EVERY_SAMPLE = np.arange(-32768, 32768, dtype="<i2")


def test_mu_law_decodes_every_byte_as_the_reference_does() -> None:
    reference = np.frombuffer(audioop.ulaw2lin(EVERY_BYTE, 2), "<i2")
    assert np.array_equal(mulaw_decode(EVERY_BYTE), reference)


def test_a_law_decodes_every_byte_as_the_reference_does() -> None:
    reference = np.frombuffer(audioop.alaw2lin(EVERY_BYTE, 2), "<i2")
    assert np.array_equal(alaw_decode(EVERY_BYTE), reference)


def test_mu_law_encodes_every_16_bit_sample_as_the_reference_does() -> None:
    assert mulaw_encode(EVERY_SAMPLE) == audioop.lin2ulaw(EVERY_SAMPLE.tobytes(), 2)
    assert mulaw_encode(EVERY_SAMPLE.tobytes()) == mulaw_encode(EVERY_SAMPLE)


def test_mu_law_bytes_survive_a_round_trip_except_negative_zero() -> None:
    changed = [b for b in range(256) if mulaw_encode(mulaw_decode(bytes([b]))) != bytes([b])]
    assert changed == [0x7F]  # -0 decodes to 0, which encodes as +0 (0xFF)
