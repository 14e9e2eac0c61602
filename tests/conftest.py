"""Real PostgreSQL for every test: the embedded server (started once) or
VOXLEDGER_TEST_DATABASE_URL; each test gets a schema of its own, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from debug_scenario import InProcess, Scenario, build_scenario
from fake_telegram import FakeTelegram
from fake_whatsapp import FakeWhatsApp
from psycopg import sql

from voxledger.adapters.bootstrap import open_engine
from voxledger.adapters.store.database import embedded_database_url
from voxledger.domain.engine import Engine


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of the PostgreSQL server the tests use."""
    url = os.environ.get("VOXLEDGER_TEST_DATABASE_URL")
    if url:
        return url
    return embedded_database_url(tmp_path_factory.mktemp("voxledger-home"))


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    """A fresh schema for one test, dropped when it ends."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def cli_env(database_url: str, schema: str) -> dict[str, str]:
    """Environment for running the voxledger command against this test's schema."""
    return {
        **os.environ,
        "VOXLEDGER_DATABASE_URL": database_url,
        "VOXLEDGER_SCHEMA": schema,
        "VOXLEDGER_LOG_LEVEL": "WARNING",
    }


class StepClock:
    """A clock that moves one second per reading: commands get distinct, known times."""

    def __init__(self, start: datetime = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def clock() -> StepClock:
    """A deterministic clock."""
    return StepClock()


@pytest.fixture
def engine(database_url: str, schema: str, clock: StepClock) -> Iterator[Engine]:
    """An Engine on this test's own schema."""
    with open_engine(database_url, schema=schema, clock=clock) as e:
        yield e


@pytest.fixture
def scenario(engine: Engine) -> Scenario:
    """A conversation with a completed flow, an edit and an undo (the debugging tests')."""
    return build_scenario(engine)


@pytest.fixture
def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, database_url: str
) -> InProcess:
    """The voxledger command run in this process, on the test database."""
    monkeypatch.setenv("VOXLEDGER_DATABASE_URL", database_url)
    return InProcess(capsys, monkeypatch)


@pytest.fixture
def telegram_api() -> Iterator[FakeTelegram]:
    """A local Telegram Bot API server on 127.0.0.1, stopped after the test."""
    server = FakeTelegram().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def whatsapp_api() -> Iterator[FakeWhatsApp]:
    """A local WhatsApp Cloud API (Graph API) server on 127.0.0.1, stopped after the test."""
    server = FakeWhatsApp().start()
    try:
        yield server
    finally:
        server.stop()
