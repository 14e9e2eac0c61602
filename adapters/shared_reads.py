"""Reads for the event loop that concurrent callers share: one statement, in one worker
thread, for the keys of every caller that came while it gathered.

The first caller to come while no read is in flight leads: it yields once to the loop, so
that the callers ready now join it, reads all their keys at once in a worker thread,
answers each, and hands the lead to the first caller that came meanwhile. Each caller still
sees the database as it is after it arrived. (One read per caller cost the served webhook a
worker thread, a pooled connection and a round trip each, about a third of its throughput:
`voxledger bench --http --profile`.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import anyio
import anyio.to_thread

K = TypeVar("K")
V = TypeVar("V")

MAX_BATCH = 256  # keys per read


class _Waiting(Generic[K, V]):
    """One caller's key, waiting for its read."""

    __slots__ = ("finished", "key", "outcome", "wake")

    def __init__(self, key: K) -> None:
        self.key = key
        self.wake = anyio.Event()
        self.finished = False
        self.outcome: V | BaseException | None = None


class SharedReads(Generic[K, V]):
    """``read_many`` (blocking: keys in, one answer per key out, in order) as a coroutine
    for one key, whose concurrent calls share a read."""

    def __init__(self, read_many: Callable[[list[K]], Sequence[V]]) -> None:
        self._read_many = read_many
        self._queue: list[_Waiting[K, V]] = []
        self._reading = False
        self.reads = 0  # statements run (fewer than callers under load)

    async def read(self, key: K) -> V:
        """The answer for ``key``, from a read made after this call began."""
        waiting: _Waiting[K, V] = _Waiting(key)
        self._queue.append(waiting)
        # Shielded: a caller that walked away while handed the lead would strand the rest.
        with anyio.CancelScope(shield=True):
            if self._reading:
                await waiting.wake.wait()  # answered, or handed the lead
            if not waiting.finished:
                await self._lead()
        if isinstance(waiting.outcome, BaseException):
            raise waiting.outcome
        return waiting.outcome  # type: ignore[return-value]

    async def _lead(self) -> None:
        self._reading = True
        await anyio.sleep(0)  # let the callers that are ready now join this read
        batch = self._queue[:MAX_BATCH]
        del self._queue[: len(batch)]
        outcomes: Sequence[V | BaseException]
        try:
            outcomes = await anyio.to_thread.run_sync(self._read_many, [w.key for w in batch])
        except BaseException as error:  # the read failed: every caller in it hears why
            outcomes = [error] * len(batch)
        self.reads += 1
        for waiting, outcome in zip(batch, outcomes, strict=True):
            waiting.outcome, waiting.finished = outcome, True
            waiting.wake.set()
        if self._queue:
            self._queue[0].wake.set()  # the first to come meanwhile leads the next read
        else:
            self._reading = False
