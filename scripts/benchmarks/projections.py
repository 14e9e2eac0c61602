"""Projections: catching up over a log of many conversations next to a raw batched loop,
and the live lag from a commit to every projection while a writer appends steadily."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import msgspec
from psycopg import sql
from psycopg.rows import tuple_row

from ...adapters.bootstrap import environment_for, open_runner
from ...projections.runner import PAGE_SIZE
from . import steady_writer
from .harness import Bench, Figure, Result, build_long_conversation


def projection(bench: Bench) -> Result:
    """Catch-up of all three projections over a log of many conversations vs a raw
    batched upsert loop, and live lag while events arrive at a steady rate."""
    conversations, each = bench.setting.projection_conversations, 200
    store = bench.engine.store
    for _ in range(conversations):
        build_long_conversation(store.save, each)
    total = conversations * each
    schema = sql.Identifier(bench.schema)

    def ours() -> dict[str, float]:
        with open_runner(store) as runner:
            runner.setup()
            with bench.connect() as conn:
                for p in runner.projections.values():
                    for table in runner.tables(p).values():
                        conn.execute(sql.SQL("TRUNCATE {}").format(table))
                conn.execute(
                    sql.SQL("UPDATE {}.voxledger_tracking SET position = 0").format(schema)
                )
            started = time.perf_counter()
            runner.catch_up()
            return {"catch_up_events_per_s": total / (time.perf_counter() - started)}

    def raw() -> dict[str, float]:
        with bench.connect() as conn:
            conn.execute(
                sql.SQL(
                    "DROP TABLE IF EXISTS {0}.raw_counts, {0}.raw_trail, {0}.raw_position; "
                    "CREATE TABLE {0}.raw_counts (stream uuid PRIMARY KEY, events int, "
                    "last_topic text); CREATE TABLE {0}.raw_position (position bigint); "
                    "CREATE TABLE {0}.raw_trail (position bigint PRIMARY KEY, stream uuid, "
                    "version bigint, topic text); INSERT INTO {0}.raw_position VALUES (0)"
                ).format(schema)
            )
            # Pages as large as the runner's: neither side batches more than the other.
            read = sql.SQL(
                "SELECT notification_id, originator_id, originator_version, topic "
                "FROM {}.voxledger_events WHERE notification_id > %s "
                "ORDER BY notification_id LIMIT %s"
            ).format(schema)
            trail = sql.SQL(
                "INSERT INTO {}.raw_trail SELECT * FROM "
                "unnest(%s::bigint[], %s::uuid[], %s::bigint[], %s::text[])"
            ).format(schema)
            upsert = sql.SQL(
                "INSERT INTO {0}.raw_counts AS t SELECT s, n, l FROM "
                "unnest(%s::uuid[], %s::int[], %s::text[]) AS u(s, n, l) "
                "ON CONFLICT (stream) DO UPDATE SET events = t.events + excluded.events, "
                "last_topic = excluded.last_topic"
            ).format(schema)
            advance = sql.SQL("UPDATE {}.raw_position SET position = %s").format(schema)
            position, started = 0, time.perf_counter()
            with conn.cursor(row_factory=tuple_row) as cur:
                while rows := cur.execute(read, (position, PAGE_SIZE), binary=True).fetchall():
                    counts: dict[uuid.UUID, list[Any]] = {}
                    for _, stream, _, topic in rows:
                        counts.setdefault(stream, [0, topic])[0] += 1
                        counts[stream][1] = topic
                    with conn.transaction():
                        cur.execute(
                            trail,
                            [list(column) for column in zip(*rows, strict=True)],
                            binary=True,
                        )
                        cur.execute(
                            upsert,
                            (
                                list(counts),
                                [c[0] for c in counts.values()],
                                [c[1] for c in counts.values()],
                            ),
                            binary=True,
                        )
                        position = rows[-1][0]
                        cur.execute(advance, (position,))
            return {"events_per_s": total / (time.perf_counter() - started)}

    mine, reference = bench.repeat(ours), bench.repeat(raw)
    lag = live_lag(bench)
    ratio = mine["catch_up_events_per_s"].median / reference["events_per_s"].median
    mine.update(lag)
    return Result(
        f"projections over {total:,} events in {conversations:,} conversations",
        "events/s",
        mine,
        {
            "raw batched loop (no decoding): a row per event + per-stream upserts": reference[
                "events_per_s"
            ]
        },
        {"ours / raw": ratio},
        ">= 0.5x the raw loop; live lag p99 < 50 ms at 2,000 events/s",
        ratio >= 0.5 and lag["live_lag_p99_ms"].median < 50,
        notes="lag: a `voxledger project run` process tails the log while a writer "
        "process appends at a steady rate from 4 threads; this one listens for the "
        "runner's announcements of the pages it commits",
    )


def live_lag(bench: Bench, rate: int = 2000, writers: int = 4) -> dict[str, Figure]:
    """Lag from commit to all three projections: a `project run` process tails the log
    while a writer process appends at a steady rate; this process only listens.

    The runner announces each page as its transaction commits (NOTIFY on the projected
    channel); an event's lag runs from its writer's commit returning to the arrival
    here of the first announcement by which every projection has reached it. Writing
    starts once the runner has projected an event written after it started, so that
    its start-up is not counted as lag."""
    seconds = bench.setting.lag_seconds
    env = environment_for(bench.url, bench.schema)
    with open_runner(bench.engine.store) as setup:
        setup.setup()  # the tracking table exists before anyone listens
        names, channel = list(setup.projections), setup.projected_channel
    seen: list[tuple[int, float]] = []  # (position every projection reached, when)
    listening, stop = threading.Event(), threading.Event()

    def listen() -> None:
        with bench.connect() as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            listening.set()
            at = dict.fromkeys(names, 0)
            while not stop.is_set():
                for note in conn.notifies(timeout=0.1):
                    received = time.time()
                    at.update(msgspec.json.decode(note.payload))
                    seen.append((min(at.values()), received))

    def reached() -> int:
        return seen[-1][0] if seen else 0

    listener = threading.Thread(target=listen)
    listener.start()
    runner = subprocess.Popen(
        [sys.executable, "-m", "voxledger.scripts.main", "project", "run", "--poll", "0.5"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        listening.wait(30)
        # Tailing: it has projected an event written after it started (and caught up).
        bench.engine.start_conversation("bench")
        head, deadline = bench.engine.store.head(), time.time() + 60
        while reached() < head and time.time() < deadline:
            time.sleep(0.05)
        out = subprocess.run(
            [sys.executable, "-m", steady_writer.__name__, str(rate), str(writers), str(seconds)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        written = sorted((int(p), float(t)) for p, t in (line.split() for line in out.splitlines()))
        deadline = time.time() + 30
        while reached() < written[-1][0] and time.time() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        listener.join()
        runner.terminate()
        runner.wait(timeout=30)
    lags, k = [], 0
    for position, at in written:
        while k < len(seen) and seen[k][0] < position:
            k += 1
        if k < len(seen):
            lags.append((max(seen[k][1], at) - at) * 1000)
    lags.sort()
    times = sorted(at for _, at in written)
    return {
        "live_lag_p50_ms": Figure.of([lags[len(lags) // 2]]),
        "live_lag_p95_ms": Figure.of([lags[int(len(lags) * 0.95)]]),
        "live_lag_p99_ms": Figure.of([lags[int(len(lags) * 0.99)]]),
        "live_lag_max_ms": Figure.of([lags[-1]]),
        "live_rate_events_per_s": Figure.of([len(times) / (times[-1] - times[0])]),
    }
