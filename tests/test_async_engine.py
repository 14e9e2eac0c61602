"""The AsyncEngine: one conversation's commands in order, many conversations at once."""

from __future__ import annotations

import threading

import anyio

from voxledger.domain.async_engine import AsyncEngine
from voxledger.domain.engine import Engine


def test_two_hundred_concurrent_commands_on_one_conversation_all_commit_in_order(
    engine: Engine,
) -> None:
    cid = engine.start_conversation("voice")
    aengine = AsyncEngine(engine)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(lambda i=i: aengine.add_message(cid, "user", f"m{i}"))

    anyio.run(main)
    state = engine.get_conversation(cid)
    assert [m.content for m in state.messages] == [f"m{i}" for i in range(200)]
    assert state.version == 201
    assert not aengine._locks  # nothing kept for idle conversations


def test_commands_to_different_conversations_run_at_the_same_time(engine: Engine) -> None:
    ids = [engine.start_conversation("voice") for _ in range(8)]
    aengine = AsyncEngine(engine, max_threads=8)
    running, peak, lock = [0], [0], threading.Lock()
    original = engine.add_message

    def tracked(*args, **kwargs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    engine.add_message = tracked  # counts overlapping calls; the store stays real

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for cid in ids:
                for i in range(10):
                    tg.start_soon(lambda cid=cid, i=i: aengine.add_message(cid, "user", f"{i}"))

    anyio.run(main)
    assert peak[0] > 1
    for cid in ids:
        assert [m.content for m in engine.get_conversation(cid).messages] == [
            str(i) for i in range(10)
        ]


def test_an_error_reaches_the_caller_of_its_own_command_only(engine: Engine) -> None:
    cid = engine.start_conversation("voice")
    aengine = AsyncEngine(engine)
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
