"""The composition root: wires the real event store and clock into a ready Engine."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import structlog
from psycopg import sql

from ..domain.engine import Engine
from .logs import configure_logging
from .store.application import EventStore
from .store.database import eventsourcing_settings, resolve_database_url

# Serialises schema creation across processes: two processes creating the same tables at
# once can otherwise collide in PostgreSQL's catalogue.
_SCHEMA_LOCK = 0x766F786C  # "voxl"


def utc_now() -> datetime:
    """The wall clock, in UTC: the Engine's default source of command times."""
    return datetime.now(UTC)


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
    clock: Callable[[], datetime] = utc_now,
) -> Engine:
    """A ready Engine on the given database, $VOXLEDGER_DATABASE_URL, or the embedded server."""
    if not structlog.is_configured():
        configure_logging()
    return Engine(open_store(database_url, schema=schema), clock, backoff=jittered_backoff)
