"""The event loop's own connections (`LoopConnection`): the shared commits' appends and the chat
directory's reads. A lost connection is replaced, an append that may have committed is not
made twice, and each event loop gets a connection of its own."""

from __future__ import annotations

import socket
from uuid import uuid4

import anyio
import psycopg
import pytest
from eventsourcing.persistence import OperationalError, StoredEvent

from voxledger.adapters.bootstrap import open_async_engine
from voxledger.adapters.store.event_store import EventStore
from voxledger.adapters.store.loop_connection import LoopConnection
from voxledger.adapters.store.recorder import Append
from voxledger.domain.engine import Engine


def store_of(engine: Engine) -> EventStore:
    assert isinstance(engine.store, EventStore)
    return engine.store


def count_rows(database_url: str, schema: str, command_id: object) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        query = f"SELECT count(*) FROM {schema}.voxledger_events WHERE command_id = %s"
        row = conn.execute(query, (command_id,)).fetchone()
    assert row is not None
    return int(row[0])


def test_an_append_whose_connection_broke_after_it_committed_is_not_made_twice(
    engine: Engine, database_url: str, schema: str
) -> None:
    recorder = store_of(engine).recorder
    stream = uuid4()
    save = Append(
        [StoredEvent(stream, v, "voxledger:test.Event", b"\x80") for v in (1, 2)], uuid4()
    )
    statement, params = recorder._append_params([save], False)  # type: ignore[attr-defined]
    loop_connection = LoopConnection(recorder.datastore)
    attempts: list[bool] = []

    async def append(conn: psycopg.AsyncConnection, again: bool) -> list[int]:
        attempts.append(again)
        run = (*params[:-1], True) if again else params  # as Recorder.append_async does
        async with conn.cursor() as c:
            await c.execute(statement, run, binary=True)
            positions = [row[0] for row in await c.fetchall()]
        if len(attempts) == 1:  # committed; then the connection goes before the answer
            await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return positions

    async def main() -> list[int]:
        return await loop_connection.run(append)

    positions = anyio.run(main)
    loop_connection.close()
    assert attempts == [False, True]  # the retry looked for its command id first
    assert len(positions) == 2 and count_rows(database_url, schema, save.command_id) == 2


def test_a_lost_connection_is_replaced_and_the_commands_after_it_commit(
    engine: Engine, database_url: str
) -> None:
    cid = engine.start_conversation("chat")
    aengine = open_async_engine(engine)
    recorder = store_of(engine).recorder

    async def main() -> None:
        await aengine.add_message(cid, "user", "first")  # in the loop, on its connection
        held = recorder._loop_appender._held  # type: ignore[attr-defined]
        assert held is not None and held.conn is not None
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (held.conn.info.backend_pid,))
        await aengine.add_message(cid, "user", "second")

    anyio.run(main)
    assert aengine.coalesced == 2
    assert [m.content for m in engine.get_conversation(cid).messages] == ["first", "second"]


def test_each_event_loop_appends_on_a_connection_of_its_own(engine: Engine) -> None:
    cid = engine.start_conversation("chat")
    aengine = open_async_engine(engine)
    recorder = store_of(engine).recorder
    seen: list[object] = []

    async def one(text: str) -> None:
        await aengine.add_message(cid, "user", text)
        seen.append(recorder._loop_appender._held.conn)  # type: ignore[attr-defined]

    anyio.run(one, "on one loop")
    first = seen[0]
    anyio.run(one, "on the next")
    assert seen[1] is not first and first.closed  # type: ignore[attr-defined]
    assert [m.content for m in engine.get_conversation(cid).messages] == [
        "on one loop",
        "on the next",
    ]


def test_a_database_that_is_not_there_fails_the_call_once_the_connect_timeout_passed(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    datastore = store_of(engine).recorder.datastore
    loop_connection = LoopConnection(datastore)
    kwargs = dict(datastore.pool.kwargs or {})
    monkeypatch.setattr(datastore.pool, "kwargs", {**kwargs, "port": _closed_port()})
    calls: list[bool] = []

    async def work(conn: psycopg.AsyncConnection, again: bool) -> None:
        calls.append(again)

    async def main() -> None:
        await loop_connection.run(work)

    with pytest.raises(OperationalError):
        anyio.run(main)
    assert calls == []  # never connected, so nothing ran


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again at once: connections are refused


def test_the_copy_check_probes_each_stream_by_its_key_however_long_the_log(
    engine: Engine, database_url: str, schema: str
) -> None:
    """Conversations with many events each made the planner hash the whole events table for
    every read of many streams after given versions (two serving processes make one per
    batch of messages); each stream is probed through the primary key instead."""
    recorder = store_of(engine).recorder
    streams = [uuid4() for _ in range(40)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {schema}.voxledger_events "
            "(originator_id, originator_version, topic, state) "
            "SELECT s.id, v, 'voxledger:test.Event', '\\x80'::bytea "
            "FROM unnest(%s::uuid[]) AS s(id), generate_series(1, 1000) AS v",
            (streams,),
        )
        conn.execute(f"ANALYZE {schema}.voxledger_events")
        plan = conn.execute(
            "EXPLAIN " + recorder._select_behind,  # type: ignore[attr-defined]
            (streams[:30], [998] * 30),
        ).fetchall()
    assert not any("Seq Scan" in line for (line,) in plan), plan

    asked = [(streams[0], 998), (streams[1], 1000), (streams[2], 999), (uuid4(), 0)]

    async def main() -> set[tuple[object, int]]:
        return await recorder.select_behind_async(asked)

    behind = anyio.run(main)
    recorder._loop_reader.close()  # type: ignore[attr-defined]
    assert behind == {(streams[0], 998), (streams[2], 999)}
