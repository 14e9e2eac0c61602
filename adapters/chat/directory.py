"""Which conversation each chat is in now: the chat directory.

A chat (a channel, a chat on it, and the user and topic where those keep conversations of
their own) is looked up by an HMAC of it under a secret of this deployment, kept in the
database beside it. A conversation's id is random: nothing about it says which chat it is,
and the directory's row, the one thing that ties the two, is deleted when the conversation
is erased (`forget`), after which the chat's next message opens a fresh conversation.

A lookup is one indexed read, never cached: an erasure in another process takes effect at
the chat's very next message. The row comes first, in a statement of its own before the save
that opens the conversation (the event store's append path stays as it is): a new chat's
row names a fresh id before any event of that conversation exists, so a crash in between
leaves a reserved id that the chat's next message opens, never a conversation that no chat
finds (the one difference from a shared transaction: an id reserved and not used yet). A
chat whose conversation ended (or was erased) moves on to a fresh id by compare-and-set, so
two processes moving on at once agree on one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from typing import Any
from uuid import UUID, uuid4

import anyio.to_thread
import msgspec
import psycopg
import structlog
from eventsourcing.persistence import PersistenceError
from eventsourcing.postgres import PostgresDatastore
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from ..store.loop_connection import LoopConnection
from ..store.recorder import retried

log = structlog.get_logger("voxledger.chat")

SECRET_BYTES = 32
_CURRENT = "SELECT chat_key, conversation_id FROM {} WHERE chat_key = ANY(%s)"


def _unknown(
    chats: Sequence[tuple[ChatKey, bool]], keys: list[bytes], found: dict[bytes, UUID]
) -> list[ChatKey]:
    """The chats to open that have no row (each once, in order)."""
    unknown: dict[bytes, ChatKey] = {}
    for (chat, opening), key in zip(chats, keys, strict=True):
        if opening and key not in found:
            unknown.setdefault(key, chat)
    return list(unknown.values())


class ChatKey(msgspec.Struct, frozen=True, array_like=True):
    """A chat as the directory knows it: its channel and id, and the user and topic when
    they keep conversations of their own (a member of a group, a forum topic)."""

    channel: str
    chat: str
    user: str | None = None
    topic: str | None = None


class ChatDirectory:
    """The chats' current conversations, keyed by HMAC."""

    def __init__(self, datastore: PostgresDatastore, *, table: str = "voxledger_chats") -> None:
        self.datastore = datastore
        self._name = table
        self._table = Identifier(datastore.schema, table)
        self._secret_table = Identifier(datastore.schema, f"{table}_secret")
        self._secret: bytes | None = None
        self._loop = LoopConnection(datastore)  # the event loop's reads (`current_async`)
        self._current_statement = SQL(_CURRENT).format(self._table).as_string(None)

    def create_tables(self) -> None:
        """Create the directory and its secret's table (idempotent)."""
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    "chat_key bytea PRIMARY KEY, conversation_id uuid NOT NULL)"
                ).format(self._table)
            )
            cursor.execute(
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} (conversation_id)").format(
                    Identifier(f"{self._name}_by_conversation"), self._table
                )
            )
            cursor.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    "id integer PRIMARY KEY CHECK (id = 1), secret bytea NOT NULL)"
                ).format(self._secret_table)
            )

    # -- lookups ------------------------------------------------------------------------------

    def key(self, chat: ChatKey) -> bytes:
        """The chat's key in the directory: HMAC-SHA256 of the chat under the secret."""
        return hmac.new(self._load_secret(), msgspec.msgpack.encode(chat), hashlib.sha256).digest()

    def find(self, chat: ChatKey) -> UUID | None:
        """The chat's current conversation, or None if it has none."""
        row = self._one("SELECT conversation_id FROM {} WHERE chat_key = %s", self.key(chat))
        return row[0] if row else None

    def open(self, chat: ChatKey) -> UUID:
        """The chat's current conversation: found (one read), or a fresh id reserved for
        it (the one another process reserved a moment ago, if it did)."""
        key = self.key(chat)
        while True:
            row = self._one("SELECT conversation_id FROM {} WHERE chat_key = %s", key)
            if row is None:
                row = self._one(
                    "INSERT INTO {} (chat_key, conversation_id) VALUES (%s, %s) "
                    "ON CONFLICT (chat_key) DO NOTHING RETURNING conversation_id",
                    key,
                    uuid4(),
                )
            if row is not None:
                return row[0]

    async def current_async(self, chats: Sequence[tuple[ChatKey, bool]]) -> list[UUID | None]:
        """The current conversations of many chats, read in one statement (the lookups of
        concurrent messages, `AsyncDirectory`), in the event loop on a connection of its own
        (`LoopConnection`); a chat to open (True beside it) that has none gets one, as `open`
        gives it, in a worker thread (a new chat's first message)."""
        if self._secret is None:
            await anyio.to_thread.run_sync(self._load_secret)
        keys = [self.key(chat) for chat, _ in chats]
        statement = self._current_statement

        async def read(conn: psycopg.AsyncConnection[Any], _again: bool) -> list[Any]:
            async with conn.cursor(row_factory=tuple_row) as c:
                await c.execute(statement, (keys,), prepare=True)
                return await c.fetchall()

        found = self._found(await self._loop.run(read))
        unknown = _unknown(chats, keys, found)
        opened = (
            await anyio.to_thread.run_sync(lambda: [self.open(chat) for chat in unknown])
            if unknown
            else []
        )
        return self._current(chats, keys, found, opened)

    @staticmethod
    def _found(rows: Sequence[Any]) -> dict[bytes, UUID]:
        return {bytes(key): conversation_id for key, conversation_id in rows}

    @staticmethod
    def _current(
        chats: Sequence[tuple[ChatKey, bool]],
        keys: list[bytes],
        found: dict[bytes, UUID],
        opened: list[UUID],
    ) -> list[UUID | None]:
        """Each chat's conversation: found, or (to open) the next one opened."""
        fresh = iter(opened)
        current: list[UUID | None] = []
        for (_, opening), key in zip(chats, keys, strict=True):
            conversation_id = found.get(key)
            if conversation_id is None and opening:
                conversation_id = found[key] = next(fresh)
            current.append(conversation_id)
        return current

    def move_on(self, chat: ChatKey, closed: UUID) -> UUID:
        """A fresh conversation for the chat, whose conversation ``closed`` ended or was
        erased; the one another process moved it on to, if one did first."""
        key = self.key(chat)
        row = self._one(
            "UPDATE {} SET conversation_id = %s WHERE chat_key = %s AND conversation_id = %s "
            "RETURNING conversation_id",
            uuid4(),
            key,
            closed,
        )
        if row is not None:
            return row[0]
        found = self.find(chat)
        if found is not None and found != closed:
            return found
        return self.open(chat)  # its row was deleted (erased): a new one

    def forget(self, conversation_ids: Iterable[UUID]) -> int:
        """Delete the rows that lead to these conversations (an erasure); how many went."""
        ids = list(conversation_ids)
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                SQL("DELETE FROM {} WHERE conversation_id = ANY(%s)").format(self._table), (ids,)
            )
            deleted = cursor.rowcount
        try:
            # The old row versions still tie the chat to the conversation until vacuumed.
            with self.datastore.get_connection() as conn:
                conn.execute(SQL("VACUUM {}").format(self._table))
        except PersistenceError as e:
            log.warning("directory.vacuum_failed", error=str(e).strip().splitlines()[0])
        return deleted

    # -- underneath ----------------------------------------------------------------------------

    @retried
    def _load_secret(self) -> bytes:
        if self._secret is None:
            # Every process of the deployment gets the first secret written.
            with self.datastore.transaction(commit=True) as cursor:
                cursor.execute(
                    SQL(
                        "INSERT INTO {} (id, secret) VALUES (1, %s) ON CONFLICT (id) DO NOTHING"
                    ).format(self._secret_table),
                    (os.urandom(SECRET_BYTES),),
                )
                cursor.execute(SQL("SELECT secret FROM {} WHERE id = 1").format(self._secret_table))
                row = cursor.fetchone()
            self._secret = bytes(row["secret"] if isinstance(row, dict) else row[0])
        return self._secret

    def prepare(self) -> ChatDirectory:
        """Read the deployment's secret now (the first one written, by whichever process),
        so that no later lookup waits for it."""
        self._load_secret()
        return self

    @retried
    def _one(self, statement: str, *params: Any) -> Any:
        """The first row of a statement on the directory, autocommitted."""
        query = SQL(statement).format(self._table)
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as c:
            c.execute(query, params)
            return c.fetchone()
