"""Decoding from many threads at once never crashes the process, even for event classes
met for the first time (msgspec publishes a Struct's decoding info before it is complete)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

WORKER = str(Path(__file__).parent / "workers" / "decode_race.py")


@pytest.mark.parametrize("plans", ["cold", "prepared"])
def test_eight_threads_decoding_every_event_kind_at_once_never_crash(plans: str) -> None:
    # One run crashed about one time in three before plans were built one thread at a time.
    for _ in range(10):
        run = subprocess.run(
            [sys.executable, WORKER, plans], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
