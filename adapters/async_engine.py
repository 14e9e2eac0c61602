"""The Engine for async adapters (anyio): one conversation's commands in order, many at once,
and the commands of many conversations coalesced into shared commits.

A command whose aggregates this process holds in memory runs right here, in the event
loop: the domain work takes microseconds and needs no thread. Its new events then wait for
a commit, which they share with every other command that came in meanwhile (`Batched`, on
the event loop's own connections: two commits in flight at most, the second sent while the
first waits for the database; they commit one at a time, in the append's lock). Each save in
a shared commit stays atomic and gets its own outcome, so a command that lost a race fails
alone: it runs again, from a fresh read, the usual way. A lone command commits at once, so
coalescing adds no latency when load is light. A caller cancelled while its save waits
for the commit stops waiting, and its conversation's next command may run: the save still
lands whole, or loses its race to that command and is not recorded (never half).

Everything else (a first read of a conversation, queries, a command that would touch the
database before its commit) runs as before: the synchronous Engine in a worker thread, at
most as many at once as the connection pool serves. Commands to one conversation wait for
each other (a queue of futures keyed by id), so they never race each other into retries.
Its waits are asyncio futures, as in `Batched`: this runs on asyncio.
"""

from __future__ import annotations

import asyncio
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
from .batched import Batched
from .store.receipt import note as note_receipt

log = structlog.get_logger("voxledger.engine")


class CoalescingStore(Protocol):
    """What a store offers for commands to run in the event loop (EventStore does)."""

    def take_cached(self, aggregate_id: UUID) -> Aggregate | None:
        """The aggregate if it is in memory and known current, else None (no I/O)."""
        ...

    async def save_each_async(
        self, saves: Sequence[Sequence[Aggregate]], command_ids: Sequence[UUID | None]
    ) -> list[int | BaseException | None]:
        """Several saves, each atomic and carrying its command's id, in as few
        transactions as possible."""
        ...

    def remember(self, aggregates: tuple[Aggregate, ...]) -> None:
        """Keep unchanged aggregates in memory again (after ``take_cached``)."""
        ...

    async def keys_current_async(self) -> None:
        """Before a command: the data keys of the streams in use known afresh (a read at
        most every few seconds, waited for only if entries have lapsed)."""
        ...

    async def behind_async(self, streams: Sequence[tuple[UUID, int]]) -> list[bool]:
        """For each (stream, version): whether the log holds a later version, in one read."""
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
        commits_in_flight: int = 2,
        shared: bool = False,
    ) -> None:
        self.engine = engine
        self._limiter = anyio.CapacityLimiter(max_threads)
        self._turns: dict[UUID, deque[asyncio.Future[None]]] = {}  # per busy conversation
        self._commits: Batched[tuple[Sequence[Aggregate], UUID | None], int | None] | None = None
        if store is not None:
            # Two in flight: with one, a shared commit held all the messages under way
            # (64 at the median at 64 connections) and the loop idled through its round trip.
            self._commits = Batched(
                partial(_save_each, store), max_batch=max_batch, in_flight=commits_in_flight
            )
        self.coalesced = 0  # commands that ran in the loop and committed in a shared commit
        self._store = store
        # The engine as commands in the loop use it: its store is swapped per command, and
        # a save never conflicts there (the shared commit finds out, and this engine retries).
        self._in_loop = copy.copy(engine)
        self._in_loop.max_retries, self._in_loop.backoff = 0, None
        # With other processes writing the same conversations (``shared``), a copy in
        # memory may be behind the log. A command that records events on it needs no read:
        # the commit refuses a version another process wrote first, and the command runs
        # again from a fresh read. What the commit does not check is asked of the log
        # before the command's outcome counts (`_behind`): the copies a command read and did
        # not change, and every copy behind a command that records nothing (a refusal, a
        # message seen before, a query). The reads of commands that come together share a
        # statement. (Each copy was read before every command once: with the serving
        # workers each keeping its own chats, that read was a fifth of their work.)
        self._asking: Batched[tuple[UUID, int], bool] | None = None
        if shared and store is not None:
            self._asking = Batched(store.behind_async)

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
                return await self._command(name, (conversation_id, *args), kwargs)
            finally:
                self._next_turn(conversation_id)

        call.__doc__ = method.__doc__
        setattr(self, name, call)  # made once per name
        return call

    async def _behind(self, copies: Sequence[Aggregate]) -> bool:
        """Whether another process wrote past any of these copies (see ``shared``); a read
        that fails counts as yes (the command then reads afresh, and meets the outage
        itself)."""
        if self._asking is None or not copies:
            return False
        try:
            asked = [self._asking((a.id, a.version - len(a.pending_events))) for a in copies]
            return any(await asyncio.gather(*asked))
        except Exception as error:
            log.warning("engine.copy_check_failed", error=str(error).strip().splitlines()[0])
            return True

    async def _command(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the command in the loop and commit it with others; else in a thread."""
        if self._store is not None:
            await self._store.keys_current_async()  # else a lapsed key sends it to a thread
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
                    if await self._behind(view.loaded):  # refused on a copy behind the log
                        return await self._in_thread(getattr(self.engine, name), *args, **kwargs)
                    view.give_back()  # refused: what it loaded, unchanged, stays in memory
                    raise
                failure = error  # raised after its save (an expiry): the save still counts
            recorded = view.saved is not None and any(a.pending_events for a in view.saved)
            saved = view.saved if recorded and view.saved is not None else ()
            if await self._behind([a for a in view.loaded if all(a is not b for b in saved)]):
                # Decided on a copy another process wrote past: again, from a fresh read
                # (the copies it took are dropped).
                return await self._in_thread(getattr(self.engine, name), *args, **kwargs)
            if not recorded:
                # Nothing to record (a message seen before, say): no commit, and the copies
                # it took stay in memory. They were dropped, and each resent update of a
                # served chat then read its conversation afresh in a thread (2-3 ms of CPU
                # each, against 0.44 ms for a new update).
                if view.saved:
                    note_receipt(view.saved, None)  # as a save with nothing new notes it
                view.give_back()
                if failure is not None:
                    raise failure
                return result
            assert self._commits is not None
            outcome: int | Exception | None
            try:
                outcome = await self._commits((view.saved, view.command_id))
            except Exception as error:
                outcome = error
            if not isinstance(outcome, Exception):
                self.coalesced += 1
                note_receipt(view.saved, outcome)
                if failure is not None:
                    raise failure
                return result
            if not isinstance(outcome, Conflict):
                raise outcome
            # Lost a race to another process: run it again from a fresh read.
        return await self._in_thread(getattr(self.engine, name), *args, **kwargs)

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
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waiting.append(turn)
            try:
                await turn
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._next_turn(conversation_id)  # handed the turn as it was cancelled
                elif turn in waiting:
                    waiting.remove(turn)
                raise

    def _next_turn(self, conversation_id: UUID) -> None:
        waiting = self._turns[conversation_id]
        while waiting:
            turn = waiting.popleft()
            if not turn.done():  # not cancelled while it waited
                turn.set_result(None)
                return
        del self._turns[conversation_id]


async def _save_each(
    store: CoalescingStore, saves: list[tuple[Sequence[Aggregate], UUID | None]]
) -> list[int | BaseException | None]:
    return await store.save_each_async(
        [aggregates for aggregates, _ in saves], [c for _, c in saves]
    )
