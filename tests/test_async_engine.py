"""The AsyncEngine: one conversation's commands in order, many conversations at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import UUID

import anyio
import psycopg
import pytest

from voxledger.adapters.async_engine import AsyncEngine
from voxledger.adapters.bootstrap import open_async_engine, open_engine
from voxledger.domain.engine import Engine
from voxledger.domain.errors import FlowExpired, InvalidTransition, ValidationFailed
from voxledger.domain.exchange import Exchange, Inbound
from voxledger.domain.flow import FlowStatus


def commands_in_threads(aengine: AsyncEngine) -> list[str]:
    """The names of the commands ``aengine`` runs in a thread from now on (not in the loop
    on a copy in memory), in order."""
    in_thread: list[str] = []
    run_in_thread = aengine._in_thread

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        in_thread.append(fn.__name__)
        return await run_in_thread(fn, *args, **kwargs)

    aengine._in_thread = counted  # type: ignore[method-assign]
    return in_thread


def said(message_id: str, text: str) -> Inbound:
    return Inbound(message_id=message_id, text=text, channel="telegram", reply_to=message_id)


def echo(ex: Exchange) -> None:
    ex.reply(f"you said {ex.inbound.text}")


def test_two_hundred_concurrent_commands_on_one_conversation_all_commit_in_order(
    engine: Engine,
) -> None:
    cid = engine.start_conversation("voice")
    aengine = open_async_engine(engine)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(lambda i=i: aengine.add_message(cid, "user", f"m{i}"))

    anyio.run(main)
    state = engine.get_conversation(cid)
    assert [m.content for m in state.messages] == [f"m{i}" for i in range(200)]
    assert state.version == 201
    assert not aengine._turns  # nothing kept for idle conversations


def test_commands_to_different_conversations_share_commits(engine: Engine) -> None:
    ids = [engine.start_conversation("voice") for _ in range(8)]
    aengine = open_async_engine(engine, max_threads=8)
    commits_before = engine.store.commits

    async def talk(cid) -> None:
        for i in range(10):
            await aengine.add_message(cid, "user", f"{i}")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for cid in ids:
                tg.start_soon(talk, cid)

    anyio.run(main)
    # 80 commands, each its own atomic save, in far fewer transactions.
    assert aengine.coalesced == 80
    assert engine.store.commits - commits_before <= 20
    for cid in ids:
        state = engine.get_conversation(cid)
        assert [m.content for m in state.messages] == [str(i) for i in range(10)]
        assert state.version == 11


def test_a_command_that_lost_a_race_in_a_shared_commit_fails_alone_and_is_retried(
    engine: Engine, database_url: str, schema: str
) -> None:
    ids = [engine.start_conversation("voice") for _ in range(4)]
    aengine = open_async_engine(engine)
    # Another process appends to the first conversation: this process's copy is stale, so
    # that command's save conflicts inside a commit shared with the three others.
    with open_engine(database_url, schema=schema) as other:
        other.add_message(ids[0], "user", "from elsewhere")
    commits_before = engine.store.commits

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for cid in ids:
                tg.start_soon(aengine.add_message, cid, "user", "hello")

    anyio.run(main)
    assert [m.content for m in engine.get_conversation(ids[0]).messages] == [
        "from elsewhere",
        "hello",
    ]
    for cid in ids[1:]:
        assert [m.content for m in engine.get_conversation(cid).messages] == ["hello"]
    assert aengine.coalesced == 3  # the fourth ran again, alone, from a fresh read
    assert engine.store.commits - commits_before >= 2


def test_saves_that_lost_their_race_are_found_by_one_read_and_the_rest_commit_together(
    engine: Engine, database_url: str, schema: str
) -> None:
    ids = [engine.start_conversation("voice") for _ in range(16)]
    aengine = open_async_engine(engine)
    with open_engine(database_url, schema=schema) as other:  # half the copies go stale
        for cid in ids[::2]:
            other.add_message(cid, "user", "from elsewhere")
    transactions: list[int] = []
    group = engine.store._group_commit
    write = group._write
    group._write = lambda events: transactions.append(len(events)) or write(events)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for cid in ids:
                tg.start_soon(aengine.add_message, cid, "user", "hello")

    anyio.run(main)
    for k, cid in enumerate(ids):
        expected = ["from elsewhere", "hello"] if k % 2 == 0 else ["hello"]
        assert [m.content for m in engine.get_conversation(cid).messages] == expected
    # Not a transaction per save to find the losers (that was 1 + 16, and 8 more for their
    # retries): the shared try, the eight winners again together, the losers' retries.
    assert len(transactions) < 16


def test_an_expiry_found_by_a_command_is_recorded_though_the_command_is_refused(
    engine: Engine,
) -> None:
    t0 = datetime(2026, 11, 21, 14, 0, tzinfo=UTC)
    cid = engine.start_conversation("chat", at=t0)
    reply = engine.start_flow(cid, "intake", "design", at=t0)
    aengine = open_async_engine(engine)

    async def late_answer() -> None:
        await aengine.answer(reply.flow_id, "1042", at=t0 + timedelta(minutes=10))

    with pytest.raises(FlowExpired):
        anyio.run(late_answer)
    assert engine.get_flow(reply.flow_id).status is FlowStatus.EXPIRED
    assert engine.get_conversation(cid).active_flow_id is None


def test_cancelled_callers_leave_no_command_half_done_and_nothing_stuck(engine: Engine) -> None:
    ids = [engine.start_conversation("voice") for _ in range(16)]
    aengine = open_async_engine(engine)

    async def talk(cid) -> None:
        for i in range(50):
            await aengine.add_message(cid, "user", f"{i}")

    async def main() -> None:
        with anyio.move_on_after(0.05):
            async with anyio.create_task_group() as tg:
                for cid in ids:
                    tg.start_soon(talk, cid)
        # Whatever was cut off, the engine still commits and every log is whole.
        async with anyio.create_task_group() as tg:
            for cid in ids:
                tg.start_soon(aengine.add_message, cid, "user", "after")

    anyio.run(main)
    for cid in ids:
        contents = [m.content for m in engine.get_conversation(cid).messages]
        assert contents[-1] == "after"
        assert contents[:-1] == [str(i) for i in range(len(contents) - 1)]
    assert not aengine._turns and not aengine._commits._queue


def test_an_error_reaches_the_caller_of_its_own_command_only(engine: Engine) -> None:
    cid = engine.start_conversation("voice")
    aengine = open_async_engine(engine)
    results: dict[str, object] = {}

    async def attempt(name, coro) -> None:
        try:
            results[name] = await coro
        except Exception as e:
            results[name] = e

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(attempt, "bad", aengine.start_response(cid))
            tg.start_soon(attempt, "good", aengine.add_message(cid, "user", "hi"))

    anyio.run(main)
    assert type(results["bad"]).__name__ == "InvalidTransition"
    assert isinstance(results["good"], str)


def copy_checks(engine: Engine) -> list[int]:
    """The sizes of the reads that ask the log whether copies are behind it, from now on."""
    reads: list[int] = []
    behind = engine.store.behind_async

    async def counted(streams: list) -> list[bool]:
        reads.append(len(streams))
        return await behind(streams)

    engine.store.behind_async = counted  # in the loop, on its own connection
    return reads


def test_with_other_writers_a_stale_copy_loses_its_race_and_the_rest_commit_unread(
    engine: Engine, database_url: str, schema: str
) -> None:
    """One of several serving processes (``shared``): a command that records events on its
    copies needs no read first. One on a copy another process wrote past is refused by the
    commit and runs again from a fresh read; the others share a commit."""
    ids = [engine.start_conversation("voice") for _ in range(8)]
    for cid in ids:
        engine.add_message(cid, "user", "first")  # in this process's memory now
    reads = copy_checks(engine)
    aengine = AsyncEngine(engine, engine.store, shared=True)
    in_thread = commands_in_threads(aengine)
    with open_engine(database_url, schema=schema) as other:  # half the copies go stale
        for cid in ids[::2]:
            other.add_message(cid, "user", "from elsewhere")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for cid in ids:
                tg.start_soon(aengine.add_message, cid, "user", "hello")

    anyio.run(main)
    for k, cid in enumerate(ids):
        said = ["first", "from elsewhere", "hello"] if k % 2 == 0 else ["first", "hello"]
        assert [m.content for m in engine.get_conversation(cid).messages] == said
    assert aengine.coalesced == 4 and in_thread == ["add_message"] * 4
    assert reads == []


def test_with_other_writers_a_refusal_on_a_stale_copy_is_decided_again_on_a_fresh_read(
    engine: Engine, database_url: str, schema: str
) -> None:
    """A command that records nothing does so on the log's word, not on a copy's: a
    streamed message another process began can be completed here, though this copy has not
    seen it; a refusal on a current copy stays in the loop after one read."""
    cid = engine.start_conversation("voice")
    engine.add_message(cid, "user", "first")  # in this process's memory now
    reads = copy_checks(engine)
    aengine = AsyncEngine(engine, engine.store, shared=True)
    in_thread = commands_in_threads(aengine)
    with open_engine(database_url, schema=schema) as other:
        other.add_message(cid, "assistant", "stream", message_id="m2", complete=False)

    anyio.run(aengine.complete_message, cid, "m2", "streamed")
    assert (reads, in_thread) == ([1], ["complete_message"])
    assert [m.content for m in engine.get_conversation(cid).messages] == ["first", "streamed"]

    with pytest.raises(InvalidTransition):  # its copy is current now: refused in the loop
        anyio.run(aengine.complete_message, cid, "m2", "again")
    assert (reads, in_thread) == ([1, 1], ["complete_message"])


def test_with_other_writers_a_failed_check_leaves_the_command_to_a_fresh_read(
    engine: Engine,
) -> None:
    cid = engine.start_conversation("voice")
    engine.add_message(cid, "user", "first")

    async def broken(_: object) -> list[bool]:
        raise RuntimeError("the read failed")

    engine.store.behind_async = broken
    aengine = AsyncEngine(engine, engine.store, shared=True)
    in_thread = commands_in_threads(aengine)
    add = partial(aengine.add_message, cid, "user", "second", message_id="m1")
    assert anyio.run(add) == "m1" and in_thread == []  # recorded: no check needed
    with pytest.raises(ValidationFailed):  # a message seen before: decided on a fresh read
        anyio.run(add)
    assert in_thread == ["add_message"]
    assert [m.content for m in engine.get_conversation(cid).messages] == ["first", "second"]


def test_after_a_pause_lapsed_keys_are_read_once_and_the_commands_stay_in_the_loop(
    engine: Engine,
) -> None:
    """A pause longer than the key cache's margin lets the entries of the streams in use
    lapse. The next commands wait for one read that renews them all, instead of each leaving
    the loop for a read and a commit of its own (the first 64 requests of a served run
    after 24 s idle took 100-220 ms that way)."""
    keys = engine.store.keys  # type: ignore[attr-defined]
    now = [1000.0]
    keys.clock = lambda: now[0]  # the key ring's own clock, moved by hand
    ids = [engine.start_conversation("voice") for _ in range(8)]
    aengine = open_async_engine(engine)
    reads: list[set[UUID]] = []
    read_again = keys.read_again
    keys.read_again = lambda due: reads.append(set(due)) or read_again(due)

    async def say(text: str) -> None:
        async with anyio.create_task_group() as tg:
            for cid in ids:
                tg.start_soon(aengine.add_message, cid, "user", text)

    anyio.run(say, "before")
    assert aengine.coalesced == 8
    now[0] += keys.ttl_s * 2  # the pause: every entry has lapsed
    assert not any(keys.known_not_erased(cid) for cid in ids)
    anyio.run(say, "after")
    assert aengine.coalesced == 16  # none ran in a thread
    assert len(reads) == 1 and reads[0] >= set(ids)
    for cid in ids:
        assert [m.content for m in engine.get_conversation(cid).messages] == ["before", "after"]


def test_a_command_that_records_nothing_leaves_the_conversation_in_memory(
    engine: Engine,
) -> None:
    """A message seen before (its first reply again, nothing recorded) and a refused
    command keep the copy in memory: the next command still runs in the loop. (They
    dropped it, and every resent update of a served chat read its conversation afresh in a
    thread.)"""
    cid = engine.start_conversation("telegram")
    aengine = open_async_engine(engine)
    in_thread = commands_in_threads(aengine)

    async def main() -> None:
        await aengine.exchange(cid, said("1", "hello"), echo)
        again = await aengine.exchange(cid, said("1", "hello"), echo)
        assert again.duplicate and again.text == "you said hello"
        with pytest.raises(ValidationFailed):  # a message id recorded already: refused
            await aengine.add_message(cid, "user", "again", message_id="1")
        await aengine.exchange(cid, said("2", "bye"), echo)

    anyio.run(main)
    assert in_thread == []  # every command ran on the copy in memory
    assert aengine.coalesced == 2  # two commits: the duplicate and the refusal made none
    contents = [m.content for m in engine.get_conversation(cid).messages]
    assert contents == ["hello", "you said hello", "bye", "you said bye"]


def test_a_second_shared_commit_goes_out_while_the_first_waits_and_the_log_stays_gapless(
    engine: Engine, database_url: str
) -> None:
    """Two commits in flight: while one waits for the database, the next batch is sent on
    the loop's second connection; they commit one at a time, in the append's lock, and the
    log's positions stay in commit order with no gap."""
    ids = [engine.start_conversation("voice") for _ in range(120)]
    aengine = open_async_engine(engine)
    recorder: Any = engine.store.recorder
    table = f"{recorder.datastore.schema}.{recorder.events_table_name}"
    key = "hashtext('voxledger append'), hashtext(%s)"
    waiting_sql = (
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND objsubid = 2 AND classid::bigint = hashtext('voxledger append')::bigint"
        " & 4294967295 AND objid::bigint = hashtext(%s)::bigint & 4294967295"
    )
    seen: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute(f"SELECT pg_advisory_lock({key})", [table])

        def waiting() -> int:
            with psycopg.connect(database_url, autocommit=True) as watcher:
                row = watcher.execute(waiting_sql, [table]).fetchone()
                return int(row[0]) if row else -1

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                for cid in ids:
                    tg.start_soon(partial(aengine.add_message, cid, "user", "hi"))
                for _ in range(250):
                    if await anyio.to_thread.run_sync(waiting) >= 2:
                        break
                    await anyio.sleep(0.02)
                await anyio.sleep(0.2)  # time for a third, which must not come
                seen.append(await anyio.to_thread.run_sync(waiting))
                await anyio.to_thread.run_sync(
                    partial(holder.execute, f"SELECT pg_advisory_unlock({key})", [table])
                )

        anyio.run(main)
    assert seen == [2]  # two commits sent, each on a connection of its own
    assert aengine.coalesced == 120
    for cid in ids:
        assert [m.content for m in engine.get_conversation(cid).messages] == ["hi"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        positions = [
            row[0]
            for row in conn.execute(
                f"SELECT notification_id FROM {table} ORDER BY notification_id"
            ).fetchall()
        ]
    assert positions == list(range(positions[0], positions[0] + len(positions)))
