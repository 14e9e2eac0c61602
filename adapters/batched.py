"""Blocking calls for many keys at once, shared by the coroutines of the event loop that come
together: the chat directory's reads, the engine's catch-up reads and its shared commits.

A caller hands in its key and waits for its answer. One task drains the queue: it yields
once (the callers ready now join), calls the blocking function for up to ``max_batch`` keys
in a worker thread, answers each caller, and goes on while keys came meanwhile. One call
runs at a time, and each caller's answer comes from a call that began after it came: a read
sees the database as it is after its caller arrived. (One call per caller cost the served
webhook a worker thread, a pooled connection and a round trip each, about a third of its
throughput: `voxledger bench --http --profile`.)

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
from typing import Generic, TypeVar

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


class Batched(Generic[K, V]):
    """``call_many`` (keys in, one answer per key out, in order; an answer that is an
    exception is raised to its caller) as a coroutine for one key, whose concurrent calls
    share a call. A blocking ``call_many`` runs in a worker thread; a coroutine function
    (one that waits for the database on a connection of the loop's) runs in the loop."""

    def __init__(
        self,
        call_many: Callable[[list[K]], Sequence[V | BaseException]]
        | Callable[[list[K]], Awaitable[Sequence[V | BaseException]]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._call_many = call_many
        self._in_loop = inspect.iscoroutinefunction(call_many)
        self._max_batch = max_batch
        self._queue: list[tuple[K, asyncio.Future[V]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.calls = 0  # calls made (fewer than callers under load)

    async def __call__(self, key: K) -> V:
        """The answer for ``key``, from a call that began after this one."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[V] = loop.create_future()
        draining = self._draining
        if draining is None or draining.done() or draining.get_loop() is not loop:
            if draining is not None:  # left by a loop that ended without running it out
                self._queue = [(k, a) for k, a in self._queue if a.get_loop() is loop]
            # A context of its own: the calls' log lines carry no request's bound values.
            self._draining = loop.create_task(self._drain(), context=contextvars.Context())
        self._queue.append((key, answer))
        return await answer

    async def _drain(self) -> None:
        batch: list[tuple[K, asyncio.Future[V]]] = []
        try:
            while self._queue:
                for _ in range(GATHER_TURNS):  # the callers ready by then join this call
                    await asyncio.sleep(0)
                batch = self._queue[: self._max_batch]
                del self._queue[: len(batch)]
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
                batch = []
        except BaseException as error:
            # Stopped by the loop's shutdown (or a bug here): nobody waits for an answer
            # that cannot come, and a failure is heard as itself, not as a cancellation.
            for _, answer in (*batch, *self._queue):
                if answer.done():
                    continue
                if isinstance(error, Exception):
                    answer.set_exception(error)
                else:
                    answer.cancel()
            self._queue.clear()
            if not isinstance(error, Exception):
                raise  # a failure is its callers' to hear, not the orphaned task's to raise
        finally:
            self._draining = None
