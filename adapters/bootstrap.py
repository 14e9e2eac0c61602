"""The composition root: wires the real event store and clock into a ready Engine."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
import structlog
from psycopg import sql

from ..domain.engine import Engine
from ..domain.errors import BadInput
from .logs import configure_logging
from .store.application import EventStore
from .store.database import eventsourcing_settings, resolve_database_url

# Serialises schema creation across processes: two processes creating the same tables at
# once can otherwise collide in PostgreSQL's catalogue.
_SCHEMA_LOCK = 0x766F786C  # "voxl"


# Tests hand their clock to the processes they start through this variable: an ISO 8601
# time at which the process's clock starts, running on at the machine's steady pace from
# there. Meant for tests (and for replaying a day by hand); production leaves it unset.
ENV_TEST_CLOCK = "VOXLEDGER_TEST_CLOCK"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, in UTC: the Engine's default source of command times."""
    return datetime.now(UTC)


class SteadyClock:
    """A clock that starts at a given moment and advances with the machine's monotonic
    clock: the same pace as real time, on whatever calendar day the caller chose."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise BadInput(f"{ENV_TEST_CLOCK} must carry a time zone, like 2026-11-21T14:00Z")
        self.start = start
        self._origin = time.monotonic()

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._origin)


def system_clock() -> Clock:
    """The clock every command of this process uses: the wall clock, unless the process was
    started with $VOXLEDGER_TEST_CLOCK (the one place besides utc_now that decides time)."""
    raw = os.environ.get(ENV_TEST_CLOCK)
    if not raw:
        return utc_now
    try:
        start = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(f"{ENV_TEST_CLOCK}={raw!r} is not an ISO 8601 time") from None
    return SteadyClock(start)


def jittered_backoff(attempt: int) -> None:
    """Wait a little, randomly, before retrying a command that lost a race, so that many
    writers on one conversation spread out instead of colliding again."""
    time.sleep(random.uniform(0, 0.002 * 2**attempt))


def open_store(database_url: str | None = None, *, schema: str | None = None) -> EventStore:
    """The PostgreSQL event store; the schema and tables are created on first use."""
    url = resolve_database_url(database_url)
    schema = schema or os.environ.get("VOXLEDGER_SCHEMA") or None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK,))
        exists = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema or "public",)
        ).fetchone()
        if schema and not exists:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        return EventStore(env=eventsourcing_settings(url, schema))


def open_engine(
    database_url: str | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
) -> Engine:
    """A ready Engine on the given database, $VOXLEDGER_DATABASE_URL, or the embedded server;
    its clock is the given one, else this process's (`system_clock`)."""
    if not structlog.is_configured():
        configure_logging()
    return Engine(
        open_store(database_url, schema=schema), clock or system_clock(), backoff=jittered_backoff
    )
