"""Blocking calls for many keys at once, shared by the coroutines of the event loop that come
together: the chat directory's reads, the engine's catch-up reads and its shared commits.

A caller hands in its key and waits for its answer. One task drains the queue: it yields
a few turns (the callers ready by then join), calls the blocking function for up to
``max_batch`` keys in a worker thread, answers each caller, and goes on while keys came
meanwhile. Each caller's answer comes from a call that began after it came: a read sees the
database as it is after its caller arrived. Up to ``in_flight`` calls run at once (one
unless asked): with two, the next batch goes out while the last waits for the database.
(One call per caller cost the served webhook a worker thread, a pooled connection and a
round trip each, about a third of its throughput: `voxledger bench --http --profile`.)

The waits are asyncio futures, so this runs on asyncio (uvicorn's loop, and anyio.run's
default backend). anyio's Event and the shielded CancelScope a caller that leads needs were
a sixth of a served message's CPU (`python -m voxledger.scripts.benchmarks.inprocess --route
webhook`: 0.379 -> 0.317 ms, medians of 5). No caller leads here, so none needs a shield: a
caller cancelled while it waits only stops waiting, and the others are answered as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio.to_thread

K = TypeVar("K")
V = TypeVar("V")


# The turns of the event loop a call waits for its callers. A message reaches its first
# read two or three turns after its bytes arrive (the request's task starts, reads its
# body; a message handed over by another worker starts a task of its own), so a call made
# one turn after its first caller met few of them: with two serving workers a read took 7
# callers and a commit 9, against 15 each in two one-worker servers. Three turns: two
# workers 2,605 -> 2,923 updates/s, p99 49 -> 47 ms; one worker 2,159 -> 2,155 (webhook,
# 64 connections, 4 runs of 8 s each, the settings alternating in one run).
GATHER_TURNS = 3


# A queue this long, met with no call under way, goes out as two calls, half each, when
# two may run at once: the second is on its way while the first commits, rather than the
# whole queue waiting for one round trip and the loop idling through it.
SPLIT_FROM = 16


class Batched(Generic[K, V]):
    """``call_many`` (keys in, one answer per key out, in order; an answer that is an
    exception is raised to its caller) as a coroutine for one key, whose concurrent calls
    share a call. A blocking ``call_many`` runs in a worker thread; a coroutine function
    (one that waits for the database on a connection of the loop's) runs in the loop.
    ``in_flight``: the calls that may be under way at once (each on keys of its own)."""

    def __init__(
        self,
        call_many: Callable[[list[K]], Sequence[V | BaseException]]
        | Callable[[list[K]], Awaitable[Sequence[V | BaseException]]],
        *,
        max_batch: int = 256,
        in_flight: int = 1,
    ) -> None:
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        self._call_many = call_many
        self._in_loop = inspect.iscoroutinefunction(call_many)
        self._max_batch = max_batch
        self._in_flight = in_flight
        self._queue: list[tuple[K, asyncio.Future[V]]] = []
        self._draining: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()  # the calls under way
        self._idle: asyncio.Future[None] | None = None  # the drain waits: a key, a call done
        self.calls = 0  # calls made (fewer than callers under load)

    async def __call__(self, key: K) -> V:
        """The answer for ``key``, from a call that began after this one."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[V] = loop.create_future()
        draining = self._draining
        if draining is None or draining.done() or draining.get_loop() is not loop:
            if draining is not None:  # left by a loop that ended without running it out
                self._queue = [(k, a) for k, a in self._queue if a.get_loop() is loop]
                self._running.clear()
                self._idle = None
            # A context of its own: the calls' log lines carry no request's bound values.
            self._draining = loop.create_task(self._drain(), context=contextvars.Context())
        self._queue.append((key, answer))
        self._wake()
        return await answer

    def _wake(self, _: object = None) -> None:
        idle = self._idle
        if idle is not None and not idle.done():
            idle.set_result(None)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        running = self._running
        try:
            while self._queue or running:
                if not self._queue or len(running) >= self._in_flight:
                    self._idle = loop.create_future()  # until a key comes or a call ends
                    await self._idle
                    continue
                for _ in range(GATHER_TURNS):  # the callers ready by then join this call
                    await asyncio.sleep(0)
                if len(running) >= self._in_flight or not self._queue:
                    continue  # the calls' answers came first
                take = self._max_batch
                if self._in_flight > 1 and not running and len(self._queue) >= SPLIT_FROM:
                    take = min(take, (len(self._queue) + 1) // 2)
                batch = self._queue[:take]
                del self._queue[: len(batch)]
                call = loop.create_task(self._answer(batch), context=contextvars.Context())
                running.add(call)
                call.add_done_callback(self._call_done)
        except BaseException as error:
            # Stopped by the loop's shutdown (or a bug here): nobody waits for an answer
            # that cannot come, and a failure is heard as itself, not as a cancellation.
            for call in running:
                call.cancel()  # each answers its own callers
            _fail(error, self._queue)
            self._queue.clear()
            if not isinstance(error, Exception):
                raise  # a failure is its callers' to hear, not the orphaned task's to raise
        finally:
            self._draining = None
            self._idle = None

    def _call_done(self, call: asyncio.Task[None]) -> None:
        self._running.discard(call)
        self._wake()

    async def _answer(self, batch: list[tuple[K, asyncio.Future[V]]]) -> None:
        """Make one call for the batch's keys and answer each of its callers."""
        try:
            outcomes: Sequence[V | BaseException]
            try:
                keys = [key for key, _ in batch]
                if self._in_loop:
                    outcomes = await self._call_many(keys)  # type: ignore[misc]
                else:
                    outcomes = await anyio.to_thread.run_sync(
                        self._call_many,  # type: ignore[arg-type]
                        keys,
                    )
            except Exception as error:  # the call failed: each caller in it hears why
                outcomes = [error] * len(batch)
            if len(outcomes) != len(batch):  # a bug in the call: nobody gets another's
                wrong = RuntimeError(f"{len(outcomes)} answers for {len(batch)} keys")
                outcomes = [wrong] * len(batch)
            self.calls += 1
            for (_, answer), outcome in zip(batch, outcomes, strict=True):
                if answer.done():
                    continue  # its caller went away
                if isinstance(outcome, BaseException):
                    answer.set_exception(outcome)
                else:
                    answer.set_result(outcome)
        except BaseException as error:  # cancelled by the loop's shutdown (or a bug here)
            _fail(error, batch)
            if not isinstance(error, Exception):
                raise


def _fail(error: BaseException, waiting: Sequence[tuple[object, asyncio.Future[Any]]]) -> None:
    """Answer those still waiting with the failure, or cancel them with the call."""
    for _, answer in waiting:
        if answer.done():
            continue
        if isinstance(error, Exception):
            answer.set_exception(error)
        else:
            answer.cancel()
