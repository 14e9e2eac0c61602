"""What a request's writes recorded: each stream's new version and the log position of the
last event, for the caller to read its own writes (an HTTP write answers with them).

The receipt travels in a context variable, so it reaches the store whether the command runs
in the event loop or in a worker thread (anyio runs a thread's function in a copy of the
caller's context: the copy holds the same receipt object). Only a save made for this request
writes to it; a shared commit notes each command's outcome on its own command's receipt.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from uuid import UUID

from eventsourcing.domain import Aggregate


class Receipt:
    """The versions the saves of one request left each stream at, and the log position
    of the last event they appended (None while nothing was appended)."""

    __slots__ = ("position", "versions")

    def __init__(self) -> None:
        self.versions: dict[UUID, int] = {}
        self.position: int | None = None

    def note(self, aggregates: Iterable[Aggregate], position: int | None) -> None:
        """A save succeeded: its aggregates stand at their versions, its last event at
        ``position``."""
        for aggregate in aggregates:
            self.versions[aggregate.id] = aggregate.version
        if position is not None:
            self.position = max(position, self.position or 0)


_current: ContextVar[Receipt | None] = ContextVar("voxledger_receipt", default=None)


@contextmanager
def receipt() -> Iterator[Receipt]:
    """Collect what the saves made inside this block recorded."""
    taken = Receipt()
    token = _current.set(taken)
    try:
        yield taken
    finally:
        _current.reset(token)


def note(aggregates: Iterable[Aggregate], position: int | None) -> None:
    """Note a successful save on the current request's receipt, if it keeps one."""
    current = _current.get()
    if current is not None:
        current.note(aggregates, position)
