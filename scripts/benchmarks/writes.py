"""Writes: one writer with a commit per command, and 64 conversations at once through the
async front (group commit), each next to raw psycopg and the library's defaults."""

from __future__ import annotations

import threading
import time
import uuid

import anyio
import msgspec
from psycopg import sql

from ...adapters.bootstrap import open_async_engine
from ...domain.conversation import Conversation
from .harness import NOW, Bench, Result, library_default_application


def single_writer(bench: Bench) -> Result:
    """Durable appends from one writer: Engine commands vs raw single-row commits."""
    n = bench.setting.single_commands
    payload = msgspec.msgpack.encode({"content": "x" * 80, "role": "user"})

    def ours() -> dict[str, float]:
        cid = bench.engine.start_conversation("bench")
        started = time.perf_counter()
        for i in range(n):
            bench.engine.add_message(cid, "user", f"message {i}")
        return {"commands_per_s": n / (time.perf_counter() - started)}

    def raw() -> dict[str, float]:
        stream = uuid.uuid4()
        statement = sql.SQL(
            "INSERT INTO {}.raw_events (stream, version, topic, state) VALUES (%s, %s, %s, %s)"
        ).format(sql.Identifier(bench.schema))
        with bench.connect() as conn:
            started = time.perf_counter()
            for i in range(n):
                conn.execute(statement, (stream, i, "t", payload), prepare=True)
            return {"commits_per_s": n / (time.perf_counter() - started)}

    mine, reference = bench.repeat(ours), bench.repeat(raw)
    ratio = mine["commands_per_s"].median / reference["commits_per_s"].median
    return Result(
        "single writer",
        "commands/s",
        mine,
        {"raw psycopg single-row commits": reference["commits_per_s"]},
        {"ours / raw": ratio},
        ">= 0.5x raw psycopg",
        ratio >= 0.5,
    )


def concurrent(bench: Bench) -> Result:
    """64 conversations at once through the AsyncEngine (group commit) vs raw psycopg
    with 8 connections, one row per transaction, and vs the library's defaults."""
    conversations = bench.setting.concurrent_conversations
    each = bench.setting.concurrent_commands_each
    total = conversations * each
    payload = msgspec.msgpack.encode({"content": "x" * 80, "role": "user"})

    def ours() -> dict[str, float]:
        ids = [bench.engine.start_conversation("bench") for _ in range(conversations)]
        engine = open_async_engine(bench.engine, max_threads=conversations)
        batches_before = bench.engine.store.commits

        async def talk(cid: uuid.UUID) -> None:
            for i in range(each):
                await engine.add_message(cid, "user", f"message {i}")

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                for cid in ids:
                    tg.start_soon(talk, cid)

        started = time.perf_counter()
        anyio.run(main)
        elapsed = time.perf_counter() - started
        batches = bench.engine.store.commits - batches_before
        return {"commands_per_s": total / elapsed, "commands_per_commit": total / batches}

    def raw() -> dict[str, float]:
        statement = sql.SQL(
            "INSERT INTO {}.raw_events (stream, version, topic, state) VALUES (%s, %s, %s, %s)"
        ).format(sql.Identifier(bench.schema))

        def writer(streams: list[uuid.UUID]) -> None:
            with bench.connect() as conn:
                for i in range(each):
                    for stream in streams:
                        conn.execute(statement, (stream, i, "t", payload), prepare=True)

        streams = [uuid.uuid4() for _ in range(conversations)]
        threads = [threading.Thread(target=writer, args=(streams[k::8],)) for k in range(8)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return {"commits_per_s": total / (time.perf_counter() - started)}

    def library() -> dict[str, float]:
        app = library_default_application(bench.url, bench.schema)
        try:
            ids = []
            for _ in range(conversations):
                c = Conversation.start("bench", at=NOW)
                app.save(c)
                ids.append(c.id)

            def writer(streams: list[uuid.UUID]) -> None:
                for i in range(each):
                    for stream in streams:
                        c = app.repository.get(stream)
                        c.add_message(uuid.uuid4().hex, "user", f"message {i}", at=NOW)
                        app.save(c)

            threads = [threading.Thread(target=writer, args=(ids[k::8],)) for k in range(8)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return {"commands_per_s": total / (time.perf_counter() - started)}
        finally:
            app.close()

    mine, reference, lib = bench.repeat(ours), bench.repeat(raw), bench.repeat(library)
    vs_raw = mine["commands_per_s"].median / reference["commits_per_s"].median
    vs_lib = mine["commands_per_s"].median / lib["commands_per_s"].median
    return Result(
        f"{conversations} concurrent conversations",
        "commands/s",
        mine,
        {
            "raw psycopg, 8 connections, single-row commits": reference["commits_per_s"],
            "eventsourcing defaults, 8 threads (get + save)": lib["commands_per_s"],
        },
        {"ours / raw": vs_raw, "ours / library default": vs_lib},
        ">= 1.0x raw psycopg (8 connections) and >= 5x the library's default",
        vs_raw >= 1.0 and vs_lib >= 5,
    )
