"""The harness of `voxledger bench`: a schema of its own, repeated runs, figures with their
spread, results next to a reference, and the workloads several benchmarks share.

Each benchmark runs a few times against the same database and reports the median and the
spread of every figure, and the ratio of ours to the reference (the machine is shared and
noisy: ratios measured side by side mean more than absolute numbers).
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from eventsourcing.application import Application
from psycopg import sql

from ...adapters.bootstrap import connections, open_engine
from ...adapters.store.database import eventsourcing_settings
from ...domain.conversation import Conversation

# Benchmarks record their events at one fixed time: what they measure never depends on it.
NOW = datetime(2026, 11, 21, 14, 2, tzinfo=UTC)


class Figure(msgspec.Struct):
    """A measured quantity: its median over the runs and the spread."""

    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, samples: list[float]) -> Figure:
        """Summarise repeated measurements."""
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))


class Result(msgspec.Struct):
    """One benchmark: ours, the references, the ratios and the target."""

    name: str
    unit: str
    ours: dict[str, Figure]
    references: dict[str, Figure]
    ratios: dict[str, float]
    target: str
    met: bool
    notes: str = ""


class Setting(msgspec.Struct, frozen=True):
    """How big the runs are (`--quick` makes them small)."""

    runs: int
    single_commands: int
    concurrent_conversations: int
    concurrent_commands_each: int
    replay_events: int
    projection_conversations: int
    lag_seconds: float
    memory_conversations: int
    in_memory_commands: int


FULL = Setting(5, 2000, 64, 40, 10_000, 1_000, 5.0, 10_000, 200_000)
QUICK = Setting(3, 300, 64, 8, 10_000, 50, 1.0, 1_000, 50_000)


class Bench:
    """Runs the benchmarks in a schema of their own, dropped at the end."""

    def __init__(self, database_url: str, setting: Setting) -> None:
        self.url = database_url
        self.setting = setting
        self.schema = f"bench_{uuid.uuid4().hex[:10]}"

    def __enter__(self) -> Bench:
        self.engine = open_engine(self.url, schema=self.schema)
        with self.connect() as conn:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {}.raw_events (stream uuid, version bigint, topic text, "
                    "state bytea, position bigserial, PRIMARY KEY (stream, version))"
                ).format(sql.Identifier(self.schema))
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.close()
        with self.connect() as conn:
            conn.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )

    def connect(self) -> psycopg.Connection[Any]:
        """A plain autocommit connection."""
        return psycopg.connect(self.url, autocommit=True)

    def repeat(self, measure: Callable[[], dict[str, float]]) -> dict[str, Figure]:
        """Run one measurement several times; summarise each of its figures."""
        samples: dict[str, list[float]] = {}
        for _ in range(self.setting.runs):
            for key, value in measure().items():
                samples.setdefault(key, []).append(value)
        return {key: Figure.of(values) for key, values in samples.items()}


def library_default_application(url: str, schema: str) -> Application[Any]:
    """The eventsourcing library as configured by default (JSON, table lock, pipeline)."""

    class LibraryDefault(Application[Any]):
        name = "library_default"

    return LibraryDefault(
        env={
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            **eventsourcing_settings(url, schema, connections()),
        }
    )


def build_long_conversation(save: Callable[..., Any], n: int) -> uuid.UUID:
    """A voice conversation of n events (a message every sixth), saved 500 at a time."""
    conversation = Conversation.start("bench", at=NOW)
    for i in range(n - 1):
        if i % 6 == 0:
            conversation.add_message(f"m{i}", "user", f"message {i}", at=NOW)
        else:
            conversation.record_levels(-20.0, -12.0, 40.0, at=NOW)
        if len(conversation.pending_events) >= 500:
            save(conversation)
    save(conversation)
    return conversation.id
