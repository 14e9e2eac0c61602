"""The delivery worker: sends what the outbox holds, in order per chat, and records how each
delivery went.

It tails the log like a projection: the `outbox` projection (caught up by the worker itself,
woken by the log's NOTIFY, or at once by the process that recorded a reply) says which
conversations have outbound messages pending; the conversation itself says what they are,
in the order they were queued. One conversation's messages go one at a time, so a chat
reads them in that order; many conversations are served at once.

Each outcome is an event, recorded through the Engine in a save of its own: delivered (with
the platform's message ids; a long text's parts one by one), failed for good (the platform
refused it: 400, 403, a closed 24-hour window; or it kept failing), or failed for now
(recorded, then tried again after a growing pause). A 429 is waited out as the platform
says; token buckets per chat and per channel keep the worker within the platforms' limits
before it gets there.

After a crash (SIGKILL) the next worker sends what has no recorded outcome. The platforms
offer no idempotency key, so delivery is at least once: what can be sent twice is what was
in flight when the process died (at most one part of one message per conversation being
served), because each outcome is recorded as soon as the platform answers. A worker told
to stop (SIGTERM) starts nothing new but finishes the sends under way and records them.

One worker delivers per database schema at a time (an advisory lock held on a connection of
its own): `voxledger serve` and `voxledger deliver` may both run, and the second waits.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import msgspec
import psycopg
import structlog
from psycopg import sql

from ...domain.conversation import Outbound
from ...domain.outbox_commands import Pending
from ..store.mapper import ERASED_TEXT
from .delivery_errors import Rejected, RetryAfter, Transient

if TYPE_CHECKING:
    from ..async_engine import AsyncEngine

log = structlog.get_logger("voxledger.delivery")

Sleep = Callable[[float], Awaitable[None]]


class Part(msgspec.Struct, frozen=True):
    """One call of a delivery: a message (or the part of a long one) or an action."""

    kind: str  # what the sender does: text, buttons, list, template, acknowledge, close
    text: str = ""
    choices: tuple[str, ...] = ()


class Sender(Protocol):
    """How one channel delivers outbound messages (telegram_sender.py, whatsapp_sender.py)."""

    channel: str

    def plan(self, item: Outbound, pending: Pending, now: datetime) -> list[Part]:
        """The calls that deliver the item, in order (none: nothing to do on this channel)."""
        ...

    async def send(self, item: Outbound, part: Part, first: bool) -> str | None:
        """Make one call; the platform's id of the message it made, if any. Raises the
        delivery errors (RetryAfter, Transient, Rejected)."""
        ...

    def counts(self, part: Part) -> bool:
        """Whether the call counts against the platform's message limits."""
        ...

    def group(self, item: Outbound) -> bool:
        """Whether the chat is one of many people (a tighter limit applies)."""
        ...

    async def aclose(self) -> None:
        """Close the connections the sender holds."""
        ...


class Rate(msgspec.Struct, frozen=True):
    """So many calls per so many seconds, with bursts of up to ``burst``."""

    calls: float
    per_s: float
    burst: float = 1.0


class Limits(msgspec.Struct, frozen=True):
    """A platform's message limits: per chat, per chat of many people, for the whole bot."""

    chat: Rate
    group: Rate
    channel: Rate


# Telegram: about one message a second in a chat (short bursts pass), twenty a minute in a
# group, about thirty a second in all.
TELEGRAM_LIMITS = Limits(
    chat=Rate(1, 1.0, burst=3), group=Rate(20, 60.0, burst=3), channel=Rate(30, 1.0, burst=30)
)
# WhatsApp Cloud API: 80 messages a second per number; to one customer, bursts of up to 45,
# then about one every six seconds.
WHATSAPP_LIMITS = Limits(
    chat=Rate(1, 6.0, burst=45), group=Rate(1, 6.0, burst=45), channel=Rate(80, 1.0, burst=80)
)
LIMITS = {"telegram": TELEGRAM_LIMITS, "whatsapp": WHATSAPP_LIMITS}


class TokenBucket:
    """Calls allowed now and over time: ``rate`` a second, up to ``burst`` saved up."""

    def __init__(self, rate: Rate, clock: Callable[[], float]) -> None:
        self.per_call_s = rate.per_s / rate.calls
        self.burst = rate.burst
        self.clock = clock
        self.tokens = rate.burst
        self.last = clock()

    def delay(self) -> float:
        """Seconds until a call is allowed (0: now)."""
        self._refill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.per_call_s

    def take(self) -> None:
        """Spend one call."""
        self._refill()
        self.tokens -= 1

    def hold(self, seconds: float) -> None:
        """The platform said to wait: no call before ``seconds`` from now."""
        self._refill()
        self.tokens = min(self.tokens, 1 - seconds / self.per_call_s)

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) / self.per_call_s)
        self.last = now


class Leadership:
    """One delivery worker per schema: a session advisory lock on a connection of its own
    (a killed worker's lock goes with its connection)."""

    def __init__(self, conninfo: str, kwargs: Mapping[str, Any], schema: str) -> None:
        self.conninfo = conninfo
        self.kwargs = {k: v for k, v in kwargs.items() if k not in ("row_factory",)}
        self.schema = schema
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> bool:
        """Take the lead if no other worker has it (True), or check it is still held."""
        try:
            if self._conn is not None and not self._conn.closed:
                self._conn.execute("SELECT 1")
                return True
            self.release()
            conn = psycopg.connect(self.conninfo, **{**self.kwargs, "autocommit": True})
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtext('voxledger delivery'), hashtext(%s))",
                (self.schema,),
            ).fetchone()
            if row and row[0]:
                self._conn = conn
                return True
            conn.close()
        except psycopg.Error as e:
            log.warning("delivery.lead_lost", error=str(e).strip().splitlines()[0])
            self.release()
        return False

    def release(self) -> None:
        """Give the lead up (closing the connection drops the lock)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


class DeliveryWorker:
    """Sends the pending outbound messages of every conversation, records the outcomes.

    ``pending()`` (blocking) brings the outbox projection up to date and says which
    conversations have something to send on which channel; ``engine`` records outcomes;
    ``senders`` deliver per channel; ``clock`` and ``sleep`` measure and wait (seconds; a
    test's own time); ``now`` is the engine's clock (for time windows such as WhatsApp's)."""

    def __init__(
        self,
        engine: AsyncEngine,
        pending: Callable[[list[str]], list[tuple[UUID, str]]],
        senders: Mapping[str, Sender],
        *,
        now: Callable[[], datetime],
        clock: Callable[[], float],
        sleep: Sleep = anyio.sleep,
        limits: Mapping[str, Limits] | None = None,
        concurrency: int = 16,
        max_attempts: int = 10,
        backoff_s: float = 1.0,
        backoff_cap_s: float = 300.0,
        poll_s: float = 2.0,
        listen: Listen | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.engine = engine
        self.pending = pending
        self.senders = dict(senders)
        self.now = now
        self.clock = clock
        self.sleep = sleep
        self.limits = {**LIMITS, **(limits or {})}
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.poll_s = poll_s
        self.listen = listen
        self.leadership = leadership
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._busy: set[UUID] = set()
        self._hot: set[UUID] = set()
        self._woken: anyio.Event | None = None
        self.delivered = 0  # outbound messages delivered by this worker (for logs and tests)
        self.failed = 0

    # -- running -------------------------------------------------------------------------------

    def wake(self, conversation_id: UUID | None = None) -> None:
        """Something was queued (in this conversation): deliver it now. Call it from the
        worker's event loop."""
        if conversation_id is not None:
            self._hot.add(conversation_id)
        if self._woken is not None:
            self._woken.set()

    async def run(self, stopping: anyio.Event) -> None:
        """Deliver until ``stopping`` is set: catch up, serve every conversation with
        something pending, then wait for a wake-up (or poll)."""
        token = anyio.lowlevel.current_token()
        stop_listening = threading.Event()
        try:
            async with anyio.create_task_group() as tasks:
                if self.listen is not None:
                    notify = self._notifier(token)
                    tasks.start_soon(self._listen, stop_listening, notify)
                tasks.start_soon(self._until, stopping, tasks.cancel_scope, stop_listening)
                limiter = anyio.CapacityLimiter(self.concurrency)
                while not stopping.is_set():
                    self._woken = anyio.Event()
                    try:
                        if await self.lead():
                            await self._serve(tasks, limiter)
                    except Exception as e:  # the database away, say: try again next time
                        log.warning("delivery.pass_failed", error=str(e).strip()[:500])
                    with anyio.move_on_after(self.poll_s):
                        await self._woken.wait()
        finally:
            stop_listening.set()  # its thread ends within a second, even when cancelled
            if self.leadership is not None:
                self.leadership.release()

    async def drain(self) -> int:
        """Deliver everything pending now and what that queues, then return: how many
        outbound messages were delivered (for `voxledger deliver --once` and tests)."""
        before = self.delivered
        limiter = anyio.CapacityLimiter(self.concurrency)
        while True:
            ended = self.delivered + self.failed
            async with anyio.create_task_group() as tasks:
                served = await self._serve(tasks, limiter)
            if not served or self.delivered + self.failed == ended:
                return self.delivered - before

    async def _serve(self, tasks: anyio.abc.TaskGroup, limiter: anyio.CapacityLimiter) -> int:
        """Start a task for each conversation with something pending that none serves."""
        hot, self._hot = self._hot, set()
        channels = sorted(self.senders)
        found = await anyio.to_thread.run_sync(self.pending, channels)
        chosen = list(dict.fromkeys([*hot, *(cid for cid, _ in found)]))
        started = 0
        for conversation_id in chosen:
            if conversation_id not in self._busy:
                self._busy.add(conversation_id)
                tasks.start_soon(self._serve_conversation, conversation_id, limiter)
                started += 1
        return started

    async def lead(self) -> bool:
        """Take (or keep) the lead of delivery in this schema; False while another worker
        has it."""
        if self.leadership is None:
            return True
        return await anyio.to_thread.run_sync(self.leadership.acquire)

    async def _until(
        self, stopping: anyio.Event, scope: anyio.CancelScope, listening: threading.Event
    ) -> None:
        await stopping.wait()
        listening.set()
        if self._woken is not None:
            self._woken.set()
        scope.cancel()

    def _notifier(self, token: Any) -> Callable[[], None]:
        def notify() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                anyio.from_thread.run_sync(self.wake, token=token)

        return notify

    async def _listen(self, stop: threading.Event, notify: Callable[[], None]) -> None:
        assert self.listen is not None
        await anyio.to_thread.run_sync(self.listen, stop, notify, abandon_on_cancel=True)

    # -- one conversation -----------------------------------------------------------------------

    async def _serve_conversation(
        self, conversation_id: UUID, limiter: anyio.CapacityLimiter
    ) -> None:
        try:
            async with limiter:
                while True:
                    pending: Pending = await self.engine.pending_outbound(conversation_id)
                    items = [i for i in pending.items if i.channel in self.senders]
                    if not items:
                        return
                    for item in items:
                        await self._deliver(conversation_id, item, pending)
        except Exception:
            log.exception("delivery.failed", conversation_id=str(conversation_id))
        finally:
            self._busy.discard(conversation_id)

    async def _deliver(self, conversation_id: UUID, item: Outbound, pending: Pending) -> None:
        """Deliver one outbound message to the end: every part, or a recorded failure."""
        sender = self.senders[item.channel]
        if item.address.to == ERASED_TEXT:
            # Erased after it was queued: its address is gone, and so is any reason to send.
            await self._failed(conversation_id, item, "the conversation was erased", None, True)
            return
        try:
            parts = sender.plan(item, pending, self.now())
        except Rejected as refused:
            await self._failed(conversation_id, item, refused.description, refused.code, True)
            return
        attempts = item.attempts
        done = len(item.sent_parts)
        if not parts:
            await self._outcome(conversation_id, item, [], complete=True)
            return
        for index in range(done, len(parts)):
            part = parts[index]
            while True:
                if sender.counts(part):
                    await self._admit(sender, item)
                try:
                    # A send that began ends, and its outcome is recorded, even when the
                    # worker is told to stop (bounded by the client's own timeouts): only a
                    # crash leaves a part sent and unrecorded.
                    with anyio.CancelScope(shield=True):
                        platform_id = await sender.send(item, part, index == 0)
                except RetryAfter as wait:
                    self._bucket(item, "chat").hold(wait.seconds)
                    log.info("delivery.rate_limited", retry_after=wait.seconds, item=item.id)
                    await self.sleep(wait.seconds)
                    continue
                except Rejected as refused:
                    await self._failed(
                        conversation_id, item, refused.description, refused.code, True
                    )
                    return
                except Transient as failing:
                    attempts += 1
                    final = attempts >= self.max_attempts
                    reason = failing.reason
                    if final:
                        reason = f"gave up after {attempts} attempts: {reason}"
                    await self._failed(conversation_id, item, reason, None, final)
                    if final:
                        return
                    await self.sleep(self._backoff(attempts))
                    continue
                except Exception as bug:
                    # Not the platform's answer: give this one up rather than loop on it.
                    log.exception("delivery.unexpected", item=item.id)
                    reason = f"unexpected {type(bug).__name__}: {bug}"
                    await self._failed(conversation_id, item, reason, None, True)
                    return
                break
            complete = index == len(parts) - 1
            ids = [platform_id] if platform_id is not None else []
            await self._outcome(conversation_id, item, ids, complete=complete)

    async def _admit(self, sender: Sender, item: Outbound) -> None:
        """Wait until the chat's, the group's and the channel's limits allow a message."""
        buckets = [self._bucket(item, "chat"), self._bucket(item, "channel")]
        if sender.group(item):
            buckets.append(self._bucket(item, "group"))
        while True:
            wait = max(bucket.delay() for bucket in buckets)
            if wait <= 0:
                for bucket in buckets:
                    bucket.take()
                return
            await self.sleep(wait)

    def _bucket(self, item: Outbound, scope: str) -> TokenBucket:
        key = (item.channel, "" if scope == "channel" else f"{scope}:{item.address.to}")
        bucket = self._buckets.get(key)
        if bucket is None:
            limits = self.limits.get(item.channel, TELEGRAM_LIMITS)
            bucket = self._buckets[key] = TokenBucket(getattr(limits, scope), self.clock)
        return bucket

    def _backoff(self, attempts: int) -> float:
        return min(self.backoff_cap_s, self.backoff_s * 2 ** (attempts - 1))

    async def _outcome(
        self, conversation_id: UUID, item: Outbound, ids: list[str], *, complete: bool
    ) -> None:
        with anyio.CancelScope(shield=True):  # what was sent is recorded, stopping or not
            await self.engine.record_delivered(conversation_id, item.id, ids, complete=complete)
        if complete:
            self.delivered += 1
            log.info("delivery.delivered", conversation_id=str(conversation_id), item=item.id)

    async def _failed(
        self,
        conversation_id: UUID,
        item: Outbound,
        reason: str,
        code: int | None,
        final: bool,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.engine.record_delivery_failure(
                conversation_id, item.id, reason, code=code, final=final
            )
        if final:
            self.failed += 1
        log.warning(
            "delivery.failed" if final else "delivery.retrying",
            conversation_id=str(conversation_id),
            item=item.id,
            reason=reason,
            code=code,
        )


Listen = Callable[[threading.Event, Callable[[], None]], None]


def listener(conninfo: str, kwargs: Mapping[str, Any], channel: str, poll_s: float = 1.0) -> Listen:
    """A blocking loop that calls ``notify`` whenever the log announces new events (LISTEN on
    its channel, on a connection of its own), until ``stop`` is set."""
    options = {k: v for k, v in kwargs.items() if k != "row_factory"}

    def listen(stop: threading.Event, notify: Callable[[], None]) -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(conninfo, **{**options, "autocommit": True}) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    while not stop.is_set():
                        if any(True for _ in conn.notifies(timeout=poll_s, stop_after=1)):
                            notify()
            except psycopg.Error as e:
                log.warning("delivery.listen_lost", error=str(e).strip().splitlines()[0])
                stop.wait(poll_s)

    return listen
