"""The event store: an eventsourcing Application on PostgreSQL, as the Engine's Store port."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cache
from typing import Any, ClassVar
from uuid import UUID, uuid4

import psycopg
import structlog
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, CanMutateAggregate
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier

from ...domain.conversation import Conversation
from ...domain.errors import BadInput, Conflict, NotFound, Unavailable
from ..logs import enabled_for
from .group_commit import GroupCommit
from .keys import KeyRing
from .mapper import Erased, ErasedState
from .receipt import note as note_receipt
from .recorder import Append, SnapshotRecorder
from .snapshots import SnapshotWriter

log = structlog.get_logger("voxledger.store")


def fold(aggregate: Aggregate | None, events: Iterable[Any]) -> Aggregate | None:
    """Apply events in order: the library's projector, less its per-event protocol check,
    and for events that keep the library's own ``mutate``, that method inlined (the same
    checks and assignments, without two property calls and a method call per event)."""
    for event in events:
        if aggregate is None or not _plain_mutate(type(event)):
            aggregate = event.mutate(aggregate)
        elif event.originator_version != aggregate._version + 1 or (
            event.originator_id is not aggregate._id and event.originator_id != aggregate._id
        ):
            event.mutate(aggregate)  # raises the library's own error for a gap or stranger
        else:
            event.apply(aggregate)
            aggregate._version = event.originator_version
            aggregate._modified_on = event.timestamp
    return aggregate


@cache
def _plain_mutate(cls: type) -> bool:
    """True if the event class uses the library's ``mutate`` unchanged, on an aggregate
    that keeps its version and time where that method puts them (eventsourcing 9.5)."""
    return cls.mutate is CanMutateAggregate.mutate


@contextmanager
def reachable() -> Iterator[None]:
    """Turn a lost or refused database connection into one clear, retryable error."""
    try:
        yield
    except (OperationalError, InterfaceError, psycopg.OperationalError) as e:
        raise _unavailable(e) from e


def _unavailable(error: BaseException) -> Unavailable:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    failure = Unavailable(f"database unavailable: {reason}")
    failure.__cause__ = error
    return failure


def _failure(error: BaseException) -> BaseException:
    """An error as a caller of the store sees it: a lost connection as Unavailable."""
    if isinstance(error, (OperationalError, InterfaceError, psycopg.OperationalError)):
        return _unavailable(error)
    return error


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
    # A snapshot every N events of one aggregate keeps loading long streams fast; in long
    # streams, every eighth to quarter of the stream (see `snapshot_due`).
    snapshot_every: ClassVar[dict[type[Aggregate], int]] = {Conversation: 100}

    cache_size = 1024  # aggregates kept in memory, least recently used dropped first

    def __init__(
        self, env: Any = None, *, key_ring: Callable[[PostgresDatastore], KeyRing] | None = None
    ) -> None:
        """The store the settings in ``env`` name; ``key_ring`` makes the ring of data keys
        on its datastore (by default, one in this store's own keys table)."""
        super().__init__(env)
        # Aggregates saved by this process. A load takes one out (so no two threads ever
        # share an object) and a successful save puts it back: a command on a cached
        # conversation needs no read at all, only its commit.
        self._cache: OrderedDict[UUID, Aggregate] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._group_commit = GroupCommit(
            self.recorder.append,  # type: ignore[attr-defined]
            clashes=getattr(self.recorder, "clashes", None),
            write_async=getattr(self.recorder, "append_async", None),
        )
        # Each stream's key for its personal data, shared by events and snapshots.
        self.keys = (key_ring or self.default_key_ring)(self.recorder.datastore)
        if self.factory.env_create_table():
            self.keys.create_table()
        self.mapper.keys = self.keys  # type: ignore[attr-defined]
        assert self.snapshots is not None
        self.snapshot_writer = SnapshotWriter(self.snapshots.recorder.insert_events)
        self._reading_keys: set[asyncio.Future[None]] = set()  # refreshes in threads
        self._reading_lapsed: asyncio.Future[None] | None = None  # one commands wait for

    @classmethod
    def default_key_ring(cls, datastore: PostgresDatastore) -> KeyRing:
        """The data keys in this store's own table beside its events."""
        return KeyRing(datastore, table=f"{cls.name.lower()}_keys")

    def close(self) -> None:
        """Write the snapshots still queued, then release the connections."""
        self.snapshot_writer.close()
        self.recorder.release_appender()  # type: ignore[attr-defined]
        super().close()

    def flush_snapshots(self, timeout: float | None = None) -> bool:
        """Wait until the snapshots taken so far are written (they are written behind the
        commands that take them); False if the timeout ran out first."""
        return self.snapshot_writer.flush(timeout)

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
            if aggregate is not None and self.keys.is_erased(aggregate_id):
                # Erased by another process since: the copy in memory still holds the
                # plaintext. (The key ring's cache asks again only every few seconds.)
                aggregate = None
            if aggregate is not None:
                if cached:
                    return aggregate
                # A query must see other processes' writes: catch up, keep the object
                # cached, and hand out a copy that no command will change under the reader.
                aggregate = fold(aggregate, self.stream(aggregate_id, gt=aggregate.version))
                self.remember((aggregate,))
                return _copy(aggregate)
        try:
            with reachable():
                try:
                    return self.repository.get(aggregate_id, version=version, projector_func=fold)
                except ErasedState:
                    # A snapshot sealed with a key erased since (erasing deletes snapshots,
                    # but another process may have written one in the meantime).
                    aggregate = fold(None, self.stream(aggregate_id, lte=version))
                    if aggregate is None:
                        raise AggregateNotFoundError(aggregate_id) from None
                    return aggregate
        except AggregateNotFoundError:
            what = f"version {version} of " if version is not None else ""
            raise NotFound(f"no {what}{aggregate_id} in the event store") from None

    def save(self, *aggregates: Aggregate, command_id: UUID | None = None) -> int | None:
        """Append the new events of the given aggregates in one transaction and return the
        log position of the last one (None if there was nothing to append). The events
        carry ``command_id`` (a fresh one if not given): after a lost connection the store
        finds them by it instead of appending them twice.

        This replaces the library's ``Application.save``, whose per-event protocol checks
        and bookkeeping cost more than the commit itself on a fast disk."""
        (outcome,) = self.save_each([aggregates], [command_id])
        if isinstance(outcome, BaseException):
            raise outcome
        note_receipt(aggregates, outcome)  # for the request that made it, if it keeps one
        return outcome

    def save_each(
        self,
        saves: Sequence[Sequence[Aggregate]],
        command_ids: Sequence[UUID | None] | None = None,
    ) -> list[int | BaseException | None]:
        """Several saves, each atomic on its own and carrying its command's id, written in
        as few transactions as possible (the async engine's coalesced commands). Returns
        per save what ``save`` would have returned, or the error it would have raised: one
        save's conflict fails no other."""
        self.keys.refresh_due()  # keys known afresh before they go stale (one read at most)
        prepared = self._prepare(saves, command_ids)
        appended = self._group_commit.append_each(prepared.stored) if prepared.stored else []
        return self._settle(saves, prepared, appended)

    async def save_each_async(
        self,
        saves: Sequence[Sequence[Aggregate]],
        command_ids: Sequence[UUID | None] | None = None,
    ) -> list[int | BaseException | None]:
        """`save_each` in the event loop: the events are encoded here and appended on the
        loop's own connection (`Recorder.append_async`), with no worker thread; finding
        the losers of a lost race goes to a thread. The keys' refresh is the commands' own
        (`keys_current_async`)."""
        prepared = self._prepare(saves, command_ids)
        appended = (
            await self._group_commit.append_each_async(prepared.stored) if prepared.stored else []
        )
        return self._settle(saves, prepared, appended)

    async def keys_current_async(self) -> None:
        """Before a command in the event loop: the keys of the streams in use known afresh
        (`KeyRing.refresh_due`), read in a thread. Under steady traffic the read is not
        waited for: the entries it renews stay good for half the cache time yet, and a
        save that waited held the whole shared commit behind it (every 10 s the 64 requests
        in flight waited 40-90 ms: the served bench's p99 over 50 ms in most 8-s runs).
        After a pause longer than that margin some entries have lapsed, and a command on
        one of those streams would leave the loop for a read and a commit of its own (the
        first 200 ms of a run after 24 s idle: 100-220 ms per request); then the commands
        wait for the one read, which renews them all."""
        lapsed = self._reading_lapsed
        if lapsed is not None:
            await asyncio.shield(lapsed)
            return
        due = self.keys.claim_due()
        if not due:
            return
        reading = asyncio.get_running_loop().run_in_executor(None, self.keys.read_again, due)
        if not self.keys.lapsed(due):
            self._reading_keys.add(reading)
            reading.add_done_callback(self._reading_keys.discard)
            return
        self._reading_lapsed = reading
        try:
            await asyncio.shield(reading)
        finally:
            self._reading_lapsed = None

    def _prepare(
        self, saves: Sequence[Sequence[Aggregate]], command_ids: Sequence[UUID | None] | None
    ) -> _Prepared:
        """Each save's new events, encoded for the recorder (or the error that stops it)."""
        prepared = _Prepared([None] * len(saves))
        ids = list(command_ids) if command_ids is not None else [None] * len(saves)
        for k, aggregates in enumerate(saves):
            batch = [(a, a.collect_events()) for a in aggregates]
            try:
                with self.keys.collecting() as new_keys:
                    events = [self.mapper.to_stored_event(e) for _, new in batch for e in new]
            except Exception as error:  # for example, personal data for an erased stream
                self.keys.withdrawn(new_keys.items())
                prepared.outcomes[k] = _failure(error)
                continue
            if events:
                prepared.batches.append(batch)
                prepared.stored.append(Append(events, ids[k] or uuid4(), tuple(new_keys.items())))
                prepared.index.append(k)
        return prepared

    def _settle(
        self,
        saves: Sequence[Sequence[Aggregate]],
        prepared: _Prepared,
        appended: Sequence[Sequence[int] | BaseException],
    ) -> list[int | BaseException | None]:
        """Each save's outcome from its append's; the saved aggregates are kept in memory
        (and snapshotted when due), the keys of refused saves withdrawn."""
        outcomes = prepared.outcomes
        done = []
        for k, batch, save, outcome in zip(
            prepared.index, prepared.batches, prepared.stored, appended, strict=True
        ):
            if isinstance(outcome, BaseException):
                self.keys.withdrawn(save.keys)
            else:
                self.keys.issued(save.keys)
            if isinstance(outcome, IntegrityError):
                ids = ", ".join(str(a.id) for a in saves[k])
                conflict = Conflict(f"a concurrent writer appended to {ids} first")
                conflict.__cause__ = outcome
                outcomes[k] = conflict
            elif isinstance(outcome, BaseException):
                outcomes[k] = _failure(outcome)
            else:
                outcomes[k] = outcome[-1] if outcome else None
                done.append(batch)
                if enabled_for(logging.DEBUG):
                    self._log(batch, outcome)
        if done:
            self.keys.note_new(
                a.id
                for batch in done
                for a, new in batch
                if new[:1] and new[0].originator_version == 1
            )
            self._snapshot([pair for batch in done for pair in batch])
            self.remember(tuple(a for batch in done for a, _ in batch))
        return outcomes

    async def behind_async(self, streams: Sequence[tuple[UUID, int]]) -> list[bool]:
        """For each (stream, version), whether the log holds a later version (another
        process wrote past that copy), in one read in the event loop. Returns one answer
        per pair (a `Batched` answer)."""
        with reachable():
            behind = await self.recorder.select_behind_async(streams)  # type: ignore[attr-defined]
        return [pair in behind for pair in streams]

    def take_cached(self, aggregate_id: UUID) -> Aggregate | None:
        """This process's last saved copy of the aggregate, for a command, if it can be had
        without touching the database (else None, and the caller loads it the usual way)."""
        with self._cache_lock:
            aggregate = self._cache.pop(aggregate_id, None)
        if aggregate is not None and not self.keys.known_not_erased(aggregate_id):
            with self._cache_lock:  # whether it was erased meanwhile needs a read: not here
                self._cache.setdefault(aggregate_id, aggregate)
            return None
        return aggregate

    @staticmethod
    def _log(batches: list[tuple[Aggregate, Any]], positions: Any) -> None:
        position = iter(positions or ())
        # The conversation the save is about: a definition's history saved with a run's
        # start is logged under that conversation too.
        owner = next((a.id for a, _ in batches if isinstance(a, Conversation)), None)
        for aggregate, new in batches:
            # A flow's lines carry its conversation's id too, so one filter finds both.
            conversation_id = getattr(aggregate, "conversation_id", None) or owner or aggregate.id
            for event in new:
                log.debug(
                    "event.recorded",
                    conversation_id=str(conversation_id),
                    stream_id=str(aggregate.id),
                    version=event.originator_version,
                    type=type(event).__name__,
                    position=next(position, None),
                )

    def remember(self, objs: tuple[Any, ...]) -> None:
        """Keep aggregates in memory (the newest copy of each) for the next command."""
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
            rows = self.recorder.select_rows(aggregate_id, gt=gt, lte=lte)  # type: ignore[attr-defined]
        decode = self.mapper.decode  # type: ignore[attr-defined]
        return (decode(aggregate_id, version, topic, state) for version, topic, state in rows)

    def erase(self, conversation_id: UUID) -> list[UUID]:
        """Erase a conversation's personal data and its flows': delete their keys (so every
        sealed value, in every copy of the log, stays unreadable) and their snapshots, in
        one transaction. Returns the streams erased, the conversation first. The events
        remain, their personal fields read as "[erased]"; other processes stop using the
        keys within the key ring's cache time (``KeyRing.ttl_s``)."""
        streams = [conversation_id, *self._flows_begun(conversation_id)]
        assert self.snapshots is not None
        snapshots = self.snapshots.recorder.events_table_name  # type: ignore[attr-defined]
        delete = SQL("DELETE FROM {}.{} WHERE originator_id = ANY(%s)").format(
            Identifier(self.recorder.datastore.schema), Identifier(snapshots)
        )
        self.snapshot_writer.discard(streams)  # none of theirs may land after the delete
        with reachable():
            self.keys.erase(streams, also=lambda cursor: cursor.execute(delete, (streams,)))
        with self._cache_lock:
            for stream_id in streams:
                self._cache.pop(stream_id, None)
        log.info("conversation.erased", conversation_id=str(conversation_id), streams=len(streams))
        return streams

    def _flows_begun(self, conversation_id: UUID) -> list[UUID]:
        """The flows a conversation began (NotFound, or BadInput for a flow's id)."""
        recorder = self.recorder
        statement = SQL(
            "SELECT originator_version, topic, state FROM {}.{} WHERE originator_id = %s "
            "AND (originator_version = 1 OR topic = %s) ORDER BY originator_version"
        ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
        with reachable(), recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement, (conversation_id, get_topic(Conversation.FlowBegan)))
            rows = cursor.fetchall()
        events = [
            self.mapper.to_domain_event(
                StoredEvent(conversation_id, r["originator_version"], r["topic"], r["state"])
            )
            for r in rows
        ]
        if not events:
            raise NotFound(f"no conversation {conversation_id}")
        if not isinstance(events[0], Conversation.Started):
            owner = getattr(events[0], "conversation_id", None)
            raise BadInput(f"{conversation_id} is a flow; erase its conversation {owner}")
        return [e.flow_id for e in events[1:] if isinstance(e, Conversation.FlowBegan)]

    def version_at(self, aggregate_id: UUID, at: datetime, *, before: bool = False) -> int:
        """The aggregate's last version recorded at or before ``at`` (strictly before, with
        ``before``); 0 if none. A binary search over versions, one event read per probe: a
        stream's times never go backwards, as its commands are saved in order with the time
        each came with."""
        with reachable():
            newest = self.recorder.select_rows(aggregate_id, desc=True, limit=1)  # type: ignore[attr-defined]
        low, high = 0, newest[0][0] if newest else 0  # invariant: low qualifies, high+1 not
        while low < high:
            middle = (low + high + 1) // 2
            stamp = next(self.stream(aggregate_id, gt=middle - 1, lte=middle)).timestamp
            if stamp < at or (stamp == at and not before):
                low = middle
            else:
                high = middle - 1
        return low

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

    @property
    def commits(self) -> int:
        """Append transactions made by this process (saves / commits = mean batch size)."""
        return self._group_commit.batches

    def forget_cached(self) -> None:
        """Drop every cached aggregate: the next load reads the database."""
        with self._cache_lock:
            self._cache.clear()

    def head(self) -> int:
        """The position of the newest event in the log (0 when empty)."""
        with reachable():
            return self.recorder.max_notification_id() or 0

    def snapshot_due(
        self, kind: type[Aggregate], version: int, new: int, stream_id: UUID | None = None
    ) -> bool:
        """Whether a save of ``new`` events that took a stream of this kind to ``version``
        calls for a snapshot (`snapshot_due` below, with the kind's ``snapshot_every``, its
        steps shifted by the stream's phase when its id is given)."""
        every = self.snapshot_every.get(kind)
        if not every:
            return False
        phase = snapshot_phase(stream_id) if stream_id is not None else 0
        return snapshot_due(every, version, new, phase)

    def _snapshot(self, batches: list[tuple[Aggregate, Any]]) -> None:
        # Snapshot from the aggregate already in memory instead of re-reading it, whenever
        # this save took it across a multiple of its step.
        assert self.snapshots is not None
        snapshots = []
        for aggregate, new in batches:
            if self.snapshot_due(type(aggregate), aggregate.version, len(new), aggregate.id):
                try:
                    snapshot = type(aggregate).Snapshot.take(aggregate)
                    with self.keys.collecting() as new_keys:
                        stored = self.mapper.to_stored_event(snapshot)
                except Erased:
                    continue  # an erased stream keeps no state to seal: it loads from its events
                if new_keys:  # a key no save has written: the snapshot could never be read
                    self.keys.withdrawn(new_keys.items())
                    continue
                snapshots.append(stored)
        if snapshots:
            self.snapshot_writer.put(snapshots)


def snapshot_due(every: int, version: int, new: int, phase: int = 0) -> bool:
    """Whether a save of ``new`` events that took a stream to ``version`` crossed one of its
    snapshot steps: the larger of ``every`` and the power of two between an eighth and a
    quarter of the stream (with 100: 100 up to 511 events, 128 from 512, 256 from 1,024).
    A snapshot seals the whole state, so with a fixed step a long stream's snapshots cost
    more per event the longer it grew (a 20,000-event call sealed 200 events' worth of
    state per event, and the commits of long-served chats stalled on them: `voxledger bench
    --http`); this keeps it under eight, and a load still replays at most a quarter of the
    stream after its snapshot.

    ``phase`` (0-65535: `snapshot_phase`) moves the steps earlier by that fraction of
    ``every``, so that streams that grow together (the chats of one campaign, the
    benchmark's 128) take their snapshots one after another rather than all on the same
    message, which held every message behind them (served webhook, p99 over short runs:
    54-62 ms with snapshots in step, 31-59 without any). None comes before ``every``
    events; with any phase a load replays at most ``every`` events, or about a quarter of
    a longer stream (`tests/test_store.py`)."""
    if version < every:
        return False
    step = max(every, 1 << max(0, version.bit_length() - 3))
    shift = (every * phase) >> 16  # under every, so under any step: no step is skipped
    return (version + shift) // step > (version - new + shift) // step


def snapshot_phase(stream_id: UUID) -> int:
    """A stream's phase for `snapshot_due`: 16 bits of its (random) id."""
    return stream_id.int & 0xFFFF


class _Prepared:
    """Saves on their way to the recorder: per save its outcome so far (None: not decided),
    and for those with events, their aggregates' new events, their `Append` and index."""

    __slots__ = ("batches", "index", "outcomes", "stored")

    def __init__(self, outcomes: list[int | BaseException | None]) -> None:
        self.outcomes = outcomes
        self.batches: list[list[tuple[Aggregate, list[Any]]]] = []
        self.stored: list[Append] = []
        self.index: list[int] = []
