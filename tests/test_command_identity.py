"""Every command carries an identity stored with its events: when the connection breaks
after PostgreSQL committed an append but before its answer reached the engine, the retry
finds the first attempt's events and returns its result instead of applying it twice."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from uuid import RFC_4122, UUID, uuid4

import anyio
import psycopg
import pytest
from pg_proxy import PostgresProxy

from voxledger.adapters.bootstrap import open_async_engine, open_engine
from voxledger.domain.commands import random_id
from voxledger.domain.conversation import Conversation
from voxledger.domain.engine import Engine


@pytest.fixture
def proxy(database_url: str) -> Iterator[PostgresProxy]:
    with PostgresProxy(database_url) as running:
        yield running


@pytest.fixture
def proxied(proxy: PostgresProxy, schema: str, clock) -> Iterator[Engine]:
    """An engine whose every connection runs through the proxy."""
    with open_engine(proxy.url, schema=schema, clock=clock) as engine:
        yield engine


def received(engine: Engine, conversation_id: UUID) -> tuple[int, int]:
    """The conversation's version and messages counted as received, read afresh."""
    engine.store.forget_cached()  # type: ignore[attr-defined]
    state = engine.get_conversation(conversation_id)
    return state.version, state.connection.messages_received


def command_ids(database_url: str, schema: str, conversation_id: UUID) -> list[UUID | None]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            f"SELECT command_id FROM {schema}.voxledger_events WHERE originator_id = %s "
            "ORDER BY originator_version",
            (conversation_id,),
        ).fetchall()
    return [row[0] for row in rows]


def test_a_commit_whose_answer_is_lost_is_applied_once_and_the_caller_gets_its_result(
    proxied: Engine, proxy: PostgresProxy, database_url: str, schema: str
) -> None:
    cid = proxied.start_conversation("chat")
    proxied.record_traffic(cid, messages_received=1)
    proxy.cut("after")
    proxied.record_traffic(cid, messages_received=1)  # returns: the append is found
    assert proxy.cuts == 1
    assert received(proxied, cid) == (3, 2)  # applied once, not twice
    ids = command_ids(database_url, schema, cid)
    assert None not in ids and len(set(ids)) == 3  # one identity per command


def test_an_append_cut_before_its_commit_is_made_again_once(
    proxied: Engine, proxy: PostgresProxy
) -> None:
    cid = proxied.start_conversation("chat")
    proxy.cut("before")
    proxied.record_traffic(cid, messages_received=1)
    assert proxy.cuts == 1
    assert received(proxied, cid) == (2, 1)


def test_a_lost_answer_to_a_save_of_two_streams_returns_the_saved_flow(
    proxied: Engine, proxy: PostgresProxy
) -> None:
    cid = proxied.start_conversation("chat")
    reply = proxied.start_flow(cid, "intake", "design")
    proxy.cut("after")
    answered = proxied.answer(reply.flow_id, "1042", record_messages=True)
    assert proxy.cuts == 1 and answered.step == "date"
    proxied.store.forget_cached()  # type: ignore[attr-defined]
    assert list(proxied.get_flow(reply.flow_id).answers.values()) == [1042]
    contents = [m.content for m in proxied.get_conversation(cid).messages]
    assert contents.count("1042") == 1 and len(contents) == 2


def test_shared_commits_of_the_async_engine_survive_a_lost_answer_once_each(
    proxied: Engine, proxy: PostgresProxy
) -> None:
    conversations = [proxied.start_conversation("chat") for _ in range(6)]
    async_engine = open_async_engine(proxied)

    async def traffic() -> None:
        async with anyio.create_task_group() as group:
            for cid in conversations:
                group.start_soon(lambda c: async_engine.record_traffic(c, messages_received=1), cid)

    anyio.run(traffic)  # every conversation is cached now: the next round runs in the loop
    proxy.cut("after")
    anyio.run(traffic)
    assert proxy.cuts == 1
    assert [received(proxied, cid) for cid in conversations] == [(3, 2)] * 6


def test_events_stored_before_command_ids_still_load(engine: Engine, database_url, schema):
    cid = engine.start_conversation("chat")
    engine.record_traffic(cid, messages_received=1)
    with psycopg.connect(database_url) as conn:
        conn.execute(f"UPDATE {schema}.voxledger_events SET command_id = NULL")
    with open_engine(database_url, schema=schema) as again:  # creates the tables again
        again.record_traffic(cid, messages_received=1)
        assert received(again, cid) == (3, 2)
    assert isinstance(engine.store.load(cid), Conversation)  # type: ignore[attr-defined]


def test_a_chat_message_whose_commit_answer_is_lost_is_one_exchange_with_its_first_reply(
    proxied: Engine, proxy: PostgresProxy, database_url: str, schema: str
) -> None:
    from voxledger.domain.conversation_values import Address
    from voxledger.domain.exchange import Exchange, Inbound

    cid = uuid4()
    decided: list[str] = []

    def reply(ex: Exchange) -> None:
        decided.append(ex.inbound.text)
        ex.reply(f"you said {ex.inbound.text}")

    def message(message_id: str, text: str) -> Inbound:
        return Inbound(
            message_id=message_id, text=text, channel="telegram", address=Address("4242", None)
        )

    proxied.exchange(cid, message("1", "hello"), reply)
    proxy.cut("after")
    result = proxied.exchange(cid, message("2", "again"), reply)
    assert proxy.cuts == 1
    assert (result.text, result.duplicate) == ("you said again", False)  # its own reply
    assert decided == ["hello", "again"]  # decided once: found, not run on fresh state
    proxied.store.forget_cached()  # type: ignore[attr-defined]
    said = [(m.id, m.content) for m in proxied.get_conversation(cid).messages]
    assert [text for _, text in said].count("again") == 1
    ids = command_ids(database_url, schema, cid)
    assert len(set(ids)) == 2  # one identity per exchange, its events sharing it


def test_a_commands_fresh_identity_is_a_random_uuid_as_uuid4_makes_it() -> None:
    made = [random_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
    for uid in made[:100]:
        same = UUID(str(uid))
        assert (uid.version, uid.variant) == (4, RFC_4122) == (same.version, same.variant)
        assert uid == same and hash(uid) == hash(same) and uid.bytes == same.bytes
        assert pickle.loads(pickle.dumps(uid)) == uid
    # Each of the 122 random bits is seen both ways.
    ones = 0
    for uid in made:
        ones |= uid.int
    zeros = 0
    for uid in made:
        zeros |= ~uid.int & ((1 << 128) - 1)
    random_bits = ((1 << 128) - 1) & ~(0xF000 << 64) & ~(0xC000 << 48)
    assert ones & zeros == random_bits
