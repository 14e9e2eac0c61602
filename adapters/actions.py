"""The action subscriber: runs the actions of every run that ended (completed, cancelled,
expired), once each, from the log and never inside the command that ended the run.

It reads the log like a projection, from a tracking position of its own (a row of
``voxledger_subscribers``), looking only at the events that end a run. For each such run it
asks the Engine which of the run's actions are still due, records the start of an attempt
on the run's stream, runs the action and records how it went. The position moves past a run
only once every action of it succeeded or failed for good.

Exactly once: the record of an action on the run's stream is what decides, not the
position, so a subscriber that stopped anywhere finds on restart what is left to do. One
subscriber at a time runs the actions of a schema: each holds a PostgreSQL advisory lock
while it runs, and any other stands by until that lock is free (a process that dies lets
go of it with its connection).

The policy for what cannot be known: an attempt whose start is recorded with no outcome
was interrupted (the process died while the action ran, or before its outcome was
written), so whether it did its work is unknown. It counts as an attempt, and the action is
tried again, up to ``max_attempts`` attempts in all; each attempt gets the same idempotency
key (``ActionRun.key``), so an action that talks to another system can make a repeat
harmless. An action that raises is tried again at once (after ``retry_wait_s`` times the
attempt's number) until its attempts are used up; then its failure is final.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import msgspec
import psycopg
import structlog
from eventsourcing.utils import get_topic
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool

from ..domain.action_commands import MAX_ATTEMPTS
from ..domain.engine import Engine
from ..domain.errors import VoxledgerError, failure_text
from ..domain.flow import Flow

log = structlog.get_logger("voxledger.actions")

SUBSCRIBERS_TABLE = "voxledger_subscribers"
NAME = "actions"
PAGE_SIZE = 500
_LOCK = 0x766F7861  # "voxa": with the schema's hash, the lock of its action subscriber
# The events that end a run: the subscriber reads these alone.
ENDINGS = (Flow.Completed, Flow.Cancelled, Flow.Expired)


class Tally(msgspec.Struct):
    """What a pass of the subscriber did."""

    runs: int = 0  # ended runs looked at
    attempts: int = 0
    succeeded: int = 0
    failed: int = 0
    position: int = 0  # where it stands in the log afterwards
    standby: bool = False  # another process holds the lock: nothing was done


class ActionStatus(msgspec.Struct, frozen=True):
    """How far the subscriber is behind the log."""

    position: int
    head: int
    behind: int  # events after its position (of every kind)


class ActionSubscriber:
    """Runs the actions of ended runs from the log, each once, recording every attempt on
    the run's stream through the Engine."""

    def __init__(
        self,
        engine: Engine,
        pool: ConnectionPool[Any],
        schema: str,
        *,
        events_table: str,
        erased: Callable[[UUID], bool] = lambda stream_id: False,
        max_attempts: int = MAX_ATTEMPTS,
        retry_wait_s: float = 1.0,
        page_size: int = PAGE_SIZE,
    ) -> None:
        self.engine = engine
        self.erased = erased  # whether a run's personal data was erased
        self.pool = pool
        self.schema = schema
        self.max_attempts = max_attempts
        self.retry_wait_s = retry_wait_s
        self.page_size = page_size
        self.channel = events_table.replace(".", "_")  # the log's NOTIFY channel
        self._events = sql.Identifier(schema, events_table)
        self._tracking = sql.Identifier(schema, SUBSCRIBERS_TABLE)
        self._topics = [get_topic(cls) for cls in ENDINGS]
        self._stop = threading.Event()

    # -- running -------------------------------------------------------------------------------

    def catch_up(self, stop: threading.Event | None = None) -> Tally:
        """Run every action due up to the log's head, then return; a tally with
        ``standby`` if another subscriber holds the lock."""
        self._stop = stop or threading.Event()
        with self._holding() as held:
            if not held:
                return Tally(position=self.status().position, standby=True)
            return self._catch_up()

    def run(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Run actions as runs end, until ``stop`` is set: stand by while another process
        holds the lock, wake on the log's NOTIFY, poll every ``poll_s`` seconds as well."""
        self._stop = stop
        while not stop.is_set():
            try:
                with self._holding(listen=True) as held:
                    if not held:
                        stop.wait(poll_s)
                        continue
                    log.info("actions.running", schema=self.schema)
                    while not stop.is_set():
                        self._catch_up()
                        for _ in held.notifies(timeout=poll_s, stop_after=1):
                            pass
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                log.warning("actions.connection_lost", error=str(error).strip())
                stop.wait(poll_s)
            except VoxledgerError as error:
                # A run whose definition or code this process lacks: it cannot go past it.
                log.error("actions.stuck", error=str(error))
                stop.wait(max(poll_s, 30.0))

    def status(self) -> ActionStatus:
        """Where the subscriber stands in the log."""
        self.setup()
        with self._connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            position = self._position(cur)
            head = self._head(cur)
        return ActionStatus(position, head, max(0, head - position))

    def setup(self) -> None:
        """Create the tracking table and this subscriber's row (idempotent)."""
        with self._connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (subscriber text PRIMARY KEY, "
                    "position bigint NOT NULL, updated_at timestamptz)"
                ).format(self._tracking)
            )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (subscriber, position) VALUES (%s, 0) ON CONFLICT DO NOTHING"
                ).format(self._tracking),
                (NAME,),
            )

    # -- one pass ------------------------------------------------------------------------------

    def _catch_up(self) -> Tally:
        tally = Tally()
        with self._connection() as conn, conn.cursor(row_factory=tuple_row) as cur:
            tally.position = self._position(cur)
        while not self._stop.is_set():
            head, ended = self._page(tally.position)
            for position, flow_id in ended:
                if self._stop.is_set():
                    return tally
                self._run_actions(flow_id, tally)
                tally.position = position
                self._move_to(position)
            if len(ended) < self.page_size:
                if head > tally.position:  # nothing else to do up to the head read
                    tally.position = head
                    self._move_to(head)
                return tally
        return tally

    def _run_actions(self, flow_id: UUID, tally: Tally) -> None:
        """Every action due of one ended run, each until it succeeds or its attempts end."""
        tally.runs += 1
        if self.erased(flow_id):
            # Its answers are gone: an action would get "[erased]" for them, and what it
            # did could not be recorded (errors are personal data). Nothing runs.
            log.info("actions.skipped_erased", flow_id=str(flow_id))
            return
        for action in self.engine.actions_due(flow_id):
            while not self._stop.is_set():
                run = self.engine.start_action(flow_id, action.name, max_attempts=self.max_attempts)
                if run is None:
                    break
                tally.attempts += 1
                try:
                    assert action.function is not None  # checked when the definition was built
                    result = action.function(run)
                except Exception as error:  # the user's code: recorded, never raised further
                    tally.failed += 1
                    self.engine.finish_action(
                        flow_id,
                        action.name,
                        run.attempt,
                        error=failure_text(error),
                        max_attempts=self.max_attempts,
                    )
                    log.warning(
                        "actions.failed",
                        flow_id=str(flow_id),
                        action=action.name,
                        attempt=run.attempt,
                        error=failure_text(error),
                    )
                    self._stop.wait(self.retry_wait_s * run.attempt)
                    continue
                self.engine.finish_action(
                    flow_id, action.name, run.attempt, result=result, max_attempts=self.max_attempts
                )
                tally.succeeded += 1
                break

    # -- the SQL underneath --------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        with self.pool.connection() as conn:
            conn.autocommit = True
            yield conn

    @contextmanager
    def _holding(self, *, listen: bool = False) -> Iterator[Any]:
        """A connection of its own holding this schema's action lock (None if another
        process holds it), listening to the log's NOTIFY with ``listen``."""
        self.setup()
        settings = {**(self.pool.kwargs or {}), "autocommit": True, "row_factory": tuple_row}
        with psycopg.connect(self.pool.conninfo, **settings) as conn:
            locked = conn.execute(
                "SELECT pg_try_advisory_lock(%s::int, hashtext(%s))", (_LOCK, self.schema)
            ).fetchone()
            if not locked or not locked[0]:
                yield None
                return
            if listen:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            yield conn  # the lock goes with the connection

    def _page(self, after: int) -> tuple[int, list[tuple[int, UUID]]]:
        """The log's head and, up to it, the next run-ending events after ``after``. Ids
        commit in order (the log's appends hold one lock in turn), so every id up to the head
        read here is written for good."""
        with (
            self._connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=tuple_row) as cur,
        ):
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            head = self._head(cur)
            cur.execute(
                sql.SQL(
                    "SELECT notification_id, originator_id FROM {} WHERE notification_id > %s "
                    "AND notification_id <= %s AND topic = ANY(%s) "
                    "ORDER BY notification_id LIMIT %s"
                ).format(self._events),
                (after, head, self._topics, self.page_size),
            )
            return head, [(position, flow_id) for position, flow_id in cur.fetchall()]

    def _head(self, cur: psycopg.Cursor[Any]) -> int:
        row = cur.execute(
            sql.SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(self._events)
        ).fetchone()
        return int(row[0]) if row else 0

    def _position(self, cur: psycopg.Cursor[Any]) -> int:
        row = cur.execute(
            sql.SQL("SELECT position FROM {} WHERE subscriber = %s").format(self._tracking),
            (NAME,),
        ).fetchone()
        return int(row[0]) if row else 0

    def _move_to(self, position: int) -> None:
        with self._connection() as conn:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET position = greatest(position, %s), updated_at = now() "
                    "WHERE subscriber = %s"
                ).format(self._tracking),
                (position, NAME),
            )
