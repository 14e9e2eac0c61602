"""Group commit: saves that arrive while another commit is in flight share the next one.

Every append takes the appends' lock, so commits to one log are serial anyway. Instead
of each writer waiting its turn for a commit of its own, the writers that queued up while one
commit ran are written together in the next. A lone writer commits at once (no added
latency); under load, batches grow by themselves. A caller may hand in many saves at once
(the async engine's coalesced commands): each save stays atomic and gets its own outcome. If
one save in a batch lost a race (its stream moved on), one read finds every save of the
batch that did, and the others are written together again; should that fail too, one save
at a time, so that only the saves that lost fail. (With several serving processes, a
conversation's messages reach any of them, and a batch often holds a save that lost: found
one commit per save, that cut two workers' throughput to a third of one worker's,
`voxledger bench --http`.)

The event loop's saves (the async engine's) come already batched: `append_each_async`
writes them in one transaction on the loop's own connection, and only after a lost race
are the losers found and the rest written again, in a worker thread, as above.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Sequence

import anyio.to_thread
from eventsourcing.persistence import IntegrityError

from .recorder import Append


class _Ticket:
    """One caller's saves, waiting for a commit; filled in with an outcome per save."""

    __slots__ = ("finished", "outcomes", "saves", "size", "wake")

    def __init__(self, saves: Sequence[Append]) -> None:
        self.saves = saves
        self.size = sum(len(save.events) for save in saves)
        self.wake: threading.Event | None = None  # made only if the caller has to wait
        self.finished = False
        # Per save: its positions in the log, or the error that stopped it.
        self.outcomes: list[Sequence[int] | BaseException] = []


class GroupCommit:
    """Writes batches of pending saves with one leader at a time, no thread of its own."""

    def __init__(
        self,
        write: Callable[[list[Append]], Sequence[int]],
        max_batch: int = 500,
        *,
        clashes: Callable[[list[Append]], set[int]] | None = None,
        write_async: Callable[[list[Append]], Awaitable[Sequence[int]]] | None = None,
    ) -> None:
        self._write = write  # appends saves in one transaction; returns their positions
        self._write_async = write_async  # the same, in the event loop
        self._clashes = clashes  # which saves of a batch lost their race (by index)
        self._max_batch = max_batch  # events per transaction, when the queue offers more
        self._lock = threading.Lock()
        self._pending: list[_Ticket] = []
        self._committing = False
        self.batches = 0  # commits made, for benchmarks: saves / batches = mean batch size

    def append(self, save: Append) -> Sequence[int]:
        """Append one save's events atomically; returns their positions in the log."""
        (outcome,) = self.append_each([save])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def append_each(self, saves: Sequence[Append]) -> list[Sequence[int] | BaseException]:
        """Append several saves, each atomically, in as few transactions as the batch
        allows; returns per save its positions or the error that stopped it."""
        ticket = _Ticket(saves)
        with self._lock:
            self._pending.append(ticket)
            lead = not self._committing
            self._committing = True
            if not lead:
                ticket.wake = threading.Event()
        if ticket.wake is not None:
            ticket.wake.wait()  # either our saves are done, or we are to lead the next batch
        if not ticket.finished:
            self._lead()
        return ticket.outcomes

    async def append_each_async(
        self, saves: Sequence[Append]
    ) -> list[Sequence[int] | BaseException]:
        """`append_each` in the event loop, for saves batched already (two calls at a time
        at most, each on a connection of the loop's: the append's lock orders their
        commits): one transaction; after a lost race, the rest as `append_each` does it,
        in a worker thread."""
        if self._write_async is None:
            return await anyio.to_thread.run_sync(self.append_each, saves)
        self.batches += 1
        try:
            return self._split(saves, await self._write_async(list(saves)))
        except IntegrityError as error:
            if len(saves) == 1:
                return [error]
        except Exception as error:  # a cancellation is the loop's shutdown: not an outcome
            return [error] * len(saves)
        return await anyio.to_thread.run_sync(self._after_lost_race, list(saves))

    def _lead(self) -> None:
        with self._lock:
            # Whole tickets, at least one, up to the batch size in events.
            pending, taken, size = self._pending, 1, self._pending[0].size
            while taken < len(pending) and size + pending[taken].size <= self._max_batch:
                size += pending[taken].size
                taken += 1
            batch = self._pending[:taken]
            del self._pending[:taken]
        try:
            self._commit([save for ticket in batch for save in ticket.saves], batch)
        finally:
            with self._lock:
                if self._pending:
                    wake = self._pending[0].wake
                    assert wake is not None  # every ticket queued behind a leader waits
                    wake.set()  # hand the lead on; it is not finished
                else:
                    self._committing = False
            for ticket in batch:
                ticket.finished = True
                if ticket.wake is not None:
                    ticket.wake.set()

    def _commit(self, saves: list[Append], batch: list[_Ticket]) -> None:
        self.batches += 1
        outcomes: list[Sequence[int] | BaseException] = []
        if len(saves) > 1:
            try:
                outcomes = self._together(saves)
            except IntegrityError:
                outcomes = self._after_lost_race(saves)
            except BaseException as error:
                outcomes = [error] * len(saves)
        else:
            outcomes = self._one_at_a_time(saves)
        for ticket in batch:
            ticket.outcomes = outcomes[: len(ticket.saves)]
            del outcomes[: len(ticket.saves)]

    def _after_lost_race(self, saves: list[Append]) -> list[Sequence[int] | BaseException]:
        """Saves written together failed on a lost race: the losers found by one read fail,
        the rest are written together again; failing that, one save at a time."""
        return self._without_losers(saves) or self._one_at_a_time(saves)

    def _one_at_a_time(self, saves: list[Append]) -> list[Sequence[int] | BaseException]:
        outcomes: list[Sequence[int] | BaseException] = []
        for save in saves:
            try:
                outcomes.append(self._write([save]))
            except BaseException as error:
                outcomes.append(error)
        return outcomes

    def _together(self, saves: Sequence[Append]) -> list[Sequence[int] | BaseException]:
        """Every save in one transaction: each one's positions (IntegrityError if any lost)."""
        return self._split(saves, self._write(list(saves)))

    @staticmethod
    def _split(
        saves: Sequence[Append], appended: Sequence[int]
    ) -> list[Sequence[int] | BaseException]:
        """One transaction's positions, per save."""
        positions = list(appended)
        outcomes: list[Sequence[int] | BaseException] = []
        for save in saves:
            outcomes.append(positions[: len(save.events)])
            del positions[: len(save.events)]
        return outcomes

    def _without_losers(self, saves: Sequence[Append]) -> list[Sequence[int] | BaseException]:
        """After a batch failed on a lost race: the saves that lost, found by one read, fail;
        the rest are written together (empty if that fails too: one at a time, then)."""
        if self._clashes is None:
            return []
        try:
            lost = self._clashes(list(saves))
        except BaseException:
            return []
        if not lost:
            return []  # not found in the log: one at a time, to be sure
        kept = [save for k, save in enumerate(saves) if k not in lost]
        try:
            written = iter(self._together(kept) if kept else [])
        except BaseException:
            return []
        return [
            IntegrityError("the stream already has this version") if k in lost else next(written)
            for k in range(len(saves))
        ]
