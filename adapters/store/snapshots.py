"""Snapshots written behind the commands that cause them.

A snapshot is a cache of what a stream's events say: nothing is lost if one is never
written, and a command need not wait for it. A long conversation's snapshot holds every
message, so writing it inline would stall every hundredth command for as long as it takes
to store a few hundred kilobytes. Instead the command hands the sealed snapshot to a writer
thread and returns; the thread writes whatever has queued up in one statement. The queue is
bounded: when it is full the oldest waiting snapshot is dropped (a later one of its stream
serves loads as well, and time travel falls back to the snapshot before it).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.persistence import StoredEvent

log = structlog.get_logger("voxledger.store")


class SnapshotWriter:
    """A daemon thread that inserts queued snapshots; started on first use."""

    def __init__(
        self, insert: Callable[[Sequence[StoredEvent]], Any], *, max_pending: int = 256
    ) -> None:
        self._insert = insert
        self._max_pending = max_pending
        self._pending: deque[StoredEvent] = deque()
        self._writing = False
        self._closed = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0

    def put(self, snapshots: Iterable[StoredEvent]) -> None:
        """Queue snapshots to be written soon."""
        with self._changed:
            if self._closed:
                return
            self._pending.extend(snapshots)
            while len(self._pending) > self._max_pending:
                self._pending.popleft()
                self.dropped += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="voxledger-snapshots", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def discard(self, stream_ids: Iterable[UUID]) -> None:
        """Forget the queued snapshots of these streams and wait out a write in progress
        (before their snapshots are deleted: none may land afterwards)."""
        with self._changed:
            gone = set(stream_ids)
            kept = [s for s in self._pending if s.originator_id not in gone]
            self._pending.clear()
            self._pending.extend(kept)
            self._changed.wait_for(lambda: not self._writing)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued snapshot is written; False if the timeout ran out."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._pending and not self._writing, timeout=timeout
            )

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for up to ``timeout`` seconds) and stop the thread."""
        self.flush(timeout)
        with self._changed:
            self._closed = True
            self._pending.clear()
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                batch = list(self._pending)
                self._pending.clear()
                self._writing = True
            try:
                self._insert(batch)
                self.written += len(batch)
            except Exception as e:  # a cache write failed: the events still hold the truth
                self.dropped += len(batch)
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                log.warning("snapshot.write_failed", error=reason)
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()
