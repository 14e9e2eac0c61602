"""The event store: an eventsourcing Application on PostgreSQL, as the Engine's Store port."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, ClassVar
from uuid import UUID

import structlog
from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from ...domain.conversation import Conversation
from ...domain.errors import Conflict, NotFound

log = structlog.get_logger("voxledger.store")


def fold(aggregate: Aggregate | None, events: Iterable[Any]) -> Aggregate | None:
    """Apply events in order (the library's projector, less its per-event protocol check)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


class EventStore(Application[UUID]):
    """Appends aggregates' events to PostgreSQL and loads aggregates by replay and snapshots."""

    name = "voxledger"
    env: ClassVar[dict[str, str]] = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "MAPPER_TOPIC": "voxledger.adapters.store.mapper:MsgspecMapper",
        "IS_SNAPSHOTTING_ENABLED": "y",
    }
    # A snapshot every N events of one aggregate keeps loading long streams fast.
    snapshot_every: ClassVar[dict[type[Aggregate], int]] = {Conversation: 100}

    def load(self, aggregate_id: UUID, version: int | None = None) -> Aggregate:
        """The aggregate at its latest or a given version."""
        try:
            return self.repository.get(aggregate_id, version=version, projector_func=fold)
        except AggregateNotFoundError:
            what = f"version {version} of " if version is not None else ""
            raise NotFound(f"no {what}{aggregate_id} in the event store") from None

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """Append the new events of the given aggregates in one transaction."""
        try:
            recordings = super().save(*objs, **kwargs)
        except IntegrityError as e:
            ids = ", ".join(str(getattr(o, "id", o)) for o in objs)
            raise Conflict(f"a concurrent writer appended to {ids} first") from e
        for r in recordings:
            log.debug(
                "event.recorded",
                conversation_id=str(r.domain_event.originator_id),
                version=r.domain_event.originator_version,
                type=type(r.domain_event).__name__,
                position=r.notification.id,
            )
        return recordings

    def stream(
        self, aggregate_id: UUID, *, gt: int | None = None, lte: int | None = None
    ) -> Iterator[Any]:
        """The stored events of one aggregate in version order."""
        return self.events.get(aggregate_id, gt=gt, lte=lte)

    def ids_of(self, created_event: type) -> Iterator[UUID]:
        """The ids of every aggregate whose first event is of this class."""
        rows = self._select("SELECT originator_id AS id FROM {}.{} WHERE topic = %s", created_event)
        return (row["id"] for row in rows)

    def count_events(self, event_cls: type) -> int:
        """How many events of one class the log holds (for example, conversations started)."""
        return self._select("SELECT count(*) AS n FROM {}.{} WHERE topic = %s", event_cls)[0]["n"]

    def _select(self, query: str, event_cls: type) -> list[dict[str, Any]]:
        recorder = self.recorder
        statement = SQL(query).format(  # type: ignore[arg-type]
            Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
        )
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (get_topic(event_cls),))
            return cursor.fetchall()

    def head(self) -> int:
        """The position of the newest event in the log (0 when empty)."""
        return self.recorder.max_notification_id() or 0

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        # Snapshot from the aggregate already in memory instead of re-reading it,
        # whenever this save crossed a multiple of the interval.
        assert self.snapshots is not None
        new_events: dict[UUID, int] = {}
        for event in processing_event.events:
            new_events[event.originator_id] = new_events.get(event.originator_id, 0) + 1
        snapshots = []
        for aggregate_id, count in new_events.items():
            aggregate = processing_event.aggregates.get(aggregate_id)
            every = self.snapshot_every.get(type(aggregate)) if aggregate else None
            if every and aggregate.version // every > (aggregate.version - count) // every:
                snapshots.append(type(aggregate).Snapshot.take(aggregate))
        if snapshots:
            self.snapshots.put(snapshots)
