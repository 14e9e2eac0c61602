"""The PostgreSQL recorder, extended where the library's default is slow or stalls.

Appends: the library sends a save as a pipelined transaction of five statements (lock
timeout, table lock, notify, insert, commit), several round trips in practice, and with
thousands of events in one save the pipeline stalls for good. Here a save is one statement:
a function that takes a lock of the log's appends (so notification ids commit in order and a
reader tailing the log never skips a row that commits late), sends the same NOTIFY and
inserts every event. The lock is a transaction-level advisory lock named after the table,
not the library's EXCLUSIVE table lock: that one conflicts with the lock autovacuum holds,
which PostgreSQL cancels only after deadlock_timeout, so as the log grew every append
stalled for a second now and then and the vacuum never finished (`voxledger bench --http`:
a p99 of 1 s every few runs; `tests/test_log_order.py`). The function is named after its
own table, so two applications in one schema never share it (the flaw of the library's
unsafe POSTGRES_ENABLE_DB_FUNCTIONS option), and it runs with its owner's rights, so the
engine can run as a role that may append events through it but can neither update nor
delete them. A twin of it takes one event as scalars (the commonest save), and appends go
through one connection kept for them (in the event loop, an asyncio connection of the
loop's own: `append_async`).

Every save carries a command id, stored with each of its events. When an append's outcome is
unknown (the connection broke after the statement was sent: the commit may have happened),
the retry asks the append function to look for that id first, under the same lock: if
the first attempt committed, its positions come back and nothing is appended twice. A save
that is a stream's first use of its data key inserts the key in the same transaction, so a
refused save leaves no key behind.

Reads: rows come back as tuples rather than dicts, which halves the cost of fetching a
long stream.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar
from uuid import UUID, uuid4

import psycopg
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier, Literal
from psycopg_pool import PoolTimeout

from .loop_connection import LoopConnection, translated

T = TypeVar("T")


def retried(method: Callable[..., T]) -> Callable[..., T]:
    """Retry a call whose connection was lost (the pool hands out a fresh one), but not a
    wait for a free connection that timed out: waiting again would only multiply the
    caller's wait, and an exhausted pool should say so at once."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> T:
        for attempt in range(1, 11):
            try:
                return method(*args, **kwargs)
            except (InterfaceError, OperationalError) as e:
                if isinstance(e.__cause__, PoolTimeout) or attempt == 10:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    return call


class TupleReads:
    """Reads one stream's rows as tuples, in binary (bytea without hex decoding)."""

    datastore: PostgresDatastore
    events_table_name: str

    @functools.cached_property
    def _select_stream(self) -> str:
        # Plain text, rendered once: psycopg then parses and prepares it once per connection.
        return (
            SQL("SELECT originator_version, topic, state FROM {}.{} WHERE originator_id = %s")
            .format(Identifier(self.datastore.schema), Identifier(self.events_table_name))
            .as_string(None)
        )

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """One stream's events in version order (or reversed), optionally a slice of it."""
        rows = self.select_rows(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        return [StoredEvent(originator_id, version, topic, state) for version, topic, state in rows]

    @retried
    def select_rows(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[tuple[int, str, bytes]]:
        """``select_events`` as bare (version, topic, state) rows, for replays."""
        statement = self._select_stream
        params: list[Any] = [originator_id]
        if gt is not None:
            statement += " AND originator_version > %s"
            params.append(gt)
        if lte is not None:
            statement += " AND originator_version <= %s"
            params.append(lte)
        statement += " ORDER BY originator_version DESC" if desc else " ORDER BY originator_version"
        if limit is not None:
            statement += " LIMIT %s"
            params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
            c.execute(statement, params, prepare=True, binary=True)  # bytea without hex
            return c.fetchall()

    async def select_behind_async(
        self, streams: Sequence[tuple[UUID, int]]
    ) -> set[tuple[UUID, int]]:
        """Which of these (stream, version) pairs the log holds a later version of, in one
        statement. Read in the event loop, on a connection of its own (serving processes
        that share conversations ask it of the copies their commands decided on)."""
        ids, versions = [s for s, _ in streams], [v for _, v in streams]
        statement = self._select_behind

        async def read(conn: psycopg.AsyncConnection[Any], _again: bool) -> list[Any]:
            async with conn.cursor(row_factory=tuple_row) as c:
                await c.execute(statement, (ids, versions), prepare=True, binary=True)
                return await c.fetchall()

        return {(row[0], row[1]) for row in await self._loop_reader.run(read)}

    @functools.cached_property
    def _loop_reader(self) -> LoopConnection:
        return LoopConnection(self.datastore)

    @functools.cached_property
    def _select_behind(self) -> str:
        return (
            # Each stream's last version found on its own, at the end of its range of the
            # primary key (a subquery per stream, which the planner keeps as one). A join
            # of the streams with their later events made the planner, counting a
            # conversation's many events, hash the whole events table: 7 ms per statement
            # at 47,000 events, growing with the log (two workers spent 0.4 ms of
            # PostgreSQL's CPU per message in a fresh schema, 1.0 ms two runs later); an
            # EXISTS or a LIMIT 1 lets it pick a sequential scan that stops at the first
            # later event, and scans the whole table for a copy that is current.
            SQL(
                "SELECT s.id, s.version FROM unnest(%s::{}[], %s::bigint[]) AS s(id, version) "
                "WHERE (SELECT max(e.originator_version) FROM {}.{} e "
                "WHERE e.originator_id = s.id) > s.version"
            )
            .format(
                SQL(self.datastore.originator_id_type),
                Identifier(self.datastore.schema),
                Identifier(self.events_table_name),
            )
            .as_string(None)
        )


def _columns(stored_events: Sequence[StoredEvent]) -> tuple[list[Any], ...]:
    """Events as four plain arrays: psycopg sends them in binary far faster than the
    library's composite rows (whose text form runs a regex over every byte of state)."""
    return (
        [e.originator_id for e in stored_events],
        [e.originator_version for e in stored_events],
        [e.topic for e in stored_events],
        [e.state for e in stored_events],
    )


class SnapshotRecorder(TupleReads, PostgresAggregateRecorder):
    """The library's snapshot recorder with fast reads and writes (a snapshot can be large)."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "snapshots"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_statement = (
            SQL(
                "INSERT INTO {}.{} (originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(%b::{}[], %b::bigint[], %b::text[], %b::bytea[]) "
                # A snapshot is a cache of what the events say: one already taken at this
                # version says the same.
                "ON CONFLICT DO NOTHING"
            )
            .format(
                Identifier(datastore.schema),
                Identifier(events_table_name),
                SQL(datastore.originator_id_type),
            )
            .as_string(None)
        )

    @retried
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        """Insert snapshots in one statement, in binary."""
        if stored_events:
            with self.datastore.get_connection() as conn:
                conn.execute(self.insert_statement, _columns(stored_events), prepare=True)


# An append function: it takes the appends' advisory lock (so notification ids commit in
# order), notifies the log's listeners and inserts. It runs with its owner's rights: the
# engine's own role needs only EXECUTE here and SELECT on the table, never UPDATE, DELETE or
# a lock of its own.
# With ``resolve`` (a retry after an unknown outcome) it first looks, under the lock, for
# the command's events: the lock waits out a first attempt still committing, so the answer
# is final. A stream's new data key is inserted in the same transaction as its events.
_APPEND_FUNCTION = SQL(
    "CREATE OR REPLACE FUNCTION {schema}.{function}({params}) "
    "RETURNS {returns} LANGUAGE plpgsql "
    "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$ {declare}BEGIN "
    "PERFORM set_config('lock_timeout', {lock_timeout}, true); "
    "PERFORM pg_advisory_xact_lock(hashtext('voxledger append'), hashtext({qualified})); "
    "{resolve}"
    "NOTIFY {channel}; "
    "{keys}"
    "{insert}"
    "END $$"
)
# The data keys' table (`KeyRing`): the append functions insert a stream's new key into it,
# so the recorder makes it with its events and works on its own (as the library's own
# recorder contract tests use it: `tests/test_recorder_contract.py`).
KEYS_TABLE = SQL(
    "CREATE TABLE IF NOT EXISTS {table} ("
    "stream_id uuid PRIMARY KEY, key bytea, "
    "created_at timestamptz NOT NULL DEFAULT now(), erased_at timestamptz, "
    # A stream has a key or has been erased, never both, never neither.
    "CHECK ((key IS NULL) = (erased_at IS NOT NULL)))"
)
# The signatures the append functions had before command ids: dropped on start, so that
# each name has one function (GRANT ... ON FUNCTION name must find exactly one).
_OLD_SIGNATURES = (
    "{id_type}[], bigint[], text[], bytea[]",
    "{id_type}, bigint, text, bytea",
)


class Append(NamedTuple):
    """One save as the recorder appends it: its events, the id of the command that made
    them, and the data keys first used by them (stream id, key), inserted with them."""

    events: Sequence[StoredEvent]
    command_id: UUID
    keys: Sequence[tuple[UUID, bytes]] = ()


class Recorder(TupleReads, PostgresApplicationRecorder):
    """The library's application recorder with one-round-trip appends, command ids and
    tuple reads."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema, table = Identifier(datastore.schema), Identifier(events_table_name)
        # The key ring's table beside the events (EventStore.default_key_ring names it so).
        self.keys_table_name = f"{events_table_name.removesuffix('_events')}_keys"
        id_type = SQL(datastore.originator_id_type)
        names = {
            "schema": schema,
            "table": table,
            "keys_table": Identifier(self.keys_table_name),
            "id_type": id_type,
            "lock_timeout": Literal(f"{datastore.lock_timeout}s"),
            "qualified": Literal(f"{datastore.schema}.{events_table_name}"),
            "channel": Identifier(self.channel_name),
        }
        self.sql_create_statements.append(
            KEYS_TABLE.format(table=Identifier(datastore.schema, self.keys_table_name))
        )
        # Tables made before command ids get the column (NULL for their old rows).
        self.sql_create_statements += [
            SQL("ALTER TABLE {schema}.{table} ADD COLUMN IF NOT EXISTS command_id uuid").format(
                **names
            ),
            SQL(
                "CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (command_id) "
                "WHERE command_id IS NOT NULL"
            ).format(index=Identifier(f"{events_table_name}_command_idx"), **names),
        ]
        # Many events as arrays, and (the commonest save) one event as scalars, which cost
        # less to send and to insert.
        many = Identifier(f"{events_table_name}_append")
        one = Identifier(f"{events_table_name}_append_one")
        for function, old in zip((many, one), _OLD_SIGNATURES, strict=True):
            self.sql_create_statements.append(
                SQL("DROP FUNCTION IF EXISTS {}.{}(" + old + ")").format(
                    schema, function, id_type=id_type
                )
            )
        self.sql_create_statements += [
            _APPEND_FUNCTION.format(
                function=many,
                params=SQL(
                    "ids {id_type}[], versions bigint[], topics text[], states bytea[], "
                    "commands uuid[], key_streams uuid[], key_values bytea[], resolve boolean"
                ).format(**names),
                returns=SQL("SETOF bigint"),
                declare=SQL(""),
                resolve=SQL(
                    "IF resolve THEN RETURN QUERY SELECT e.notification_id "
                    "FROM {schema}.{table} e WHERE e.command_id = ANY(commands) "
                    "ORDER BY e.notification_id; "
                    "IF FOUND THEN RETURN; END IF; END IF; "
                ).format(**names),
                keys=SQL(
                    "INSERT INTO {schema}.{keys_table} (stream_id, key) "
                    "SELECT * FROM unnest(key_streams, key_values); "
                ).format(**names),
                insert=SQL(
                    "RETURN QUERY INSERT INTO {schema}.{table} "
                    "(originator_id, originator_version, topic, state, command_id) "
                    "SELECT * FROM unnest(ids, versions, topics, states, commands) "
                    "RETURNING notification_id; "
                ).format(**names),
                **names,
            ),
            _APPEND_FUNCTION.format(
                function=one,
                params=SQL(
                    "new_id {id_type}, new_version bigint, new_topic text, new_state bytea, "
                    "new_command uuid, key_stream uuid, key_value bytea, resolve boolean"
                ).format(**names),
                returns=SQL("bigint"),
                declare=SQL("DECLARE position bigint; "),
                resolve=SQL(
                    "IF resolve THEN SELECT e.notification_id INTO position "
                    "FROM {schema}.{table} e WHERE e.command_id = new_command; "
                    "IF FOUND THEN RETURN position; END IF; END IF; "
                ).format(**names),
                keys=SQL(
                    "IF key_stream IS NOT NULL THEN "
                    "INSERT INTO {schema}.{keys_table} (stream_id, key) "
                    "VALUES (key_stream, key_value); END IF; "
                ).format(**names),
                insert=SQL(
                    "INSERT INTO {schema}.{table} "
                    "(originator_id, originator_version, topic, state, command_id) "
                    "VALUES (new_id, new_version, new_topic, new_state, new_command) "
                    "RETURNING notification_id INTO position; RETURN position; "
                ).format(**names),
                **names,
            ),
        ]
        # Rendered once: a composed statement is re-rendered on every execute, which costs
        # more than a third of the client's time per append.
        self.append_statement = (
            SQL(
                "SELECT * FROM {}.{}(%b::{}[], %b::bigint[], %b::text[], %b::bytea[], "
                "%b::uuid[], %b::uuid[], %b::bytea[], %b::boolean)"
            )
            .format(schema, many, id_type)
            .as_string(None)
        )
        self.append_one_statement = (
            SQL(
                "SELECT {}.{}(%b::{}, %b::bigint, %b::text, %b::bytea, %b::uuid, %b::uuid, "
                "%b::bytea, %b::boolean)"
            )
            .format(schema, one, id_type)
            .as_string(None)
        )
        self._appender: psycopg.Connection[Any] | None = None
        self._appender_lock = threading.Lock()
        # The event loop's appends: a connection of that loop's own, and a second for an
        # append that comes while the first waits (two shared commits in flight: see
        # `AsyncEngine`). The appends still commit one at a time, in the append's lock.
        self._loop_appender = LoopConnection(datastore)
        self._loop_appender_beside = LoopConnection(datastore)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Append events atomically, in commit order, returning their notification ids
        (the library's entry point: one save, with a command id of its own)."""
        if not stored_events:
            return []
        return self.append([Append(stored_events, uuid4())])

    def append(self, saves: Sequence[Append]) -> list[int]:
        """Append saves in one transaction, returning their events' notification ids in
        order. A lost connection is retried; after one whose outcome is unknown, the
        retry first finds the saves' command ids if that attempt committed after all."""
        resolve = False
        for attempt in range(1, 11):
            try:
                return self._append(saves, resolve=resolve)
            except (InterfaceError, OperationalError) as e:
                if isinstance(e.__cause__, PoolTimeout) or attempt == 10:
                    raise
                # The statement may have reached the server and committed before the
                # answer was lost: from now on, look before appending again.
                resolve = resolve or bool(getattr(e, "sent", True))
                time.sleep(0.2)
        raise AssertionError("unreachable")

    async def append_async(self, saves: Sequence[Append]) -> list[int]:
        """`append` for the event loop: the same statement, retries and outcome, on the
        loop's own connection (`LoopConnection`), with no worker thread."""
        statement, params = self._append_params(saves, False)
        if statement is None:
            return []

        async def append(conn: psycopg.AsyncConnection[Any], again: bool) -> list[int]:
            # After an attempt that may have committed, look for the command ids first.
            sent = (*params[:-1], True) if again else params
            async with conn.cursor(row_factory=tuple_row) as c:
                await c.execute(statement, sent, prepare=True, binary=True)
                return [row[0] for row in await c.fetchall()]

        appender = self._loop_appender
        if appender.busy:
            appender = self._loop_appender_beside
        return await appender.run(append)

    def _append(self, saves: Sequence[Append], *, resolve: bool) -> list[int]:
        statement, params = self._append_params(saves, resolve)
        if statement is None:
            return []
        with self._appending() as conn, conn.cursor(row_factory=tuple_row) as c:
            c.execute(statement, params, prepare=True, binary=True)
            return [row[0] for row in c.fetchall()]

    def _append_params(
        self, saves: Sequence[Append], resolve: bool
    ) -> tuple[str | None, tuple[Any, ...]]:
        """The append statement for these saves and its parameters (None: nothing to do)."""
        events = [e for save in saves for e in save.events]
        if not events:
            return None, ()
        keys = [key for save in saves for key in save.keys]
        if len(events) == 1 and len(keys) <= 1:
            e, save = events[0], next(s for s in saves if s.events)
            key_stream, key = keys[0] if keys else (None, None)
            params = (
                *(e.originator_id, e.originator_version, e.topic, e.state),
                *(save.command_id, key_stream, key, resolve),
            )
            return self.append_one_statement, params
        commands = [save.command_id for save in saves for _ in save.events]
        params = (
            *_columns(events),
            commands,
            [stream for stream, _ in keys],
            [key for _, key in keys],
            resolve,
        )
        return self.append_statement, params

    @retried
    def clashes(self, saves: Sequence[Append]) -> set[int]:
        """Which of these saves would append a version its stream already has (it lost a
        race): one read for the whole batch, instead of a commit per save to find out."""
        ids = [e.originator_id for save in saves for e in save.events]
        versions = [e.originator_version for save in saves for e in save.events]
        statement = SQL(
            "SELECT originator_id, originator_version FROM {}.{} "
            "WHERE (originator_id, originator_version) IN "
            "(SELECT * FROM unnest(%s::{}[], %s::bigint[]))"
        ).format(
            Identifier(self.datastore.schema),
            Identifier(self.events_table_name),
            SQL(self.datastore.originator_id_type),
        )
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
            c.execute(statement, (ids, versions))
            taken = set(c.fetchall())
        return {
            k
            for k, save in enumerate(saves)
            if any((e.originator_id, e.originator_version) in taken for e in save.events)
        }

    @contextmanager
    def _appending(self) -> Iterator[psycopg.Connection[Any]]:
        """The one connection appends go through. Appends are serial anyway (the appends'
        lock), and the pool hands its connections out in turn: a connection of their own
        means every append finds a warm server process, which saves a sixth of its time."""
        with self._appender_lock:
            conn = self._appender
            sent = False
            try:
                if conn is None:
                    # Opened as the library's get_connection opens it: waiting for the
                    # pool to fill only if asked to (a pool that times out so is closed).
                    timeout = self.datastore.pool_open_timeout
                    self.datastore.pool.open(timeout is not None, timeout or 30.0)
                    conn = self._appender = self.datastore.pool.getconn()
                sent = True  # from here on, a failure may come after the server committed
                yield conn
            except psycopg.Error as e:
                if conn is not None and (conn.closed or conn.broken):
                    self._release_thread_appender()  # the next append gets a fresh one
                error = translated(e)
                error.sent = sent  # type: ignore[attr-defined]
                raise error from e

    def release_appender(self) -> None:
        """Give the appenders' connection back to the pool (before the pool closes), and
        close the event loop's."""
        self._release_thread_appender()
        self._loop_appender.close()
        self._loop_appender_beside.close()
        if "_loop_reader" in vars(self):
            self._loop_reader.close()

    def _release_thread_appender(self) -> None:
        conn, self._appender = self._appender, None
        if conn is not None:
            self.datastore.pool.putconn(conn)
