"""`Batched`: the blocking calls that the chat directory, the catch-up and the shared commits
make for the coroutines that come together."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Awaitable, Callable

import anyio
import pytest

from voxledger.adapters.batched import Batched


class Recorded:
    """A blocking many-keys call that records each call's keys; ``gate`` holds the calls."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, keys: list[int]) -> list[int | BaseException]:
        self.calls.append(list(keys))
        self.entered.set()
        assert self.gate.wait(10)
        return [ValueError(f"no {k}") if k < 0 else k * 10 for k in keys]


def asking(batched: Batched[int, int]) -> tuple[dict[int, int], Callable[[int], Awaitable[None]]]:
    """The answers heard, and a caller that asks for one key and notes its answer."""
    answers: dict[int, int] = {}

    async def ask(k: int) -> None:
        answers[k] = await batched(k)

    return answers, ask


def test_callers_that_come_together_share_one_call_and_each_hears_its_own_answer() -> None:
    call = Recorded()
    batched: Batched[int, int] = Batched(call)
    answers, ask = asking(batched)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for k in range(20):
                tg.start_soon(ask, k)

    anyio.run(main)
    assert answers == {k: k * 10 for k in range(20)}
    assert call.calls == [list(range(20))]
    assert batched.calls == 1


def test_a_caller_that_comes_during_a_call_is_answered_by_a_call_made_after_it_came() -> None:
    call = Recorded()
    batched: Batched[int, int] = Batched(call)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            call.gate.clear()
            tg.start_soon(batched, 1)
            await anyio.to_thread.run_sync(call.entered.wait, 10)  # the first call is out
            tg.start_soon(batched, 2)
            tg.start_soon(batched, 3)
            await anyio.sleep(0.05)
            assert call.calls == [[1]]  # one call at a time: 2 and 3 wait for the next
            call.gate.set()

    anyio.run(main)
    assert call.calls == [[1], [2, 3]]


def test_a_failed_call_reaches_every_caller_in_it_and_the_next_call_is_made() -> None:
    failing = {"on": True}

    def call(keys: list[int]) -> list[int]:
        if failing["on"]:
            raise ConnectionError("the database went away")
        return keys

    batched: Batched[int, int] = Batched(call)
    errors: list[str] = []

    async def ask(k: int) -> None:
        try:
            await batched(k)
        except ConnectionError as error:
            errors.append(str(error))

    async def main() -> int:
        async with anyio.create_task_group() as tg:
            for k in range(3):
                tg.start_soon(ask, k)
        failing["on"] = False
        return await batched(7)

    assert anyio.run(main) == 7
    assert errors == ["the database went away"] * 3


def test_an_answer_that_is_an_exception_is_raised_to_its_own_caller_only() -> None:
    batched: Batched[int, int] = Batched(Recorded())
    results: dict[int, object] = {}

    async def ask(k: int) -> None:
        try:
            results[k] = await batched(k)
        except ValueError as error:
            results[k] = str(error)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for k in (1, -2, 3):
                tg.start_soon(ask, k)

    anyio.run(main)
    assert results == {1: 10, -2: "no -2", 3: 30}


def test_a_cancelled_caller_stops_waiting_and_strands_nobody() -> None:
    call = Recorded()
    batched: Batched[int, int] = Batched(call)
    answers, ask = asking(batched)

    async def main() -> None:
        call.gate.clear()
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, 1)
            await anyio.to_thread.run_sync(call.entered.wait, 10)
            with anyio.move_on_after(0.05):  # 2 is cancelled while the call for 1 runs
                await batched(2)
            tg.start_soon(ask, 3)
            await anyio.sleep(0.01)
            call.gate.set()
        assert await batched(4) == 40  # the queue drained and stopped; a new caller starts it

    anyio.run(main)
    assert answers == {1: 10, 3: 30}
    assert not batched._queue and batched._draining is None


def test_no_call_holds_more_keys_than_its_limit() -> None:
    call = Recorded()
    batched: Batched[int, int] = Batched(call, max_batch=4)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for k in range(10):
                tg.start_soon(batched, k)

    anyio.run(main)
    assert call.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_callers_in_another_event_loop_later_are_served_afresh() -> None:
    """An engine outlives one `anyio.run` (the CLI runs several): its queue starts again."""
    batched: Batched[int, int] = Batched(Recorded())
    assert [anyio.run(batched, k) for k in (1, 2)] == [10, 20]


def test_a_call_that_answers_wrongly_fails_its_callers_rather_than_cancelling_them() -> None:
    batched: Batched[int, int] = Batched(lambda keys: [1])  # one answer, whatever is asked

    async def main() -> list[str]:
        failures: list[str] = []

        async def ask(k: int) -> None:
            try:
                await batched(k)
            except RuntimeError as error:
                failures.append(str(error))

        async with anyio.create_task_group() as tg:
            for k in range(3):
                tg.start_soon(ask, k)
        return failures

    assert anyio.run(main) == ["1 answers for 3 keys"] * 3
    assert not batched._queue and batched._draining is None


def test_the_calls_carry_no_callers_bound_values() -> None:
    """The log lines a shared call writes would otherwise name whichever request came first."""
    bound: contextvars.ContextVar[str] = contextvars.ContextVar("bound", default="none")
    seen: list[str] = []

    def call(keys: list[int]) -> list[int]:
        seen.append(bound.get())
        return keys

    batched: Batched[int, int] = Batched(call)

    async def main() -> None:
        bound.set("request 1")
        await batched(1)

    anyio.run(main)
    assert seen == ["none"]


def test_with_two_in_flight_a_caller_that_comes_during_a_call_goes_out_at_once() -> None:
    call = Recorded()
    batched: Batched[int, int] = Batched(call, in_flight=2)
    answers, ask = asking(batched)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            call.gate.clear()
            tg.start_soon(ask, 1)
            await anyio.to_thread.run_sync(call.entered.wait, 10)  # the first call is out
            call.entered.clear()
            tg.start_soon(ask, 2)
            await anyio.to_thread.run_sync(call.entered.wait, 10)  # and the second beside it
            tg.start_soon(ask, 3)
            tg.start_soon(ask, 4)
            await anyio.sleep(0.05)
            assert call.calls == [[1], [2]]  # two under way: 3 and 4 wait for one to end
            call.gate.set()

    anyio.run(main)
    assert call.calls == [[1], [2], [3, 4]]
    assert answers == {k: k * 10 for k in (1, 2, 3, 4)}
    assert not batched._running and batched._draining is None


def test_with_two_in_flight_a_long_queue_goes_out_as_two_halves() -> None:
    call = Recorded()
    batched: Batched[int, int] = Batched(call, in_flight=2)
    answers, ask = asking(batched)

    async def main(n: int) -> None:
        async with anyio.create_task_group() as tg:
            for k in range(n):
                tg.start_soon(ask, k)

    anyio.run(main, 40)
    assert call.calls == [list(range(20)), list(range(20, 40))]
    call.calls.clear()
    anyio.run(main, 15)  # a short one is not worth two round trips
    assert call.calls == [list(range(15))]
    assert answers == {k: k * 10 for k in range(40)}


def test_with_two_in_flight_a_cancelled_drain_answers_every_caller_and_starts_again() -> None:
    """The loop's shutdown cancels the drain with calls under way: their callers and the
    queued ones are cancelled, not left waiting, and a new caller is served afresh."""
    entered = anyio.Event()

    async def never(keys: list[int]) -> list[int]:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    batched: Batched[int, int] = Batched(never, in_flight=2)
    cancelled: list[int] = []

    async def ask(k: int) -> None:
        try:
            await batched(k)
        except BaseException:
            cancelled.append(k)
            raise

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for k in range(3):
                tg.start_soon(ask, k)
            await entered.wait()
            await anyio.sleep(0.01)
            assert batched._draining is not None
            batched._draining.cancel()
            await anyio.sleep(0.01)
        assert sorted(cancelled) == [0, 1, 2]
        assert not batched._queue and not batched._running and batched._draining is None
        batched._call_many = lambda keys: [k * 10 for k in keys]
        batched._in_loop = False
        assert await batched(5) == 50

    anyio.run(main)


def test_in_flight_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Batched(Recorded(), in_flight=0)
