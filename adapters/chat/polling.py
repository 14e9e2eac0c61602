"""Telegram by long polling (`getUpdates`), for a bot without a public URL.

Each update is handled like a webhook call (one exchange), then the next offset is written
to the database: a restarted poller asks from there, so each update is handled once (an
update handled just before a crash, and asked for again, finds its message already recorded
and records nothing). Telegram refuses `getUpdates` while a webhook is set (409): the poller
stops and says to delete the webhook first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING
from uuid import UUID

import anyio
import anyio.to_thread
import structlog
from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ...domain.errors import BadInput, Conflict, Unavailable, VoxledgerError
from ..store.recorder import retried
from .bot import ChatBot
from .delivery_errors import Rejected, RetryAfter, Transient
from .telegram import ALLOWED_UPDATES, BotIdentity, incoming
from .telegram_api import TelegramBotApi

if TYPE_CHECKING:
    from ..async_engine import AsyncEngine

log = structlog.get_logger("voxledger.telegram")

LONG_POLL_S = 50  # Telegram holds a getUpdates call open for up to 50 s


class UpdateOffsets:
    """Where each bot's polling resumes: the next update id to ask for, in the database."""

    def __init__(self, datastore: PostgresDatastore, *, table: str = "voxledger_telegram_offsets"):
        self.datastore = datastore
        self._table = Identifier(datastore.schema, table)

    def create_table(self) -> None:
        """Create the table (idempotent)."""
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (bot_id bigint PRIMARY KEY, "
                    "next_offset bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
                ).format(self._table)
            )

    @retried
    def load(self, bot_id: int) -> int | None:
        """The next update id to ask for (None: from Telegram's oldest unconfirmed one)."""
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
            c.execute(
                SQL("SELECT next_offset FROM {} WHERE bot_id = %s").format(self._table), (bot_id,)
            )
            row = c.fetchone()
        return None if row is None else int(row[0])

    @retried
    def save(self, bot_id: int, next_offset: int) -> None:
        """Updates before ``next_offset`` are handled: never ask for them again."""
        with self.datastore.get_connection() as conn:
            conn.execute(
                SQL(
                    "INSERT INTO {} (bot_id, next_offset) VALUES (%s, %s) ON CONFLICT (bot_id) "
                    "DO UPDATE SET next_offset = greatest({}.next_offset, excluded.next_offset), "
                    "updated_at = now()"
                ).format(self._table, self._table),
                (bot_id, next_offset),
            )


class WebhookActive(BadInput):
    """Telegram delivers this bot's updates to a webhook, so they cannot be polled."""


async def poll(
    api: TelegramBotApi,
    bot: ChatBot,
    engine: AsyncEngine,
    offsets: UpdateOffsets,
    identity: BotIdentity,
    stopping: anyio.Event,
    *,
    wake: Callable[[UUID], None] = lambda conversation_id: None,
    timeout: int = LONG_POLL_S,
    pause_s: float = 1.0,
) -> int:
    """Handle updates until ``stopping`` is set; how many were handled. ``engine`` is the
    AsyncEngine the exchanges run on; ``wake`` tells the delivery worker of new replies."""
    me = await api.get_me()
    identity.username = me.username
    offset = await anyio.to_thread.run_sync(offsets.load, me.id)
    handled = 0
    while not stopping.is_set():
        try:
            with anyio.move_on_after(timeout + 30) as scope:
                updates = await api.get_updates(
                    offset, timeout=timeout, allowed_updates=ALLOWED_UPDATES
                )
            if scope.cancelled_caught:
                continue
        except Rejected as refused:
            if refused.code == 409 and "webhook" in refused.description.lower():
                raise WebhookActive(
                    "a webhook is set for this bot, so Telegram will not answer getUpdates: "
                    "run `voxledger telegram delete-webhook` first"
                ) from None
            if refused.code == 409:
                log.warning("telegram.another_poller", detail=refused.description)
                await anyio.sleep(pause_s)
                continue
            raise
        except RetryAfter as wait:
            await anyio.sleep(wait.seconds)
            continue
        except Transient as failing:
            log.warning("telegram.poll_failed", error=failing.reason)
            await anyio.sleep(pause_s)
            continue
        for update in updates:
            message = incoming(update, identity.username)
            if message is not None:
                try:
                    reply = await bot.handle_chat_async(message, engine)
                except (Unavailable, Conflict) as e:
                    log.warning(
                        "telegram.update_deferred", update_id=update.update_id, error=str(e)
                    )
                    await anyio.sleep(pause_s)
                    break  # asked for again from this update on
                except VoxledgerError as refused:
                    log.warning(
                        "telegram.update_refused", update_id=update.update_id, error=str(refused)
                    )
                else:
                    if reply.outbound and reply.conversation_id is not None:
                        wake(reply.conversation_id)
            offset = update.update_id + 1
            await anyio.to_thread.run_sync(offsets.save, me.id, offset)
            handled += 1
    return handled
