"""What a projection is and what every projection shares: the page of logged events it
applies, the names of its tables, the state of recently touched streams it keeps between
pages, and which streams of a page began before it. The runner feeds any projection that
has this shape; registry.py lists ours."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

import psycopg
from psycopg import sql

from ..domain.events import LoggedEvent

T = TypeVar("T")
# A projection's logical table names, each as it is to be written: live, or a rebuild's shadow.
Tables = Mapping[str, sql.Identifier]
Page = Sequence[LoggedEvent]


class Projection(Protocol):
    """A read model: its tables, how to create them, how to apply a page of events. A
    projection may also have a ``version`` (1 without one): when it changes, the runner
    makes its tables anew and fills them from the log again."""

    name: str
    tables: tuple[str, ...]

    def create(self, cur: psycopg.Cursor[Any], t: Tables) -> None:
        """Create the tables under the names given (live or shadow)."""
        ...

    def apply(self, cur: psycopg.Cursor[Any], t: Tables, page: Page) -> None:
        """Write the effect of a page of events, in the caller's transaction."""
        ...

    def forget(self) -> None:
        """Drop whatever it keeps in memory between pages (its tables changed elsewhere)."""
        ...


def continued(events: Sequence[Any]) -> list[UUID]:
    """The streams of these events (in log order) that began before them: those whose
    state must come from memory or from the tables."""
    first = {e.originator_id: e.originator_version for e in reversed(events)}
    return [stream for stream, version in first.items() if version > 1]


class StreamCache(Generic[T]):
    """The state of recently touched streams, kept between pages so that a page need not
    read back what the previous one wrote. Valid only while the same projection object has
    written every page since: the runner makes it ``forget()`` otherwise."""

    def __init__(self, limit: int = 20_000) -> None:
        self.limit = limit
        self.rows: dict[UUID, T] = {}

    def get(
        self, ids: Iterable[UUID], load: Callable[[list[UUID]], dict[UUID, T]]
    ) -> dict[UUID, T]:
        """The state of every stream, with those not in memory loaded from ``ids``; the
        caller updates the returned mapping in place."""
        missing = [i for i in ids if i not in self.rows]
        if missing:
            self.rows.update(load(missing))
        return self.rows

    def trim(self) -> None:
        """Keep at most ``limit`` streams: the longest held go first."""
        excess = len(self.rows) - self.limit
        if excess > 0:
            for key in list(islice(self.rows, excess)):
                del self.rows[key]

    def clear(self) -> None:
        """Forget every stream."""
        self.rows.clear()


def status_text(event: Any, status: str | None) -> str | None:
    """A stream's status after one of its events, as the text the tables keep: the event
    itself says what it is (its ``status_after``; the domain's rule, not restated here)."""
    after = event.status_after(status)
    return None if after is None else str(after)
