"""The chat directory: which conversation a chat is in, found by an HMAC of the chat under a
secret of the deployment; fresh ids when a conversation ends; nothing left after erasure."""

from __future__ import annotations

import threading
from uuid import uuid4

import psycopg
from psycopg import sql

from voxledger.adapters.bootstrap import open_chat_directory
from voxledger.adapters.chat.directory import ChatKey
from voxledger.domain.engine import Engine

CHAT = ChatKey("telegram", "424242")


def rows(database_url: str, schema: str) -> list[tuple[bytes, object]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            sql.SQL("SELECT chat_key, conversation_id FROM {}").format(
                sql.Identifier(schema, "voxledger_chats")
            )
        ).fetchall()


def test_a_chat_is_keyed_by_an_hmac_that_does_not_hold_its_id(
    engine: Engine, database_url: str, schema: str
) -> None:
    directory = open_chat_directory(engine.store)  # type: ignore[arg-type]
    conversation = directory.open(CHAT)
    assert directory.find(CHAT) == conversation  # the same conversation, found again
    ((key, found),) = rows(database_url, schema)
    assert found == conversation and len(bytes(key)) == 32
    assert b"424242" not in bytes(key)
    assert directory.find(ChatKey("telegram", "424242", user="7")) is None  # another chat


def test_every_process_of_a_deployment_uses_the_first_secret_written(engine: Engine) -> None:
    first = open_chat_directory(engine.store)  # type: ignore[arg-type]
    second = open_chat_directory(engine.store)  # type: ignore[arg-type]
    assert first.key(CHAT) == second.key(CHAT)
    assert first.open(CHAT) == second.find(CHAT)


def test_two_processes_opening_a_new_chat_at_once_get_one_conversation(engine: Engine) -> None:
    directories = [open_chat_directory(engine.store) for _ in range(6)]  # type: ignore[arg-type]
    barrier = threading.Barrier(len(directories))
    opened: list[object] = []

    def open_chat(index: int) -> None:
        barrier.wait()
        opened.append(directories[index].open(ChatKey("telegram", "race")))

    threads = [threading.Thread(target=open_chat, args=(i,)) for i in range(len(directories))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(opened)) == 1


def test_a_chat_whose_conversation_ended_moves_on_once_however_many_ask(engine: Engine) -> None:
    directory = open_chat_directory(engine.store)  # type: ignore[arg-type]
    ended = directory.open(CHAT)
    fresh = directory.move_on(CHAT, ended)
    assert fresh != ended
    assert directory.move_on(CHAT, ended) == fresh  # a late second process: the same one
    assert directory.find(CHAT) == fresh


def test_forgetting_a_conversation_leaves_nothing_that_leads_to_it(
    engine: Engine, database_url: str, schema: str
) -> None:
    directory = open_chat_directory(engine.store)  # type: ignore[arg-type]
    conversation = directory.open(CHAT)
    other = directory.open(ChatKey("telegram", "other"))
    assert directory.forget([conversation, uuid4()]) == 1
    assert [found for _, found in rows(database_url, schema)] == [other]
    assert directory.find(CHAT) is None
    assert directory.open(CHAT) not in (None, conversation)  # the chat starts afresh
