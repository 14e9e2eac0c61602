"""Replay: folding a 10,000-event conversation from its events, and loading it with
snapshots, next to the library's repository and a raw fetch, decode and fold."""

from __future__ import annotations

import statistics
import time
from typing import Any

import msgspec
from psycopg import sql
from psycopg.rows import tuple_row

from ...adapters.store.event_store import fold
from .harness import Bench, Result, build_long_conversation, library_default_application


def replay(bench: Bench) -> Result:
    """A 10,000-event conversation: our replay without snapshots, our load with
    snapshots, the library's default repository.get, and raw fetch+decode+fold."""
    n = bench.setting.replay_events
    ours_id = build_long_conversation(bench.engine.store.save, n)
    bench.engine.store.flush_snapshots()
    app = library_default_application(bench.url, bench.schema)
    library_id = build_long_conversation(app.save, n)
    store = bench.engine.store
    table = sql.SQL("{}.voxledger_events").format(sql.Identifier(bench.schema))

    def ours() -> dict[str, float]:
        started = time.perf_counter()
        conversation = fold(None, store.stream(ours_id))
        no_snapshots = time.perf_counter() - started
        assert conversation is not None and conversation.version == n
        loads = []  # one load is a millisecond: the median of several says more
        for _ in range(9):
            store.forget_cached()
            started = time.perf_counter()
            store.load(ours_id)
            loads.append(time.perf_counter() - started)
        return {
            "replay_events_per_s": n / no_snapshots,
            "load_with_snapshots_ms": statistics.median(loads) * 1000,
        }

    def library() -> dict[str, float]:
        started = time.perf_counter()
        app.repository.get(library_id)
        return {"events_per_s": n / (time.perf_counter() - started)}

    def raw() -> dict[str, float]:
        decode = msgspec.msgpack.Decoder().decode
        statement = sql.SQL(
            "SELECT originator_version, topic, state FROM {} WHERE originator_id = %s "
            "ORDER BY originator_version"
        ).format(table)
        with bench.connect() as conn, conn.cursor(row_factory=tuple_row) as cur:
            started = time.perf_counter()
            cur.execute(statement, (ours_id,), binary=True)
            state: dict[str, Any] = {}
            for version, _topic, data in cur.fetchall():
                state.update(decode(data))
                state["version"] = version
            return {"events_per_s": n / (time.perf_counter() - started)}

    try:
        mine, lib, reference = bench.repeat(ours), bench.repeat(library), bench.repeat(raw)
    finally:
        app.close()
    replay = mine["replay_events_per_s"].median
    load_ms = mine["load_with_snapshots_ms"].median
    return Result(
        f"replay of a {n:,}-event conversation",
        "events/s",
        mine,
        {
            "eventsourcing default repository.get": lib["events_per_s"],
            "raw fetch + msgspec decode + fold": reference["events_per_s"],
        },
        {
            "ours / library default": replay / lib["events_per_s"].median,
            "ours / raw": replay / reference["events_per_s"].median,
        },
        ">= 250,000 events/s and >= 4x the library; load with snapshots < 2 ms",
        replay >= 250_000 and replay / lib["events_per_s"].median >= 4 and load_ms < 2,
    )
