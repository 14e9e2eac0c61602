"""The log's order is safe for readers that tail it by position: an append that commits late
can never be overtaken, so a projection never skips it.

A transaction holds an append open (as a slow writer, or one paused by the scheduler,
would); meanwhile other writers append. None of them may commit a position past the one
still in flight, and once everything has committed the projections hold every event once.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from voxledger.adapters.bootstrap import open_runner
from voxledger.domain.conversation import Conversation
from voxledger.domain.engine import Engine


def test_an_append_that_commits_late_is_not_overtaken_and_is_projected(
    engine: Engine, database_url: str, schema: str
) -> None:
    cids = [engine.start_conversation("voice") for _ in range(4)]
    store = engine.store
    with open_runner(store) as runner:
        runner.setup()
        runner.catch_up()
        head_before = store.head()
        late_stream = uuid.uuid4()
        append = sql.SQL(
            "SELECT * FROM {}.voxledger_events_append("
            "%s, %s::bigint[], %s::text[], %s, %s, %s::uuid[], %s::bytea[], false)"
        ).format(sql.Identifier(schema))
        with psycopg.connect(database_url) as slow:  # a transaction, left open for now
            late = slow.execute(
                append,
                (
                    [late_stream],
                    [1],
                    ["voxledger:Conversation.Started"],
                    [_started_state(store, late_stream)],
                    [uuid.uuid4()],  # the command's id
                    [],  # no data key to write with it
                    [],
                ),
            ).fetchone()[0]
            done = threading.Event()

            def others() -> None:
                for i in range(5):
                    for cid in cids:
                        engine.add_message(cid, "user", f"m{i}")
                done.set()

            writer = threading.Thread(target=others)
            writer.start()
            assert not done.wait(0.5)  # they wait for the late one instead of passing it
            with psycopg.connect(database_url, autocommit=True) as reader:
                committed = reader.execute(
                    sql.SQL("SELECT max(notification_id) FROM {}.voxledger_events").format(
                        sql.Identifier(schema)
                    )
                ).fetchone()[0]
            assert committed == head_before < late
            runner.catch_up()  # a projection that reads now sees nothing past the gap
            slow.commit()
        writer.join(60)
        assert done.is_set()
        runner.catch_up()
        head = store.head()
        assert head == late + 20
        with psycopg.connect(database_url, autocommit=True) as reader:
            trail = reader.execute(
                sql.SQL("SELECT position FROM {}.audit_trail ORDER BY position").format(
                    sql.Identifier(schema)
                )
            ).fetchall()
        assert [p for (p,) in trail] == list(range(1, head + 1))  # every event, once


def test_a_vacuum_of_the_log_does_not_hold_its_appends_up(
    engine: Engine, database_url: str, schema: str
) -> None:
    """Autovacuum visits the log as it grows (after every fifth of its rows inserted) and
    holds a SHARE UPDATE EXCLUSIVE lock while it runs. A table lock that orders appends
    would wait for it, and PostgreSQL would cancel the vacuum only a second later: every
    append of the deployment stalled for that second (`voxledger bench --http`, p99 1 s),
    and the vacuum never finished. The appends' own lock lets it run beside them."""
    cid = engine.start_conversation("voice")
    with psycopg.connect(database_url) as vacuum:  # holds what a running vacuum holds
        vacuum.execute(
            sql.SQL("LOCK TABLE {}.voxledger_events IN SHARE UPDATE EXCLUSIVE MODE").format(
                sql.Identifier(schema)
            )
        )
        done = threading.Event()

        def append() -> None:
            for i in range(3):
                engine.add_message(cid, "user", f"m{i}")
            done.set()

        writer = threading.Thread(target=append, daemon=True)
        writer.start()
        assert done.wait(30)  # the old table lock waited here until the vacuum ended
        vacuum.rollback()
    assert [m.content for m in engine.get_conversation(cid).messages] == ["m0", "m1", "m2"]


def _started_state(store, conversation_id: uuid.UUID) -> bytes:
    """The stored payload of a real conversation start, for the raw append."""
    started = Conversation.start(
        "voice", at=datetime(2026, 11, 21, 14, 0, tzinfo=UTC), conversation_id=conversation_id
    )
    return store.mapper.to_stored_event(started.collect_events()[0]).state
