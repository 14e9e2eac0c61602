"""The chat directory for the event loop: the lookups of messages that arrive together share
one read.

Every chat message reads its chat's row in the directory (never cached: an erasure takes
effect at the chat's very next message). One read per message cost the served webhook a
worker thread, a pooled connection and a round trip each, about a third of its throughput
(`voxledger bench --http --profile`: `ChatDirectory.open` in the worker threads, and their
wait for a connection). Here the first lookup to come while no read is in flight leads: it
yields once to the loop, so that the lookups ready now join it, reads all their rows in one
statement in a worker thread, answers each, and hands the lead to the first lookup that
came meanwhile. Each lookup still sees the directory as it is after it arrived.
"""

from __future__ import annotations

from uuid import UUID

import anyio
import anyio.to_thread

from .directory import ChatDirectory, ChatKey

MAX_BATCH = 256  # chats per read


class _Lookup:
    """One chat's lookup, waiting for its read."""

    __slots__ = ("chat", "finished", "opening", "outcome", "wake")

    def __init__(self, chat: ChatKey, opening: bool) -> None:
        self.chat, self.opening = chat, opening
        self.wake = anyio.Event()
        self.finished = False
        self.outcome: UUID | BaseException | None = None


class AsyncDirectory:
    """`ChatDirectory.find` and `open` as coroutines whose concurrent calls share reads."""

    def __init__(self, directory: ChatDirectory) -> None:
        self.directory = directory
        self._queue: list[_Lookup] = []
        self._reading = False
        self.reads = 0  # statements run (fewer than lookups under load)

    async def find(self, chat: ChatKey) -> UUID | None:
        """The chat's current conversation, or None if it has none."""
        return await self._lookup(chat, opening=False)

    async def open(self, chat: ChatKey) -> UUID:
        """The chat's current conversation, or a fresh id reserved for it."""
        found = await self._lookup(chat, opening=True)
        assert found is not None
        return found

    async def _lookup(self, chat: ChatKey, *, opening: bool) -> UUID | None:
        lookup = _Lookup(chat, opening)
        self._queue.append(lookup)
        # Shielded: a lookup that walked away while handed the lead would strand the rest.
        with anyio.CancelScope(shield=True):
            if self._reading:
                await lookup.wake.wait()  # answered, or handed the lead
            if not lookup.finished:
                await self._lead()
        if isinstance(lookup.outcome, BaseException):
            raise lookup.outcome
        return lookup.outcome

    async def _lead(self) -> None:
        self._reading = True
        await anyio.sleep(0)  # let the lookups that are ready now join this read
        batch = self._queue[:MAX_BATCH]
        del self._queue[: len(batch)]
        outcomes: list[UUID | BaseException | None]
        try:
            outcomes = list(
                await anyio.to_thread.run_sync(
                    self.directory.current, [(k.chat, k.opening) for k in batch]
                )
            )
        except BaseException as error:  # the read failed: every lookup in it hears why
            outcomes = [error] * len(batch)
        self.reads += 1
        for lookup, outcome in zip(batch, outcomes, strict=True):
            lookup.outcome, lookup.finished = outcome, True
            lookup.wake.set()
        if self._queue:
            self._queue[0].wake.set()  # the first to come meanwhile leads the next read
        else:
            self._reading = False
