"""Real PostgreSQL for every test: the embedded server (started once) or
VOXLEDGER_TEST_DATABASE_URL; each test gets a schema of its own, dropped afterwards.

Time is an input: every test has a clock, and every process a test starts gets it through
$VOXLEDGER_TEST_CLOCK, so the suite passes on any date. A run never hangs: processes a test
spawns are killed in its teardown, and a watchdog turns a stuck run into a failure with
every thread's stack (see `pytest_configure`).
"""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from debug_scenario import InProcess, Scenario, build_scenario
from fake_telegram import FakeTelegram
from fake_whatsapp import FakeWhatsApp
from hypothesis import settings as hypothesis_settings
from own_postgres import own_server  # noqa: F401  (a fixture: a server a test may stop)
from psycopg import sql

from voxledger.adapters.bootstrap import ENV_TEST_CLOCK, open_engine
from voxledger.adapters.store.database import embedded_database_url
from voxledger.domain.engine import Engine

# Time is measured by benchmarks, never by a test: no example fails for having taken long on
# a busy machine (Hypothesis's default deadline failed one under faketime: 767 ms, then 0.09).
hypothesis_settings.register_profile("voxledger", deadline=None)
hypothesis_settings.load_profile("voxledger")


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
def cli_env(database_url: str, schema: str, clock: StepClock) -> dict[str, str]:
    """Environment for running the voxledger command against this test's schema, on this
    test's clock (the process's clock starts where the test's stands, and runs on)."""
    return {
        **os.environ,
        "VOXLEDGER_DATABASE_URL": database_url,
        "VOXLEDGER_SCHEMA": schema,
        "VOXLEDGER_LOG_LEVEL": "WARNING",
        ENV_TEST_CLOCK: clock.now.isoformat(),
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


@pytest.fixture(autouse=True)
def on_the_test_clock(monkeypatch: pytest.MonkeyPatch, clock: StepClock) -> None:
    """Every engine a test opens without a clock of its own, in this process or in one it
    starts, runs on the test's calendar (from where the test's clock stands), never today's."""
    monkeypatch.setenv(ENV_TEST_CLOCK, clock.now.isoformat())


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
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    clock: StepClock,
) -> InProcess:
    """The voxledger command run in this process, on the test database and clock."""
    monkeypatch.setenv("VOXLEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv(ENV_TEST_CLOCK, clock.now.isoformat())
    return InProcess(capsys, monkeypatch)


Spawn = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """`subprocess.Popen` for a test: whatever happens in the test, every process it started
    this way is killed (with its own children) and reaped in the teardown."""
    started: list[subprocess.Popen[str]] = []

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[str]:
        kwargs.setdefault("start_new_session", True)  # its own group: killed with children
        process: subprocess.Popen[str] = subprocess.Popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(process)
        return process

    yield popen
    for process in started:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()
        process.wait(timeout=30)


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


# -- a run that cannot hang ---------------------------------------------------------------------

# Well under CI's 90 minutes; the whole suite takes a few. 0 turns the watchdog off (debugging).
DEADLINE_S = float(os.environ.get("VOXLEDGER_TEST_DEADLINE_S", "1500"))
_exit_status: list[int] = [0]


def pytest_configure(config: pytest.Config) -> None:
    """Arm the watchdog: past the deadline every thread's stack is printed and the run
    exits with a failure, wherever it is stuck (a test, a teardown, interpreter exit).
    A pytest-xdist worker's fires a minute earlier, so that the stacks printed are those of
    the stuck worker and the controller reports it as crashed, naming its test."""
    if DEADLINE_S > 0:
        worker = hasattr(config, "workerinput")
        faulthandler.dump_traceback_later(
            max(DEADLINE_S - 60, 1) if worker else DEADLINE_S, exit=True
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember how the run went, for the check below."""
    _exit_status[0] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A thread a test left running would keep the interpreter alive after the summary:
    give stragglers a moment, then name them with their stacks and fail at once."""
    stragglers = [
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    for thread in stragglers:
        thread.join(timeout=10 / len(stragglers))
    stuck = [t for t in stragglers if t.is_alive()]
    if not stuck:
        return
    names = ", ".join(t.name for t in stuck)
    sys.stderr.write(f"\nFAILED: threads left running after the tests: {names}\n")
    faulthandler.dump_traceback(sys.stderr, all_threads=True)
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(_exit_status[0] or 1)
