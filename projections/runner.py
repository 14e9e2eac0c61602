"""The projection runner: feeds the event log to the projections, page by page, exactly once.

Each projection owns its tables and one row of ``voxledger_tracking`` (the notification id
of the last event it applied). A page of events is applied to every projection standing at
the same position, and their positions moved, in one transaction, so a crash at any moment
leaves every projection at a page boundary it can resume from. That transaction also
announces the new positions (NOTIFY on ``projected_channel``), so a reader can wait for them
without polling. The runner tails the log with LISTEN/NOTIFY and polls as the fallback, and
can rebuild one projection from zero into shadow tables while readers keep the old ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import msgspec
import psycopg
import structlog
from eventsourcing.persistence import StoredEvent
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from ..domain.errors import Conflict, NotFound
from ..domain.events import LoggedEvent
from .projection import Page, Projection, Tables

log = structlog.get_logger("voxledger.projections")

EVENTS_TABLE = "voxledger_events"
TRACKING_TABLE = "voxledger_tracking"
SHADOW = "__rebuild"
# Events applied per transaction when behind. Several times PostgreSQL's binary COPY batch
# (it stores rows 1,000 at a time): the server stores one batch while the next is being made,
# where a page of exactly one batch leaves it all to the end of the COPY.
PAGE_SIZE = 5000
# Serialises table creation across processes (catalogue races) and names rebuild locks.
_SETUP_LOCK = 0x766F7870  # "voxp"

Decode = Callable[[StoredEvent], Any]
Progress = Callable[[int, int], None]
# A projection's tracking row as last written: its position and the time of the write.
Stamp = tuple[int, datetime | None]
# Pages read for the projections standing at each position: the projections, the page.
Pages = dict[int, tuple[list[Projection], list[LoggedEvent]]]


class ProjectionStatus(msgspec.Struct, frozen=True):
    """How far one projection is behind the log."""

    name: str
    position: int
    head: int
    lag: int
    seconds_behind: float
    updated_at: datetime | None


class ProjectionRunner:
    """Keeps projections current from the event log: catch-up, tailing, rebuild, status.

    ``pool`` gives connections to the database of the events (autocommit mode is set on
    each connection taken); ``decode`` turns a stored event into a domain event;
    ``projections`` are those to keep (registry.py's `default_projections` lists ours).
    """

    def __init__(
        self,
        pool: ConnectionPool[Any],
        schema: str,
        decode: Decode,
        projections: Sequence[Projection],
        *,
        page_size: int = PAGE_SIZE,
        events_table: str = EVENTS_TABLE,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.pool = pool
        self.clock = clock  # for how far behind the log is in time (status); never read here
        self.schema = schema
        self.decode = decode
        self.projections = {p.name: p for p in projections}
        self.page_size = page_size
        self.channel = events_table.replace(".", "_")
        self.projected_channel = projected_channel(schema)
        self._events = sql.Identifier(schema, events_table)
        self._tracking = sql.Identifier(schema, TRACKING_TABLE)
        self._ready = False
        self._written: dict[str, Stamp] = {}  # what this runner last wrote, per projection
        # Where each projection stood when this runner last looked (None: ask the table);
        # it only says which page to read next: `_apply` checks it under the row's lock.
        self._at: dict[str, int] | None = None

    # -- tables ------------------------------------------------------------------------------

    def tables(self, projection: Projection, suffix: str = "") -> dict[str, sql.Identifier]:
        """The projection's table names, qualified by schema (with a suffix for shadows)."""
        return {t: sql.Identifier(self.schema, t + suffix) for t in projection.tables}

    def setup(self) -> None:
        """Create the tracking table and any missing projection tables (idempotent)."""
        with self._connection() as conn, conn.transaction(), _cursor(conn) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s::bigint)", (_SETUP_LOCK,))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (projection text PRIMARY KEY, "
                    "position bigint NOT NULL, updated_at timestamptz)"
                ).format(self._tracking)
            )
            for p in self.projections.values():
                first = sql.Identifier(self.schema, p.tables[0]).as_string(conn)
                table = cur.execute("SELECT to_regclass(%s)", (first,)).fetchone()[0]
                made = None
                if table is not None:
                    made = cur.execute(
                        "SELECT obj_description(%s::regclass, 'pg_class')", (first,)
                    ).fetchone()[0]
                if table is not None and (made or shape(p, 1)) != shape(p):
                    # Tables of an older shape: made anew, and filled from the log again.
                    log.warning("projections.reshaped", projection=p.name, was=made or shape(p, 1))
                    for name in self.tables(p).values():
                        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
                    p.forget()
                    table = None
                if table is None:
                    self._create(cur, p, self.tables(p))
                    # New tables hold nothing: whatever the tracking row said, start at zero.
                    self._set_positions(cur, {p.name: 0})
                else:
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} (projection, position) VALUES (%s, 0) "
                            "ON CONFLICT DO NOTHING"
                        ).format(self._tracking),
                        (p.name,),
                    )
        self._ready = True

    # -- catching up ---------------------------------------------------------------------------

    def catch_up(self, stop: threading.Event | None = None) -> None:
        """Apply pages until every projection is at the log's head (or ``stop`` is set)."""
        self._ensure_setup()
        self._at = None  # start from the positions as they are, whoever moved them
        self._catch_up(stop)

    def close(self) -> None:
        """Release what the runner holds: nothing of its own (the pool is the caller's)."""

    def __enter__(self) -> ProjectionRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Keep every projection current until ``stop`` is set: wake on the log's NOTIFY,
        and poll every ``poll_s`` seconds in case a notification was missed."""
        self._ensure_setup()
        while not stop.is_set():
            try:
                with self._listener() as listener:
                    self._at = None
                    while not stop.is_set():
                        self._catch_up(stop)
                        woken = False
                        for _ in listener.notifies(timeout=poll_s, stop_after=1):
                            woken = True
                        if not woken:
                            self._at = None  # a poll also looks at the positions afresh
                        # Drain the wake-ups that queued meanwhile: one catch-up covers them.
                        for _ in listener.notifies(timeout=0):
                            pass
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                # The server went away or restarted: wait, reconnect, catch up.
                log.warning("projections.connection_lost", error=str(e).strip())
                stop.wait(poll_s)

    def _catch_up(self, stop: threading.Event | None) -> None:
        """Apply pages from where the projections were last seen until a page comes back
        short: it held the log's head when read, and any later event sends a NOTIFY."""
        try:
            while not (stop and stop.is_set()):
                pages = self._read_pages(self._groups())
                if not pages:
                    return
                more = any(len(page) == self.page_size for _, page in pages.values())
                for start, (group, page) in pages.items():
                    at = self._apply(group, start, page)
                    # Another runner or a rebuild moved one: read again from where it is.
                    more = more or any(at[p.name] != page[-1].position for p in group)
                if not more:
                    return
        except BaseException:
            self._at = None
            raise

    # -- rebuilding ----------------------------------------------------------------------------

    def rebuild(self, name: str, progress: Progress | None = None) -> int:
        """Rebuild one projection from zero into shadow tables, then swap them in with its
        position in one transaction; readers see the old tables until then. Returns the
        position reached. ``progress(position, head)`` is called after every page."""
        self._ensure_setup()
        p = self.projections.get(name)
        if p is None:
            raise NotFound(f"no projection {name!r}; known: {', '.join(self.projections)}")
        live, shadow = self.tables(p), self.tables(p, SHADOW)
        builder = type(p)()  # its own memory: the live one may be applying pages meanwhile
        with self._connection() as conn:
            lock = (_SETUP_LOCK, name)
            with _cursor(conn) as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s::int, hashtext(%s))", lock)
                locked = cur.fetchone()
            if not locked or not locked[0]:
                raise Conflict(f"projection {name!r} is already being rebuilt")
            try:
                with conn.transaction(), _cursor(conn) as cur:
                    for table in shadow.values():  # left over by a killed rebuild
                        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
                    self._create(cur, builder, shadow)
                position = 0
                while page := self._read(conn, position, self.page_size):
                    with conn.transaction(), _cursor(conn) as cur:
                        builder.apply(cur, shadow, page)
                    position = page[-1].position
                    if progress:
                        progress(position, max(position, self._head(conn)))
                with conn.transaction(), _cursor(conn) as cur:
                    # Holding the tracking row stops the live runner between its pages.
                    self._lock_positions(cur, [name])
                    while page := self._read(conn, position, self.page_size):
                        builder.apply(cur, shadow, page)
                        position = page[-1].position
                    self._swap(cur, live, shadow)
                    self._set_positions(cur, {name: position})
                if progress:
                    progress(position, position)
            finally:
                _cursor(conn).execute("SELECT pg_advisory_unlock(%s::int, hashtext(%s))", lock)
        log.info("projections.rebuilt", projection=name, position=position)
        return position

    def _create(self, cur: psycopg.Cursor[Any], p: Projection, tables: Tables) -> None:
        """Create a projection's tables, its first table noting their shape."""
        p.create(cur, tables)
        cur.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(tables[p.tables[0]], sql.Literal(shape(p)))
        )

    def _swap(self, cur: psycopg.Cursor[Any], live: Tables, shadow: Tables) -> None:
        for logical, table in live.items():
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            cur.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                    shadow[logical], sql.Identifier(logical)
                )
            )
            # Indexes keep the shadow's names; give them the live ones, so that the
            # next rebuild's shadow can take the same names again.
            indexes = cur.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
                (self.schema, logical),
            ).fetchall()
            for (index,) in indexes:
                if logical + SHADOW in index:
                    cur.execute(
                        sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                            sql.Identifier(self.schema, index),
                            sql.Identifier(index.replace(logical + SHADOW, logical)),
                        )
                    )

    # -- status --------------------------------------------------------------------------------

    def status(self) -> list[ProjectionStatus]:
        """Each projection's position, the log's head, and how far behind it is."""
        self._ensure_setup()
        with self._connection() as conn, _cursor(conn) as cur:
            head = self._head(conn)
            cur.execute(
                sql.SQL(
                    "SELECT projection, position, updated_at FROM {} "
                    "WHERE projection = ANY(%s) ORDER BY projection"
                ).format(self._tracking),
                (list(self.projections),),
            )
            if self.clock is None:
                raise TypeError("ProjectionRunner.status needs the clock it was built with")
            now = self.clock()
            result = []
            for name, position, updated_at in cur.fetchall():
                behind = 0.0
                if position < head:
                    # The age of the oldest event it has not applied: one row, one decode.
                    oldest = self._read(conn, position, 1)
                    if oldest:
                        behind = max(0.0, (now - oldest[0].event.timestamp).total_seconds())
                result.append(
                    ProjectionStatus(name, position, head, head - position, behind, updated_at)
                )
            return result

    # -- the SQL underneath ------------------------------------------------------------------

    def _ensure_setup(self) -> None:
        if not self._ready:
            self.setup()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection() as conn:
            # Every `transaction()` block below is then a real transaction of its own.
            conn.autocommit = True
            yield conn

    @contextmanager
    def _listener(self) -> Iterator[psycopg.Connection[Any]]:
        # A connection of its own: a pooled one would keep listening after it went back.
        with psycopg.connect(
            self.pool.conninfo, **{**(self.pool.kwargs or {}), "autocommit": True}
        ) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            yield conn

    def _positions(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        with _cursor(conn) as cur:
            rows = cur.execute(
                sql.SQL("SELECT projection, position FROM {} WHERE projection = ANY(%s)").format(
                    self._tracking
                ),
                (list(self.projections),),
            ).fetchall()
        return dict(rows)

    def _groups(self) -> dict[int, list[Projection]]:
        """The projections by the position they stand at: as last seen, else as the
        tracking table says."""
        if self._at is None:
            with self._connection() as conn:
                self._at = self._positions(conn)
        groups: dict[int, list[Projection]] = {}
        for name, position in self._at.items():
            groups.setdefault(position, []).append(self.projections[name])
        return groups

    def _read_pages(self, groups: Mapping[int, list[Projection]]) -> Pages:
        """The page after each group's position (a group at the log's head left out):
        projections at the same position share one read and decode of their page."""
        with self._connection() as conn:
            pages = {
                start: (g, self._read(conn, start, self.page_size)) for start, g in groups.items()
            }
        return {start: (group, page) for start, (group, page) in pages.items() if page}

    def _read(self, conn: psycopg.Connection[Any], after: int, limit: int) -> list[LoggedEvent]:
        with _cursor(conn, binary=True) as cur:
            rows = cur.execute(
                sql.SQL(
                    "SELECT notification_id, originator_id, originator_version, topic, state "
                    "FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
                ).format(self._events),
                (after, limit),
            ).fetchall()
        decode = self.decode
        return [LoggedEvent(n, decode(StoredEvent(i, v, t, s))) for n, i, v, t, s in rows]

    def _head(self, conn: psycopg.Connection[Any]) -> int:
        with _cursor(conn) as cur:
            row = cur.execute(
                sql.SQL("SELECT max(notification_id) FROM {}").format(self._events)
            ).fetchone()
        return (row[0] if row else None) or 0

    def _apply(self, group: list[Projection], start: int, page: Page) -> dict[str, int]:
        """Apply a page to the projections standing at ``start`` and move their positions,
        in one transaction; where each of them stands afterwards."""
        at: dict[str, int] = {}
        moved: dict[str, int] = {}
        try:
            with self._connection() as conn, conn.transaction(), _cursor(conn) as cur:
                stamps = self._lock_positions(cur, [p.name for p in group])
                for p in group:
                    stamp = stamps.get(p.name, (0, None))
                    at[p.name] = stamp[0]
                    if stamp[0] < start:
                        continue  # the page does not begin where it stands: read again
                    if stamp != self._written.get(p.name):
                        # Another process wrote since we did (or a rebuild swapped the
                        # tables): what the projection kept in memory may be stale.
                        p.forget()
                    # Another runner may have applied part of the page while we read it.
                    batch = [e for e in page if e.position > stamp[0]] if stamp[0] > start else page
                    if batch:
                        p.apply(cur, self.tables(p), batch)
                        at[p.name] = moved[p.name] = batch[-1].position
                written = self._set_positions(cur, moved) if moved else {}
        except BaseException:
            for p in group:
                self._written.pop(p.name, None)
                p.forget()  # its memory holds changes that were rolled back
            raise
        self._written.update(written)
        if self._at is not None:
            self._at.update(at)
        return at

    def _lock_positions(self, cur: psycopg.Cursor[Any], names: list[str]) -> dict[str, Stamp]:
        """Lock the projections' tracking rows (in name order, so that two runners never
        deadlock); their positions and when they were written.

        The transaction also stops waiting for its commit to reach the disk: a server crash
        may then lose the last pages applied, but their rows and their position together,
        so the runner applies them again (a projection can always be derived anew)."""
        rows = cur.execute(
            sql.SQL(
                "SELECT projection, position, updated_at, "
                "set_config('synchronous_commit', 'off', true) "
                "FROM {} WHERE projection = ANY(%s) ORDER BY projection FOR UPDATE"
            ).format(self._tracking),
            (names,),
        ).fetchall()
        return {name: (position, at) for name, position, at, _ in rows}

    def _set_positions(
        self, cur: psycopg.Cursor[Any], positions: Mapping[str, int]
    ) -> dict[str, Stamp]:
        """Move the projections' positions and announce them on ``projected_channel``
        (delivered when the transaction commits); what was written."""
        rows = cur.execute(
            sql.SQL(
                "INSERT INTO {} (projection, position, updated_at) "
                "SELECT name, position, now() "
                "FROM unnest(%s::text[], %s::bigint[]) AS u(name, position), "
                "(SELECT pg_notify(%s, %s)) AS announced "
                "ON CONFLICT (projection) DO UPDATE "
                "SET position = excluded.position, updated_at = excluded.updated_at "
                "RETURNING projection, position, updated_at"
            ).format(self._tracking),
            (
                list(positions),
                list(positions.values()),
                self.projected_channel,
                msgspec.json.encode(positions).decode(),
            ),
        ).fetchall()
        return {name: (position, at) for name, position, at in rows}


def shape(projection: Projection, version: int | None = None) -> str:
    """The note on a projection's first table that says which shape its tables have: a
    projection whose ``version`` (1 if it has none) changed needs new tables."""
    if version is None:
        version = getattr(projection, "version", 1)
    return f"voxledger projection {projection.name} v{version}"


def projected_channel(schema: str) -> str:
    """The channel on which runners announce, as each transaction commits, the positions
    it moved in this schema: a JSON object of projection name to position."""
    # A channel name is an identifier: at most 63 bytes.
    return f"{schema}.{TRACKING_TABLE}".encode()[:63].decode(errors="ignore")


def _cursor(conn: psycopg.Connection[Any], *, binary: bool = False) -> psycopg.Cursor[Any]:
    # Tuple rows whatever the pool's default (the event store's pool hands out dict rows).
    return conn.cursor(row_factory=tuple_row, binary=binary)
