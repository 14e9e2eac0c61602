"""Group commit: saves that arrive while another commit is in flight share the next one.

Every append takes the events table's lock, so commits to one log are serial anyway. Instead
of each writer waiting its turn for a commit of its own, the writers that queued up while one
commit ran are written together in the next. A lone writer commits at once (no added
latency); under load, batches grow by themselves. If one command in a batch lost a race
(its stream moved on), the batch is retried one save at a time, so only that command fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from eventsourcing.persistence import IntegrityError


class _Request:
    __slots__ = ("error", "events", "finished", "result", "wake")

    def __init__(self, events: Sequence[Any]) -> None:
        self.events = events
        self.wake = threading.Event()
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Writes batches of pending saves with one leader at a time, no thread of its own."""

    def __init__(self, write: Callable[[list[Any]], Sequence[int]], max_batch: int = 500) -> None:
        self._write = write  # appends events in one transaction; returns their positions
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Request] = []
        self._committing = False
        self.batches = 0  # commits made, for benchmarks: saves / batches = mean batch size

    def append(self, events: Sequence[Any]) -> Sequence[int]:
        """Append one save's events atomically; returns their positions in the log."""
        request = _Request(events)
        with self._lock:
            self._pending.append(request)
            lead = not self._committing
            self._committing = True
        if not lead:
            request.wake.wait()  # either our save is done, or we are to lead the next batch
        if not request.finished:
            self._lead()
        if request.error is not None:
            raise request.error
        return request.result

    def _lead(self) -> None:
        with self._lock:
            batch = self._pending[: self._max_batch]
            del self._pending[: len(batch)]
        try:
            self._commit(batch)
        finally:
            with self._lock:
                if self._pending:
                    self._pending[0].wake.set()  # hand the lead on; it is not finished
                else:
                    self._committing = False
            for request in batch:
                request.finished = True
                request.wake.set()

    def _commit(self, batch: list[_Request]) -> None:
        self.batches += 1
        if len(batch) > 1:
            try:
                positions = list(self._write([e for r in batch for e in r.events]))
            except IntegrityError:
                pass  # someone in the batch lost a race: find out who, one at a time
            except BaseException as error:
                for request in batch:
                    request.error = error
                return
            else:
                for request in batch:
                    request.result = positions[: len(request.events)]
                    del positions[: len(request.events)]
                return
        for request in batch:
            try:
                request.result = self._write(list(request.events))
            except BaseException as error:
                request.error = error
