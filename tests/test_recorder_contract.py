"""The eventsourcing library's own contract tests for an application recorder, run against
voxledger's `Recorder` (its one-statement appends under the appends' advisory lock, command
ids, tuple reads): what the library promises its users, our recorder keeps.

`SnapshotRecorder` is left out on purpose: the library's aggregate recorder contract wants an
IntegrityError for a version stored twice, and a snapshot taken again at a version it already
has is skipped instead (two workers may take the same one; it says the same)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
)
from psycopg import sql

from voxledger.adapters.store.recorder import Recorder


@pytest.fixture(autouse=True)
def _on_a_schema_of_its_own(
    request: pytest.FixtureRequest, database_url: str, schema: str
) -> Iterator[None]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    parts = psycopg.conninfo.conninfo_to_dict(database_url)
    made: list[Recorder] = []

    def recorder() -> Recorder:
        datastore = PostgresDatastore(
            dbname=str(parts.get("dbname") or "postgres"),
            host=str(parts.get("host") or "localhost"),
            port=str(parts.get("port") or "5432"),
            user=str(parts.get("user") or "postgres"),
            password=str(parts.get("password") or ""),
            schema=schema,
            pool_size=4,
            max_overflow=4,
        )
        made.append(Recorder(datastore, events_table_name="stored_events"))
        made[-1].create_table()
        return made[-1]

    request.instance.recorder = recorder
    yield
    for each in made:
        each.release_appender()  # the connection kept for appends, back before the pool closes
        each.datastore.close()


class _OnOurRecorder:
    recorder: Any

    def create_recorder(self) -> Recorder:
        return self.recorder()


class TestApplicationRecorder(_OnOurRecorder, ApplicationRecorderTestCase[Recorder]):
    pass


class TestNonInterleavingNotificationIds(_OnOurRecorder, NonInterleavingNotificationIDsBaseCase):
    pass
