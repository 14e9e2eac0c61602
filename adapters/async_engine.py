"""The Engine for async adapters (anyio): one conversation's commands in order, many at once,
and the commands of many conversations coalesced into shared commits.

A command whose aggregates this process holds in memory runs right here, in the event
loop: the domain work takes microseconds and needs no thread. Its new events then wait for
a commit, which they share with every other command that came in meanwhile (the first
command to arrive while no commit runs leads: it writes the queue in a worker thread and
hands the lead on). Each save in a shared commit stays atomic and gets its own outcome, so
a command that lost a race fails alone: it runs again, from a fresh read, the usual way.
A lone command commits at once, so coalescing adds no latency when load is light.

Everything else (a first read of a conversation, queries, a command that would touch the
database before its commit) runs as before: the synchronous Engine in a worker thread, at
most as many at once as the connection pool serves. Commands to one conversation wait for
each other (a lock keyed by id), so they never race each other into retries.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Protocol
from uuid import UUID

import anyio
import anyio.to_thread
import structlog
from eventsourcing.domain import Aggregate

from ..domain.engine import Engine
from ..domain.errors import Conflict, VersionMismatch
from .shared_reads import SharedReads
from .store.receipt import note as note_receipt

log = structlog.get_logger("voxledger.engine")


class CoalescingStore(Protocol):
    """What a store offers for commands to run in the event loop (EventStore does)."""

    def take_cached(self, aggregate_id: UUID) -> Aggregate | None:
        """The aggregate if it is in memory and known current, else None (no I/O)."""
        ...

    def save_each(
        self, saves: Sequence[Sequence[Aggregate]], command_ids: Sequence[UUID | None]
    ) -> list[int | BaseException | None]:
        """Several saves, each atomic and carrying its command's id, in as few
        transactions as possible."""
        ...

    def remember(self, aggregates: tuple[Aggregate, ...]) -> None:
        """Keep unchanged aggregates in memory again (after ``take_cached``)."""
        ...

    def catch_up_cached(self, aggregate_ids: Sequence[UUID]) -> list[None]:
        """Bring the copies in memory of these aggregates (and of their flows in progress)
        up to the log, in one read."""
        ...


class _NeedsIO(Exception):
    """The command needs the database before its commit: run it in a thread instead."""


class _InLoop:
    """The store as a command running in the event loop sees it: loads come from memory or
    not at all, and the one save is held back for a shared commit."""

    def __init__(self, store: CoalescingStore) -> None:
        self.store = store
        self.loaded: list[Aggregate] = []
        self.saved: tuple[Aggregate, ...] | None = None
        self.command_id: UUID | None = None

    def load(
        self, aggregate_id: UUID, version: int | None = None, *, cached: bool = False
    ) -> Aggregate:
        aggregate = self.store.take_cached(aggregate_id) if cached and version is None else None
        if aggregate is None:
            raise _NeedsIO
        self.loaded.append(aggregate)
        return aggregate

    def save(self, *aggregates: Aggregate, command_id: UUID | None = None) -> None:
        if self.saved is not None:
            raise _NeedsIO  # a second save would not be atomic with the first: not here
        self.saved, self.command_id = aggregates, command_id

    def __getattr__(self, name: str) -> Any:
        raise _NeedsIO  # streams, ids, history: reads, which need a thread

    def give_back(self) -> None:
        """Return the aggregates a command loaded but did not change to the cache."""
        self.store.remember(tuple(a for a in self.loaded if not a.pending_events))


class _Commit:
    """One command's save, waiting in the queue for a shared commit."""

    __slots__ = ("aggregates", "command_id", "finished", "outcome", "wake")

    def __init__(self, aggregates: Sequence[Aggregate], command_id: UUID | None) -> None:
        self.aggregates = aggregates
        self.command_id = command_id
        self.wake = anyio.Event()
        self.finished = False
        self.outcome: int | BaseException | None = None


class AsyncEngine:
    """Every public Engine method, as a coroutine with the same arguments. Given the store
    the engine saves to (its coalescing side), commands on conversations held in memory run
    in the loop and share commits; without it, every command runs in a thread."""

    def __init__(
        self,
        engine: Engine,
        store: CoalescingStore | None = None,
        *,
        max_threads: int = 8,
        max_batch: int = 500,
        catch_up: bool = False,
    ) -> None:
        self.engine = engine
        self._limiter = anyio.CapacityLimiter(max_threads)
        self._turns: dict[UUID, deque[anyio.Event]] = {}  # per busy conversation
        self._max_batch = max_batch  # commands per shared commit
        self._queue: list[_Commit] = []
        self._gathering = False
        self._writing: anyio.Event | None = None  # the batch being committed, if any
        self.coalesced = 0  # commands that ran in the loop and committed in a shared commit
        self._store = store
        # The engine as commands in the loop use it: its store is swapped per command, and
        # a save never conflicts there (the shared commit finds out, and this engine retries).
        self._in_loop = copy.copy(engine)
        self._in_loop.max_retries, self._in_loop.backoff = 0, None
        # With other processes serving the same conversations (``catch_up``), the copies
        # in memory are brought up to the log before each command, the reads of commands
        # that come together in one statement: a copy another worker wrote past would lose
        # its race at the commit and run again from a fresh read (two workers served a
        # tenth of one: `voxledger bench --http --workers 2`).
        self._catching_up: SharedReads[UUID, None] | None = None
        if catch_up and store is not None:
            self._catching_up = SharedReads(store.catch_up_cached)

    async def start_conversation(self, *args: Any, **kwargs: Any) -> UUID:
        """Open a conversation (no ordering needed: it has no id yet, or a fresh one)."""
        return await self._command("start_conversation", args, kwargs)

    async def run(
        self, method: Callable[..., Any], conversation_id: UUID, *args: Any, **kwargs: Any
    ) -> Any:
        """Run an Engine method on one conversation, after its earlier commands."""
        async with self._serial(conversation_id):
            return await self._in_thread(method, conversation_id, *args, **kwargs)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.engine, name)
        if name.startswith("_") or not callable(method):
            raise AttributeError(name)

        async def call(conversation_id: UUID, *args: Any, **kwargs: Any) -> Any:
            # `_serial` spelt out: its generator cost 7% of the CPU of a served message
            # (in-process, 64 callers: 0.385 -> 0.358 ms, medians of 3).
            await self._take_turn(conversation_id)
            try:
                if self._catching_up is not None:
                    await self._caught_up(conversation_id)
                return await self._command(name, (conversation_id, *args), kwargs)
            finally:
                self._next_turn(conversation_id)

        call.__doc__ = method.__doc__
        setattr(self, name, call)  # made once per name
        return call

    async def _caught_up(self, aggregate_id: UUID) -> None:
        assert self._catching_up is not None
        try:
            await self._catching_up.read(aggregate_id)
        except Exception as error:  # the copies stay out: the command reads afresh
            log.warning("engine.catch_up_failed", error=str(error).strip().splitlines()[0])

    async def _command(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the command in the loop and commit it with others; else in a thread."""
        if self._store is not None:
            view = _InLoop(self._store)
            engine = self._in_loop
            engine.store = view  # type: ignore[assignment]  # the call below never awaits
            result: Any = None
            failure: Exception | None = None
            try:
                result = getattr(engine, name)(*args, **kwargs)
            except _NeedsIO:
                view.give_back()
                return await self._in_thread(getattr(self.engine, name), *args, **kwargs)
            except VersionMismatch:
                if view.saved is not None:
                    raise
                # The copy in memory may be behind another process's writes: only a fresh
                # read (the copy is dropped) says which version the stream is at.
                return await self._in_thread(getattr(self.engine, name), *args, **kwargs)
            except Exception as error:
                if view.saved is None:
                    raise
                failure = error  # raised after its save (an expiry): the save still counts
            if view.saved is None:
                return result  # nothing to record
            # Once queued, the save completes even if the caller is cancelled: a leader
            # that walked away would strand everyone queued behind it.
            with anyio.CancelScope(shield=True):
                outcome = await self._commit(view.saved, view.command_id)
            if not isinstance(outcome, BaseException):
                self.coalesced += 1
                note_receipt(view.saved, outcome)
                if failure is not None:
                    raise failure
                return result
            if not isinstance(outcome, Conflict):
                raise outcome
            # Lost a race to another process: run it again from a fresh read.
        return await self._in_thread(getattr(self.engine, name), *args, **kwargs)

    async def _commit(
        self, aggregates: Sequence[Aggregate], command_id: UUID | None
    ) -> int | BaseException | None:
        commit = _Commit(aggregates, command_id)
        self._queue.append(commit)
        if self._gathering:
            await commit.wake.wait()  # committed, or handed the lead of the next batch
        if not commit.finished:
            self._gathering = True
            if self._writing is not None:
                # One batch commits at a time: the queue grows meanwhile, so that under load
                # a commit costs its thread hop and round trips once for many commands.
                await self._writing.wait()
            await anyio.sleep(0)  # let commands that are ready now join this batch
            batch = self._queue[: self._max_batch]
            del self._queue[: len(batch)]
            if self._queue:
                self._queue[0].wake.set()  # the next in line gathers the next batch
            else:
                self._gathering = False  # the next command to come gathers one
            self._writing = writing = anyio.Event()
            assert self._store is not None
            try:
                outcomes = await anyio.to_thread.run_sync(
                    self._store.save_each,
                    [c.aggregates for c in batch],
                    [c.command_id for c in batch],
                )
            except BaseException as error:  # the thread itself failed: everyone hears it
                outcomes = [error] * len(batch)
            finally:
                writing.set()
            for c, outcome in zip(batch, outcomes, strict=True):
                c.outcome, c.finished = outcome, True
                c.wake.set()
        return commit.outcome

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._limiter)

    @asynccontextmanager
    async def _serial(self, conversation_id: UUID) -> AsyncIterator[None]:
        """Run after the conversation's earlier commands: a queue per busy conversation,
        gone when it empties (idle conversations cost nothing). Unlike a lock, the first
        command in takes its turn without yielding to the loop."""
        await self._take_turn(conversation_id)
        try:
            yield
        finally:
            self._next_turn(conversation_id)

    async def _take_turn(self, conversation_id: UUID) -> None:
        """Wait for the conversation's earlier commands (see `_serial`); the caller hands
        the turn on with `_next_turn`."""
        waiting = self._turns.get(conversation_id)
        if waiting is None:
            self._turns[conversation_id] = deque()
        else:
            turn = anyio.Event()
            waiting.append(turn)
            try:
                await turn.wait()
            except BaseException:
                if turn.is_set():
                    self._next_turn(conversation_id)  # handed the turn as it was cancelled
                else:
                    waiting.remove(turn)
                raise

    def _next_turn(self, conversation_id: UUID) -> None:
        waiting = self._turns[conversation_id]
        if waiting:
            waiting.popleft().set()
        else:
            del self._turns[conversation_id]
