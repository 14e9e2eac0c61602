"""The event store: an eventsourcing Application on PostgreSQL, as the Engine's Store port."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar
from uuid import UUID

import psycopg
import structlog
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from ...domain.conversation import Conversation
from ...domain.errors import Conflict, NotFound, Unavailable
from .group_commit import GroupCommit
from .recorder import SnapshotRecorder

log = structlog.get_logger("voxledger.store")


def fold(aggregate: Aggregate | None, events: Iterable[Any]) -> Aggregate | None:
    """Apply events in order (the library's projector, less its per-event protocol check)."""
    for event in events:
        aggregate = event.mutate(aggregate)
    return aggregate


@contextmanager
def reachable() -> Iterator[None]:
    """Turn a lost or refused database connection into one clear, retryable error."""
    try:
        yield
    except (OperationalError, InterfaceError, psycopg.OperationalError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise Unavailable(f"database unavailable: {reason}") from e


def _copy(aggregate: Aggregate) -> Aggregate:
    """A copy whose lists and dicts are its own (their items are immutable values)."""
    clone = object.__new__(type(aggregate))
    clone.__dict__.update(
        {k: v.copy() if isinstance(v, (list, dict)) else v for k, v in vars(aggregate).items()}
    )
    return clone


class EventStore(Application[UUID]):
    """Appends aggregates' events to PostgreSQL and loads aggregates by replay and snapshots."""

    name = "voxledger"
    env: ClassVar[dict[str, str]] = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "MAPPER_TOPIC": "voxledger.adapters.store.mapper:MsgspecMapper",
        "APPLICATION_RECORDER_TOPIC": "voxledger.adapters.store.recorder:Recorder",
        "IS_SNAPSHOTTING_ENABLED": "y",
    }
    # A snapshot every N events of one aggregate keeps loading long streams fast.
    snapshot_every: ClassVar[dict[type[Aggregate], int]] = {Conversation: 100}

    cache_size = 1024  # aggregates kept in memory, least recently used dropped first

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        # Aggregates saved by this process. A load takes one out (so no two threads ever
        # share an object) and a successful save puts it back: a command on a cached
        # conversation needs no read at all, only its commit.
        self._cache: OrderedDict[UUID, Aggregate] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._group_commit = GroupCommit(self.recorder.insert_events)

    def construct_snapshot_store(self) -> Any:
        """The snapshot store, on a recorder that reads large snapshots fast."""
        recorder = SnapshotRecorder(
            self.factory.datastore, events_table_name=f"{self.name.lower()}_snapshots"
        )
        if self.factory.env_create_table():
            recorder.create_table()
        return self.factory.event_store(mapper=self.mapper, recorder=recorder)

    def load(
        self, aggregate_id: UUID, version: int | None = None, *, cached: bool = False
    ) -> Aggregate:
        """The aggregate at its latest or a given version. With ``cached``, a command may
        get this process's last saved copy without a read: if another process wrote since,
        the save fails with Conflict and the command runs again on a fresh read."""
        if version is None:
            with self._cache_lock:
                aggregate = self._cache.pop(aggregate_id, None)
            if aggregate is not None:
                if cached:
                    return aggregate
                # A query must see other processes' writes: catch up, keep the object
                # cached, and hand out a copy that no command will change under the reader.
                with reachable():
                    newer = self.events.get(aggregate_id, gt=aggregate.version)
                aggregate = fold(aggregate, newer)
                self._remember((aggregate,))
                return _copy(aggregate)
        try:
            with reachable():
                return self.repository.get(aggregate_id, version=version, projector_func=fold)
        except AggregateNotFoundError:
            what = f"version {version} of " if version is not None else ""
            raise NotFound(f"no {what}{aggregate_id} in the event store") from None

    def save(self, *aggregates: Aggregate) -> int | None:
        """Append the new events of the given aggregates in one transaction and return the
        log position of the last one (None if there was nothing to append).

        This replaces the library's ``Application.save``, whose per-event protocol checks
        and bookkeeping cost more than the commit itself on a fast disk."""
        batches = [(a, a.collect_events()) for a in aggregates]
        events = [e for _, new in batches for e in new]
        if not events:
            return None
        try:
            with reachable():
                positions = self._group_commit.append(
                    list(map(self.mapper.to_stored_event, events))
                )
        except IntegrityError as e:
            ids = ", ".join(str(a.id) for a in aggregates)
            raise Conflict(f"a concurrent writer appended to {ids} first") from e
        self._snapshot(batches)
        self._remember(aggregates)
        if log.is_enabled_for(logging.DEBUG):
            self._log(batches, positions)
        return positions[-1] if positions else None

    @staticmethod
    def _log(batches: list[tuple[Aggregate, Any]], positions: Any) -> None:
        position = iter(positions or ())
        for aggregate, new in batches:
            # A flow's lines carry its conversation's id too, so one filter finds both.
            conversation_id = getattr(aggregate, "conversation_id", aggregate.id)
            for event in new:
                log.debug(
                    "event.recorded",
                    conversation_id=str(conversation_id),
                    stream_id=str(aggregate.id),
                    version=event.originator_version,
                    type=type(event).__name__,
                    position=next(position, None),
                )

    def _remember(self, objs: tuple[Any, ...]) -> None:
        with self._cache_lock:
            for aggregate in objs:
                if not isinstance(aggregate, Aggregate):
                    continue
                known = self._cache.get(aggregate.id)
                if known is None or known.version < aggregate.version:
                    self._cache[aggregate.id] = aggregate
                self._cache.move_to_end(aggregate.id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def stream(
        self, aggregate_id: UUID, *, gt: int | None = None, lte: int | None = None
    ) -> Iterator[Any]:
        """The stored events of one aggregate in version order."""
        with reachable():
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
        with reachable(), recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (get_topic(event_cls),))
            return cursor.fetchall()

    def head(self) -> int:
        """The position of the newest event in the log (0 when empty)."""
        with reachable():
            return self.recorder.max_notification_id() or 0

    def _snapshot(self, batches: list[tuple[Aggregate, Any]]) -> None:
        # Snapshot from the aggregate already in memory instead of re-reading it, whenever
        # this save took it across a multiple of the interval.
        assert self.snapshots is not None
        snapshots = []
        for aggregate, new in batches:
            every = self.snapshot_every.get(type(aggregate))
            if every and aggregate.version // every > (aggregate.version - len(new)) // every:
                snapshots.append(type(aggregate).Snapshot.take(aggregate))
        if snapshots:
            self.snapshots.put(snapshots)
