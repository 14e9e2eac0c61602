"""Per-stream data keys for personal data, and erasure by deleting them (crypto-shredding).

Every conversation or flow that records personal data (message content, collected answers)
gets a random 256-bit key in ``{schema}.voxledger_keys``; the mapper seals those fields with
it. Erasing a stream sets its key to NULL: the events keep their shape and metadata, and the
sealed values in them, in every copy of the log, can never be opened again (a backup of this
table taken before the erasure still holds the key until it expires).

A new key is made in this process and written in the same transaction as the first events
sealed with it (the recorder's append inserts it): a save that is refused leaves no key
behind, and two processes that make a key for one stream at once cannot both commit theirs
(the second save fails on the key's primary key, and runs again with the first key).

Keys are cached in each process, for a short time only (``ttl_s``): a key erased by another
process stops being used here within that window. An erasure, once seen, is remembered: it
cannot be undone.

Reads and new keys go through one function that runs with its owner's rights, like the
append function of the recorder: a least-privilege engine role needs EXECUTE on it (PUBLIC
has that by default) and no rights on the table. Erasing needs the owner's rights.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
import structlog
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from psycopg import Cursor
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from .recorder import KEYS_TABLE, retried

log = structlog.get_logger("voxledger.store")

KEY_BYTES = 32  # AES-256


class _Known(NamedTuple):
    """What this process last read about one stream's key, and until when to trust it."""

    key: bytes | None
    erased: bool
    until: float


_UNKEYED = _Known(None, False, 0.0)  # a stream that has no key yet and is not erased


class KeyRing:
    """The data keys of streams: issued on first use, cached briefly, erased for good."""

    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        table: str = "voxledger_keys",
        ttl_s: float = 30.0,
        cache_size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.datastore = datastore
        self.ttl_s = ttl_s
        self.cache_size = cache_size
        self.clock = clock
        self._table = Identifier(datastore.schema, table)
        self._function = Identifier(datastore.schema, f"{table}_issue")
        self._issue = SQL("SELECT * FROM {}(%s, %s)").format(self._function)
        self._read_many = SQL(
            "SELECT s.id, k.stream_key, k.is_erased FROM unnest(%s::uuid[]) AS s(id) "
            "LEFT JOIN LATERAL {}(s.id, NULL) AS k ON true"
        ).format(self._function)
        self._next_refresh = 0.0
        self._known: OrderedDict[UUID, _Known] = OrderedDict()
        self._looked_up: set[UUID] = set()  # streams looked up since the last refresh
        self._lock = threading.Lock()
        # Keys made here and not yet written: each goes in with the first save sealed with it.
        self._pending: dict[UUID, bytes] = {}
        self._used = threading.local()  # the pending keys the current save has sealed with

    def create_table(self) -> None:
        """Create the keys table and its function (idempotent)."""
        statements = [
            KEYS_TABLE,
            SQL(
                "CREATE OR REPLACE FUNCTION {function}(stream uuid, new_key bytea) "
                "RETURNS TABLE (stream_key bytea, is_erased boolean) LANGUAGE plpgsql "
                "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ BEGIN "
                "IF new_key IS NOT NULL THEN "
                # Two processes issuing a key for one stream at once both get the first.
                "INSERT INTO {table} (stream_id, key) VALUES (stream, new_key) "
                "ON CONFLICT (stream_id) DO NOTHING; "
                "END IF; "
                "RETURN QUERY SELECT k.key, k.erased_at IS NOT NULL FROM {table} k "
                "WHERE k.stream_id = stream; "
                "END $$"
            ),
        ]
        with self.datastore.transaction(commit=True) as cursor:
            for statement in statements:
                cursor.execute(statement.format(table=self._table, function=self._function))

    def key_for(self, stream_id: UUID, *, create: bool, new: bool = False) -> bytes | None:
        """The stream's key; with ``create``, a new one if it has none (written with the
        save that seals with it: see `collecting`). None if the stream was erased, or has
        no key and ``create`` is false. ``new``: the value sealed is the stream's first
        event's, so the log holds no key for it (one there means the stream exists: the
        save fails as a conflict, on the key's insert as on its first event)."""
        known = self._cached(stream_id)
        if known is None and create and (new or stream_id in self._pending):
            # A stream this save begins, or whose key this process made for the save in
            # progress: no read. It was a round trip in the event loop's thread for every
            # new conversation (3.2 ms each, all the loop's requests held meanwhile).
            known = _UNKEYED
        elif known is None or (known.key is None and not known.erased and not create):
            # Not cached, stale, or cached as keyless: ask, since another process may have
            # issued a key since (a missing key is not final, an erased one is). A new key
            # needs no such read: if another process wrote one meanwhile, the save fails.
            known = self._fetch(stream_id)
        if known.erased or known.key is not None or not create:
            return known.key
        with self._lock:
            key = self._pending.setdefault(stream_id, os.urandom(KEY_BYTES))
        used: dict[UUID, bytes] | None = getattr(self._used, "keys", None)
        if used is not None:
            used[stream_id] = key
        return key

    @contextmanager
    def collecting(self) -> Iterator[dict[UUID, bytes]]:
        """The new keys that values sealed in this thread inside the block use: the save
        of those values must write them (see the recorder's append)."""
        used: dict[UUID, bytes] = {}
        outer = getattr(self._used, "keys", None)
        self._used.keys = used
        try:
            yield used
        finally:
            self._used.keys = outer

    def issued(self, keys: Iterable[tuple[UUID, bytes]]) -> None:
        """New keys that a save wrote: known from now on, no longer pending."""
        until = self.clock() + self.ttl_s
        with self._lock:
            for stream_id, key in keys:
                if self._pending.get(stream_id) is key:
                    del self._pending[stream_id]
                self._known[stream_id] = _Known(key, False, until)
                self._known.move_to_end(stream_id)
            self._trim()

    def withdrawn(self, keys: Iterable[tuple[UUID, bytes]]) -> None:
        """New keys whose save failed: the next save asks again (another process may
        have written a key for the stream meanwhile)."""
        with self._lock:
            for stream_id, key in keys:
                if self._pending.get(stream_id) is key:
                    del self._pending[stream_id]
                self._known.pop(stream_id, None)

    def is_erased(self, stream_id: UUID) -> bool:
        """True if the stream was erased (as known within the last ``ttl_s`` seconds)."""
        known = self._cached(stream_id)
        if known is None:
            known = self._fetch(stream_id)
        return known.erased

    def known_not_erased(self, stream_id: UUID) -> bool:
        """True if this process knows, within the last ``ttl_s`` seconds, that the stream
        was not erased; False if it was, or if finding out would need a read."""
        known = self._cached(stream_id)
        return known is not None and not known.erased

    def note_new(self, stream_ids: Iterable[UUID]) -> None:
        """Streams this process has just created: known to be keyless and not erased, so
        the next command on one needs no read here (its first personal value issues the key)."""
        until = self.clock() + self.ttl_s
        with self._lock:
            for stream_id in stream_ids:
                if stream_id not in self._known:
                    self._known[stream_id] = _Known(None, False, until)
            self._trim()

    def erase(
        self, stream_ids: Iterable[UUID], *, also: Callable[[Cursor[Any]], None] | None = None
    ) -> None:
        """Delete the streams' keys for good, in one transaction (with whatever ``also``
        does in it); a stream with no key yet is marked erased, so it never gets one."""
        ids = list(stream_ids)
        with self.datastore.transaction(commit=True) as cursor:
            if also is not None:
                also(cursor)
            cursor.execute(
                SQL(
                    "INSERT INTO {table} (stream_id, key, erased_at) "
                    "SELECT unnest(%s::uuid[]), NULL, now() "
                    "ON CONFLICT (stream_id) DO UPDATE "
                    "SET key = NULL, erased_at = coalesce({table}.erased_at, now())"
                ).format(table=self._table),
                (ids,),
            )
        self.evict(ids)
        with self._lock:
            for stream_id in ids:
                self._pending.pop(stream_id, None)
        try:
            # The old row versions still hold the keys on disk until vacuumed.
            with self.datastore.get_connection() as conn:  # autocommit, as VACUUM needs
                conn.execute(SQL("VACUUM {}").format(self._table))
        except PersistenceError as e:
            log.warning("keys.vacuum_failed", error=str(e).strip().splitlines()[0])

    def evict(self, stream_ids: Iterable[UUID]) -> None:
        """Forget what this process knows about the streams' keys."""
        with self._lock:
            for stream_id in stream_ids:
                self._known.pop(stream_id, None)

    def _cached(self, stream_id: UUID) -> _Known | None:
        # Without the lock: one dict read is atomic, and this runs for every sealed value.
        # Entries are refreshed every ttl_s, so eviction by age is as good as by use here.
        looked_up = self._looked_up
        if len(looked_up) < self.cache_size:  # bounded where nothing refreshes (a replay)
            looked_up.add(stream_id)  # in use: the next refresh reads it again
        known = self._known.get(stream_id)
        if known is None or (not known.erased and known.until < self.clock()):
            return None
        return known

    def refresh_due(self) -> None:
        """Read again, in one statement, the streams looked up since the last refresh whose
        entries go stale within half the cache time: under steady traffic no command waits
        for a read of its own key (nor leaves the event loop for one:
        `EventStore.take_cached`). Runs at most every third of the cache time; a failed
        read is left to the per-stream reads. Streams out of use are left to lapse: a
        served chat makes a stream per form it fills, and after a few minutes of the served
        bench, reading every one known again (up to the cache's size) held the first
        requests after a pause for 150 ms."""
        due = self.claim_due()
        if due:
            self.read_again(due)

    def claim_due(self) -> dict[UUID, _Known]:
        """The entries `refresh_due` reads now (none if it read within the last third of
        the cache time); claimed, so that nobody else reads them before the next third.
        Cheap, and without a read: the event loop claims, a thread reads (`read_again`)."""
        now = self.clock()
        if now < self._next_refresh:  # the common case, for every command: no lock
            return {}
        with self._lock:
            if now < self._next_refresh:
                return {}
            self._next_refresh = now + self.ttl_s / 3
            soon = now + self.ttl_s / 2
            looked_up, self._looked_up = self._looked_up, set()
            due = {}
            for stream in looked_up:
                known = self._known.get(stream)
                if known is not None and known.until < soon and not known.erased:
                    due[stream] = known
            return due

    def lapsed(self, due: dict[UUID, _Known]) -> bool:
        """Whether any of the claimed entries is stale already (traffic paused longer than
        the refreshes' margin): commands on those streams would need a read of their own."""
        now = self.clock()
        return any(known.until < now for known in due.values())

    def read_again(self, due: dict[UUID, _Known]) -> None:
        """Read the claimed entries again, in one statement; an entry trimmed or learnt
        anew meanwhile (a key issued) is left as it is. A failed read is logged, not
        raised: each stream's own read comes when its entry goes stale."""
        try:
            with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
                c.execute(self._read_many, (list(due),), prepare=True)
                rows = c.fetchall()
        except (PersistenceError, psycopg.Error) as error:
            log.warning("keys.refresh_failed", error=str(error).strip().splitlines()[0])
            return
        until = self.clock() + self.ttl_s
        with self._lock:
            for stream_id, key, erased in rows:
                if self._known.get(stream_id) is not due[stream_id]:
                    continue  # trimmed, or learnt anew (a key issued) meanwhile
                known = _Known(None if erased or key is None else bytes(key), bool(erased), until)
                self._known[stream_id] = known

    @retried
    def _fetch(self, stream_id: UUID) -> _Known:
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
            # The function still issues a key when given one (older processes do): this
            # one never asks it to, as its keys go in with their first events.
            c.execute(self._issue, (stream_id, None), prepare=True)
            row = c.fetchone()
        key, erased = row if row is not None else (None, False)
        key = None if erased or key is None else bytes(key)
        known = _Known(key, bool(erased), self.clock() + self.ttl_s)
        with self._lock:
            self._known[stream_id] = known
            self._known.move_to_end(stream_id)
            self._trim()
        return known

    def _trim(self) -> None:
        while len(self._known) > self.cache_size:
            self._known.popitem(last=False)
        while len(self._pending) > self.cache_size:  # keys of saves never retried
            del self._pending[next(iter(self._pending))]
