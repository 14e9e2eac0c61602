"""A database connection of the event loop's own, for the served path's two statements per
message: the chat directory's read and the shared commit.

Run in a worker thread, each of them had to win the GIL back from a busy event loop before
and after its round trip (the loop holds it for up to the 5-ms switch interval each time),
and a served message waited for its commit 23 ms at the median. On an asyncio connection
the loop goes on while the server works, and answers the callers as soon as the rows
arrive. The served webhook, 4 runs of 5 s on a fresh server, alternating with the tree
before: 1,727 and 1,702 -> 2,228 and 2,100 updates/s (medians), 0.55 -> 0.45 ms of server
CPU per update; `voxledger bench --http`: 0.43x -> 0.49x of the no-op.

The connection is made as the datastore's pool makes its own (the same settings and
credentials, autocommit), at the first use on a loop; a loop that ends leaves it to be
closed by the next loop's first use or by `close`. Its statements run one at a time (a
lock of the loop's). Like the pool's callers (`recorder.retried`), a lost connection is
retried on a fresh one, up to ten times, a fifth of a second apart; a database that
refuses new connections fails the call once the connect timeout has passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from eventsourcing.persistence import (
    DatabaseError,
    DataError,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    PersistenceError,
    ProgrammingError,
)
from eventsourcing.postgres import PostgresDatastore

T = TypeVar("T")


class LoopConnection:
    """One connection per running event loop, on the datastore's database."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self._held: _Held | None = None

    async def run(self, work: Callable[[psycopg.AsyncConnection[Any], bool], Awaitable[T]]) -> T:
        """``work(connection, again)``'s result, retried on a fresh connection when one is
        lost. ``again`` is True once an attempt broke after its statement was sent (it may
        have committed: an append looks for its command ids before appending again)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.connect_timeout()
        again = False
        for attempt in range(1, 11):
            try:
                async with self._connection() as conn:
                    return await work(conn, again)
            except (InterfaceError, OperationalError) as e:
                sent = bool(getattr(e, "sent", True))
                if attempt == 10 or (not sent and loop.time() > give_up):
                    raise
                again = again or sent
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    @property
    def busy(self) -> bool:
        """True while a statement of the running loop's holds the connection (or waits)."""
        held = self._held
        return held is not None and held.lock.locked()

    def close(self) -> None:
        """Close the connection, from any thread or loop (libpq's finish needs no loop)."""
        held, self._held = self._held, None
        if held is not None:
            held.close()

    def connect_timeout(self) -> int:
        """The pool's wait for a connection, as libpq's connect timeout (at least 2 s)."""
        return max(2, int(self.datastore.pool.timeout))

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        held = self._held
        loop = asyncio.get_running_loop()
        if held is None or held.loop is not loop:
            if held is not None:  # left by a loop that has ended
                held.close()
            held = self._held = _Held(loop)
        async with held.lock:
            sent = False
            try:
                if held.conn is None or held.conn.closed:
                    held.conn = await self._connect()
                sent = True  # from here on, a failure may come after the server committed
                yield held.conn
            except psycopg.Error as e:
                if held.conn is not None and held.conn.broken:
                    held.close()  # the next call connects afresh
                error = translated(e)
                error.sent = sent  # type: ignore[attr-defined]
                raise error from e
            except BaseException:
                held.close()  # cancelled mid-statement: the connection's state is unknown
                raise

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        pool = self.datastore.pool
        kwargs = dict(pool.kwargs or {})
        kwargs.pop("row_factory", None)  # rows come back as tuples
        get_password = getattr(pool, "get_password_func", None)
        if get_password is not None:
            kwargs["password"] = get_password()
        return await psycopg.AsyncConnection.connect(
            pool.conninfo, autocommit=True, connect_timeout=self.connect_timeout(), **kwargs
        )


class _Held:
    """A loop's connection (made at its first use) and the lock that keeps its statements
    one at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = asyncio.Lock()
        self.conn: psycopg.AsyncConnection[Any] | None = None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.closed:
            conn.pgconn.finish()

    __del__ = close  # an owner dropped with its loop's connection open closes it quietly


def translated(error: psycopg.Error) -> PersistenceError:
    """A psycopg error as the library's own kind, as its ``get_connection`` raises them."""
    for psycopg_class, ours in _TRANSLATED:
        if isinstance(error, psycopg_class):
            return ours(str(error))
    return PersistenceError(str(error))


_TRANSLATED: tuple[tuple[type[psycopg.Error], type[PersistenceError]], ...] = (
    (psycopg.InterfaceError, InterfaceError),
    (psycopg.OperationalError, OperationalError),
    (psycopg.DataError, DataError),
    (psycopg.IntegrityError, IntegrityError),
    (psycopg.InternalError, InternalError),
    (psycopg.ProgrammingError, ProgrammingError),
    (psycopg.NotSupportedError, NotSupportedError),
    (psycopg.DatabaseError, DatabaseError),
)
