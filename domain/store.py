"""The Store port: what the Engine needs from persistence. An adapter provides it (the
event store on PostgreSQL); the domain never sees a database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.domain import Aggregate


class Store(Protocol):
    """What the Engine needs from persistence (an adapter provides it)."""

    def load(
        self, aggregate_id: UUID, version: int | None = None, *, cached: bool = False
    ) -> Aggregate:
        """The aggregate at its latest or a given version; NotFound if it has no events.
        ``cached``: for a command, which may get a stale copy (its save then conflicts)."""
        ...

    def save(self, *aggregates: Aggregate, command_id: UUID | None = None) -> int | None:
        """Append the aggregates' new events atomically, stored with the command's id;
        Conflict on a stale version. A save whose outcome was lost (the connection broke
        after the commit) is found by its command id, never appended twice."""
        ...

    def stream(
        self, aggregate_id: UUID, *, gt: int | None = None, lte: int | None = None
    ) -> Iterator[Any]:
        """The stored events of one aggregate in version order."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...

    def ids_of(self, created_event: type) -> Iterator[UUID]:
        """The ids of every aggregate whose first event is of this class."""
        ...

    def version_at(self, aggregate_id: UUID, at: datetime) -> int:
        """The last version recorded at or before ``at``; 0 if none."""
        ...
