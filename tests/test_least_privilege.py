"""The engine runs as a role that can append events (through the append function) and read
them, but can neither update nor delete them."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from voxledger.adapters.bootstrap import open_engine
from voxledger.adapters.store.event_store import snapshot_due, snapshot_phase
from voxledger.domain.engine import Engine

GRANTS = """
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT ON {schema}.voxledger_events, {schema}.voxledger_snapshots TO {role};
GRANT INSERT ON {schema}.voxledger_snapshots TO {role};
GRANT EXECUTE ON FUNCTION {schema}.voxledger_events_append TO {role};
"""


@pytest.fixture
def app_role_url(database_url: str, schema: str, engine: Engine):
    role = f"app_{schema}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL(GRANTS).format(schema=sql.Identifier(schema), role=sql.Identifier(role))
        )
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    yield psycopg.conninfo.make_conninfo(**{**info, "user": role})
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_engine_works_as_an_append_only_role(
    app_role_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXLEDGER_CREATE_TABLES", "no")
    with open_engine(app_role_url, schema=schema) as engine:
        cid = engine.start_conversation("chat")
        for i in range(200):  # past a snapshot (whatever its phase), which this role may write
            engine.add_message(cid, "user", f"m{i}")
        assert engine.store.flush_snapshots(timeout=30)
        due = [v for v in range(1, 202) if snapshot_due(100, v, 1, snapshot_phase(cid))]
        assert engine.store.snapshot_writer.written == len(due) >= 1
        engine.store.forget_cached()
        assert engine.get_conversation(cid).version == 201
    with psycopg.connect(app_role_url, autocommit=True) as conn:
        for statement in (
            "DELETE FROM {}.voxledger_events",
            "UPDATE {}.voxledger_events SET topic = 'x'",
            "INSERT INTO {}.voxledger_events (originator_id, originator_version) "
            "VALUES (gen_random_uuid(), 1)",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL(statement).format(sql.Identifier(schema)))
