"""Erasure by crypto-shredding: personal data is sealed at rest with a key per stream, and
erasing a conversation deletes its keys. The history keeps its shape and still replays."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID, uuid4

import msgspec
import psycopg
import pytest

from voxledger.adapters.bootstrap import open_engine
from voxledger.adapters.store.event_store import EventStore, fold
from voxledger.adapters.store.keys import KeyRing
from voxledger.adapters.store.mapper import CorruptEvent, Erased
from voxledger.domain.engine import Engine
from voxledger.domain.errors import (
    BadInput,
    Conflict,
    InvalidTransition,
    NotFound,
    VoxledgerError,
)
from voxledger.domain.flow import FlowStatus
from voxledger.projections.registry import default_projections
from voxledger.projections.runner import ProjectionRunner

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]
MARK = "Zephyrine Quillfeather"  # a name that appears nowhere but in what the user said
OTHER = "Barnaby Underhill"
ERASED = "[erased]"


def voxledger(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [*VOXLEDGER, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def converse(engine: Engine, name: str = MARK, *, messages: int = 200) -> tuple[UUID, UUID]:
    """A conversation full of personal data: participant, metadata, messages (one streamed),
    context, a completed intake flow with a rejected answer, and enough messages to be
    snapshotted. Returns its id and its flow's."""
    cid = engine.start_conversation("telegram", f"{name} (participant)", {"phone": f"{name} tel"})
    engine.connect(cid, "telegram", "c-1")
    said = engine.add_message(cid, "user", f"my name is {name}")
    engine.start_turn(cid, said)
    engine.start_response(cid)
    reply = engine.add_message(cid, "assistant", "", complete=False)
    engine.complete_message(cid, reply, f"hello {name}")
    engine.complete_turn(cid, reply)
    engine.record_usage(cid, tokens_in=12, tokens_out=30, cost=0.002)
    engine.update_context(cid, {"nickname": name})
    flow = engine.start_flow(cid, "intake", "interview").flow_id
    assert not engine.answer(flow, f"{name} is not a number").accepted
    for text in ("1042", "21.11.2026", name, f"{name} Arena", "office", "north", f"{name} LLC"):
        assert engine.answer(flow, text).accepted
    engine.edit(flow, "zone")
    engine.answer(flow, f"{name} wing")
    assert engine.answer(flow, "yes").status is FlowStatus.COMPLETED
    for i in range(messages):
        engine.add_message(cid, "user", f"{name} says {i}")
    return cid, flow


def rows(database_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(query, params).fetchall()


def stored_bytes(database_url: str, schema: str) -> list[bytes]:
    """Every event and snapshot row's stored state, as it is on disk."""
    return [
        bytes(state)
        for table in ("voxledger_events", "voxledger_snapshots")
        for (state,) in rows(database_url, f"SELECT state FROM {schema}.{table}")
    ]


def fresh_engine(database_url: str, schema: str) -> Engine:
    """An engine as a new process would have: no cached aggregates, no cached keys."""
    return open_engine(database_url, schema=schema)


@pytest.fixture
def projected(engine: Engine, database_url: str, schema: str) -> Iterator[ProjectionRunner]:
    store = engine.store
    assert isinstance(store, EventStore)
    datastore = store.recorder.datastore
    decode = store.mapper.to_domain_event
    with ProjectionRunner(datastore.pool, schema, decode, default_projections()) as runner:
        yield runner


def projection_text(database_url: str, schema: str, *tables: str) -> str:
    """Everything the given projection tables store (by default those that hold content),
    as text, in a stable order."""
    tables = tables or ("current_conversations", "current_flows", "audit_trail", "audit_streams")
    found = [rows(database_url, f"SELECT x::text FROM {schema}.{t} x ORDER BY 1") for t in tables]
    return "\n".join(str(row) for table in found for row in table)


METRICS = ("metrics_hourly", "metrics_flows", "metrics_flow_steps", "metrics_flow_runs")


# -- at rest -----------------------------------------------------------------------------------


def test_message_content_and_flow_answers_are_sealed_at_rest_and_read_back_in_clear(
    engine: Engine, database_url: str, schema: str
) -> None:
    cid, flow = converse(engine)
    assert engine.store.flush_snapshots(timeout=30)  # type: ignore[attr-defined]
    on_disk = stored_bytes(database_url, schema)
    assert rows(database_url, f"SELECT count(*) FROM {schema}.voxledger_snapshots")[0][0] >= 1
    assert not [state for state in on_disk if MARK.encode() in state]

    engine.store.forget_cached()  # type: ignore[attr-defined]
    state = engine.get_conversation(cid)  # from the snapshot and the events after it
    assert state.participant == f"{MARK} (participant)" and state.metadata["phone"] == f"{MARK} tel"
    assert state.messages[0].content == f"my name is {MARK}"
    assert state.messages[1].content == f"hello {MARK}" and state.context["nickname"] == MARK
    answers = engine.get_flow(flow).answers
    assert answers["employee"] == MARK and answers["zone"] == f"{MARK} wing"


def test_a_key_survives_a_restart_and_is_shared_between_processes(
    engine: Engine, cli_env: dict[str, str]
) -> None:
    cid = engine.start_conversation("chat")
    engine.add_message(cid, "user", f"from process one, {MARK}")
    code = (
        "import sys, uuid\n"
        "from voxledger.adapters.bootstrap import open_engine\n"
        "with open_engine() as e:\n"
        "    cid = uuid.UUID(sys.argv[1])\n"
        "    print(e.get_conversation(cid).messages[0].content)\n"
        "    e.add_message(cid, 'assistant', 'from process two')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(cid)], env=cli_env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"from process one, {MARK}"
    assert engine.get_conversation(cid).messages[1].content == "from process two"


def test_two_processes_sealing_a_streams_first_personal_data_at_once_share_one_key(
    engine: Engine, database_url: str, schema: str, clock
) -> None:
    cid = engine.start_conversation("chat")  # nothing personal yet, so no key yet
    others = [open_engine(database_url, schema=schema, clock=clock) for _ in range(3)]
    engines, start = [engine, *others], threading.Barrier(4)

    def say(i: int) -> None:
        start.wait()
        engines[i].add_message(cid, "user", f"{MARK} {i}")

    threads = [threading.Thread(target=say, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for other in others:
            other.close()
    with open_engine(database_url, schema=schema) as fresh:  # a process that made no key
        contents = sorted(m.content for m in fresh.get_conversation(cid).messages)
    assert contents == [f"{MARK} {i}" for i in range(4)]
    with psycopg.connect(database_url) as conn:
        (keys,) = conn.execute(
            f"SELECT count(*) FROM {schema}.voxledger_keys WHERE stream_id = %s", (cid,)
        ).fetchone()
    assert keys == 1


def test_a_refused_first_save_leaves_no_key_behind(
    engine: Engine, database_url: str, schema: str
) -> None:
    cid = engine.start_conversation("chat")
    with pytest.raises(VoxledgerError):  # an integer msgpack cannot hold
        engine.add_message(cid, "user", MARK, metadata={"n": 2**70})
    with pytest.raises(VoxledgerError):
        engine.start_conversation("chat", MARK, {"n": -(2**70)})
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(f"SELECT stream_id FROM {schema}.voxledger_keys").fetchall()
    assert rows == []
    engine.add_message(cid, "user", MARK)  # and the stream still takes personal data
    engine.store.forget_cached()  # type: ignore[attr-defined]
    assert [m.content for m in engine.get_conversation(cid).messages] == [MARK]


def test_a_stream_this_process_started_needs_no_key_read_at_all(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches: list[UUID] = []
    fetch = KeyRing._fetch
    monkeypatch.setattr(
        KeyRing, "_fetch", lambda ring, s, **kw: fetches.append(s) or fetch(ring, s, **kw)
    )
    cid = engine.start_conversation("chat")  # nothing personal yet, so no key yet
    assert fetches == []
    for i in range(50):
        engine.add_message(cid, "user", f"message {i}")
    flow = engine.start_flow(cid, "intake", "interview").flow_id
    for answer in ("1042", "21.11.2026", "Ivan Petrov"):
        engine.answer(flow, answer)
    engine.get_conversation(cid)
    # Streams this process started are known to be keyless: their first personal value
    # makes a key that goes in with it, without a read.
    assert fetches == []


def test_a_stream_begun_with_personal_data_reads_no_key_and_a_second_beginning_keeps_the_first(
    engine: Engine, database_url: str, schema: str, clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetches: list[UUID] = []
    fetch = KeyRing._fetch
    monkeypatch.setattr(
        KeyRing, "_fetch", lambda ring, s, **kw: fetches.append(s) or fetch(ring, s, **kw)
    )
    given = uuid4()
    cid = engine.start_conversation("chat", MARK, {"city": MARK}, conversation_id=given)
    engine.add_message(cid, "user", MARK)
    # The first event is sealed with a key made for it: no read (it was a round trip in
    # the event loop for every new conversation).
    assert fetches == []
    # Another process begins the same stream with a key of its own: its save fails (the
    # stream's key and first event are there) and writes nothing.
    with (
        open_engine(database_url, schema=schema, clock=clock) as other,
        pytest.raises(Conflict, match="already exists"),
    ):
        other.start_conversation("chat", f"{MARK} 2", {}, conversation_id=given)
    with open_engine(database_url, schema=schema) as fresh:
        state = fresh.get_conversation(cid)
    assert (state.participant, [m.content for m in state.messages]) == (MARK, [MARK])
    with psycopg.connect(database_url) as conn:
        (keys,) = conn.execute(
            f"SELECT count(*) FROM {schema}.voxledger_keys WHERE stream_id = %s", (cid,)
        ).fetchone()
    assert keys == 1


def test_rows_written_before_sealing_still_read(engine: Engine) -> None:
    store = engine.store
    keys, store.mapper.keys = store.mapper.keys, None  # type: ignore[attr-defined]
    cid = engine.start_conversation("chat", MARK, {"a": 1})
    for i in range(199):  # a snapshot among them, whatever the stream's phase
        engine.add_message(cid, "user", f"plain {i}")
    store.mapper.keys = keys  # type: ignore[attr-defined]
    engine.add_message(cid, "user", "sealed")
    store.forget_cached()  # type: ignore[attr-defined]
    state = engine.get_conversation(cid)  # a plaintext snapshot, then a sealed event
    assert state.participant == MARK and [m.content for m in state.messages[-2:]] == [
        "plain 198",
        "sealed",
    ]


# -- tampering -----------------------------------------------------------------------------------


def sealed_content(database_url: str, schema: str, stream: UUID, version: int) -> bytes:
    (state,) = rows(
        database_url,
        f"SELECT state FROM {schema}.voxledger_events "
        "WHERE originator_id = %s AND originator_version = %s",
        stream,
        version,
    )[0]
    return bytes(state)


def replace_state(database_url: str, schema: str, stream: UUID, version: int, state: bytes) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            f"UPDATE {schema}.voxledger_events SET state = %s "
            "WHERE originator_id = %s AND originator_version = %s",
            (state, stream, version),
        )


def test_an_altered_sealed_value_is_a_corrupt_event_naming_stream_and_version(
    engine: Engine, database_url: str, schema: str
) -> None:
    cid = engine.start_conversation("chat")
    engine.add_message(cid, "user", "the original words")
    payload = msgspec.msgpack.decode(sealed_content(database_url, schema, cid, 2))
    sealed = payload["content"]
    flipped = bytearray(sealed.data)
    flipped[-1] ^= 1
    payload["content"] = msgspec.msgpack.Ext(sealed.code, bytes(flipped))
    replace_state(database_url, schema, cid, 2, msgspec.msgpack.encode(payload))
    engine.store.forget_cached()  # type: ignore[attr-defined]
    with pytest.raises(CorruptEvent, match=f"stream {cid} version 2.*sealed content"):
        engine.get_conversation(cid)


def test_a_sealed_value_moved_to_another_stream_does_not_open_there(
    engine: Engine, database_url: str, schema: str
) -> None:
    one, two = engine.start_conversation("chat"), engine.start_conversation("chat")
    engine.add_message(one, "user", "said in one")
    engine.add_message(two, "user", "said in two")
    stolen = msgspec.msgpack.decode(sealed_content(database_url, schema, one, 2))["content"]
    payload = msgspec.msgpack.decode(sealed_content(database_url, schema, two, 2))
    payload["content"] = stolen
    replace_state(database_url, schema, two, 2, msgspec.msgpack.encode(payload))
    engine.store.forget_cached()  # type: ignore[attr-defined]
    with pytest.raises(CorruptEvent, match=f"stream {two} version 2"):
        engine.get_conversation(two)


# -- erasing ---------------------------------------------------------------------------------------


def without_content(document: dict[str, Any]) -> dict[str, Any]:
    """A conversation document less the personal fields (what erasure may change): content,
    message ids, free text."""
    personal = ("participant", "metadata", "context", "end_reason")
    kept = {k: v for k, v in document.items() if k not in personal}
    kept["messages"] = [
        {k: v for k, v in m.items() if k not in ("id", "content", "metadata")}
        for m in document["messages"]
    ]
    kept["turns"] = [
        {k: v for k, v in t.items() if k not in ("user_message_id", "assistant_message_id")}
        for t in document["turns"]
    ]
    kept["connection"] = {k: v for k, v in document["connection"].items() if k != "last_error"}
    return kept


def test_erasing_redacts_the_content_and_keeps_the_history_shape_and_metrics(
    engine: Engine,
    database_url: str,
    schema: str,
    cli_env: dict[str, str],
    projected: ProjectionRunner,
) -> None:
    cid, flow = converse(engine)
    other, _ = converse(engine, OTHER, messages=0)
    projected.catch_up()
    assert MARK in projection_text(database_url, schema)
    metrics = projection_text(database_url, schema, *METRICS)
    assert "intake" in metrics
    shown = json.loads(voxledger(cli_env, "show", str(cid), "--json").stdout)
    logged = json.loads(voxledger(cli_env, "log", str(cid), "--json").stdout)

    refused = voxledger(cli_env, "erase", str(cid), check=False)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert refused.stderr.count("\n") == 1 and refused.stdout == ""
    done = json.loads(voxledger(cli_env, "erase", str(cid), "--yes", "--json").stdout)
    assert done["erased"] == [str(cid), str(flow)]
    assert set(done["rebuilt"]) == {"current", "audit"}

    # At rest: still nothing readable, the keys gone, the snapshots gone.
    assert not [state for state in stored_bytes(database_url, schema) if MARK.encode() in state]
    keys = rows(
        database_url,
        f"SELECT key, erased_at FROM {schema}.voxledger_keys WHERE stream_id = ANY(%s)",
        [cid, flow],
    )
    assert len(keys) == 2 and all(key is None and at is not None for key, at in keys)
    snapshots = f"SELECT count(*) FROM {schema}.voxledger_snapshots WHERE originator_id = %s"
    assert rows(database_url, snapshots, cid)[0][0] == 0
    assert MARK not in projection_text(database_url, schema)
    projected.rebuild("metrics")  # derived again from the erased events: the same figures
    assert projection_text(database_url, schema, *METRICS) == metrics

    # Shown: the same events, versions, statuses, turns and usage; the content redacted.
    after = voxledger(cli_env, "show", str(cid), "--json").stdout
    assert MARK not in after
    erased = json.loads(after)
    assert without_content(erased) == without_content(shown)
    assert erased["usage"] == shown["usage"] and erased["status"] == shown["status"]
    assert {m["content"] for m in erased["messages"]} == {ERASED}
    assert erased["participant"] == ERASED and erased["metadata"] == {} and erased["context"] == {}
    log_after = voxledger(cli_env, "log", str(cid), "--json").stdout
    assert MARK not in log_after
    log_erased = json.loads(log_after)
    where = [(e["stream"], e["version"], e["type"], e["time"]) for e in log_erased]
    assert where == [(e["stream"], e["version"], e["type"], e["time"]) for e in logged]
    accepted = [e["data"] for e in log_erased if e["type"] == "AnswerAccepted"]
    assert len(accepted) == 7 and {a["value"] for a in accepted} == {ERASED}
    assert {a["field"] for a in accepted} >= {"employee", "place"}

    # Replayed from the events alone, in a process that never saw the keys.
    with fresh_engine(database_url, schema) as reader:
        state = reader.get_conversation(cid)
        assert state.version == shown["version"] and state.messages[0].content == ERASED
        folded = fold(None, reader.store.stream(cid))
        assert folded is not None and folded.version == shown["version"]
        assert reader.get_conversation(cid, version=5).messages[0].content == ERASED
        answers = reader.get_flow(flow).answers
        assert answers and set(answers.values()) == {ERASED}
        assert reader.get_flow(flow).status is FlowStatus.COMPLETED
        untouched = reader.get_conversation(other)
        assert untouched.messages[0].content == f"my name is {OTHER}"
        assert reader.get_flow(untouched_flow(reader, other)).answers["employee"] == OTHER


def untouched_flow(engine: Engine, conversation_id: UUID) -> UUID:
    (began,) = [h for h in engine.history(conversation_id) if h.type == "FlowBegan"]
    return began.data["flow_id"]


def test_an_erased_conversation_refuses_new_personal_data_and_takes_other_commands(
    engine: Engine, database_url: str, schema: str
) -> None:
    cid, flow = converse(engine, messages=90)
    assert engine.store.erase(cid) == [cid, flow]  # type: ignore[attr-defined]
    with pytest.raises(Erased, match=f"{cid} was erased") as refused:
        engine.add_message(cid, "user", "more about me")
    assert isinstance(refused.value, InvalidTransition)  # a 409 at the HTTP edge, exit 1 here
    with pytest.raises(Erased):
        engine.update_context(cid, {"nickname": "again"})
    version = engine.get_conversation(cid).version
    for _ in range(210 - version):  # across a snapshot step, whatever the phase: none taken
        engine.record_usage(cid, tokens_in=1)
    engine.end(cid, "erased on request")
    state = engine.get_conversation(cid)
    assert state.status == "ended" and state.version == 211
    snapshots = f"SELECT count(*) FROM {schema}.voxledger_snapshots WHERE originator_id = %s"
    assert rows(database_url, snapshots, cid)[0][0] == 0
    assert engine.store.erase(cid) == [cid, flow]  # type: ignore[attr-defined]  # again: harmless


def test_erasing_needs_a_conversation_id(engine: Engine) -> None:
    cid, flow = converse(engine, messages=0)
    with pytest.raises(BadInput, match=f"{flow} is a flow; erase its conversation {cid}"):
        engine.store.erase(flow)  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        engine.store.erase(uuid4())  # type: ignore[attr-defined]
    assert engine.get_flow(flow).answers["employee"] == MARK


def test_another_process_stops_showing_erased_content_within_the_key_cache_time(
    engine: Engine, database_url: str, schema: str
) -> None:
    engine.store.keys.ttl_s = 0.3  # type: ignore[attr-defined]
    cid, _ = converse(engine, messages=0)
    assert engine.get_conversation(cid).messages[0].content == f"my name is {MARK}"
    with fresh_engine(database_url, schema) as eraser:
        eraser.store.erase(cid)  # type: ignore[attr-defined]
    time.sleep(0.4)
    # This process's cached aggregate and key are both dropped once the key ring asks again.
    assert engine.get_conversation(cid).messages[0].content == ERASED
    with pytest.raises(Erased):
        engine.add_message(cid, "user", "more")


def test_erasing_also_erases_client_message_ids_and_free_text(
    engine: Engine, database_url: str, schema: str, cli_env: dict[str, str], projected
) -> None:
    cid = engine.start_conversation("api")
    engine.connect(cid, "api", "c-1")
    said = engine.add_message(cid, "user", "hello", message_id=f"{MARK}-msg")
    engine.start_turn(cid, said)
    engine.add_message(cid, "assistant", "hi", message_id=f"{MARK}-reply")
    engine.complete_turn(cid, f"{MARK}-reply")
    engine.update_context(cid, {f"{MARK} key": 1})
    engine.update_context(cid, removed=[f"{MARK} key"])
    engine.record_error(cid, f"{MARK} could not be reached")
    flow = engine.start_flow(cid, "intake", "design").flow_id
    engine.cancel(flow, f"{MARK} changed their mind")
    engine.disconnect(cid, f"{MARK} hung up")
    engine.end(cid, f"{MARK} said goodbye")
    projected.catch_up()
    shown = voxledger(cli_env, "show", str(cid), "--json").stdout
    assert MARK in shown and MARK in projection_text(database_url, schema)

    voxledger(cli_env, "erase", str(cid), "--yes")
    assert not [state for state in stored_bytes(database_url, schema) if MARK.encode() in state]
    assert MARK not in projection_text(database_url, schema)
    for command in ("show", "log", "audit"):
        assert MARK not in voxledger(cli_env, command, str(cid), "--json").stdout
    assert MARK not in voxledger(cli_env, "export", str(cid)).stdout
    with fresh_engine(database_url, schema) as reader:
        state = reader.get_conversation(cid)
        assert {m.id for m in state.messages} == {ERASED} and state.end_reason == ERASED
        assert MARK not in json.dumps(msgspec.to_builtins(reader.history(cid)), default=str)


def test_an_erased_stream_still_records_system_facts_with_their_free_text_erased(
    engine: Engine,
) -> None:
    cid = engine.start_conversation("voice")
    engine.connect(cid, "twilio", "c-1")
    engine.add_message(cid, "user", f"{MARK} speaking")
    engine.store.erase(cid)  # type: ignore[attr-defined]
    engine.record_error(cid, f"{MARK}: the line dropped")
    with pytest.raises(Erased):
        engine.add_message(cid, "user", "more content")
    engine.disconnect(cid, f"{MARK} hung up")
    engine.end(cid, f"{MARK} is gone")
    engine.store.forget_cached()  # type: ignore[attr-defined]
    state = engine.get_conversation(cid)
    assert state.status == "ended" and state.end_reason == ERASED
    assert state.connection.last_error == ERASED


def test_only_the_keys_looked_up_since_the_last_refresh_are_read_again(engine: Engine) -> None:
    """A chat makes a stream per form it fills: streams out of use are left to lapse, not
    read again for ever (the refresh took 150 ms after minutes of the served bench)."""
    keys = engine.store.keys  # type: ignore[attr-defined]
    now = [1000.0]
    keys.clock = lambda: now[0]
    ids = [engine.start_conversation("telegram", f"{MARK} {k}") for k in range(4)]
    assert all(keys.known_not_erased(cid) for cid in ids)
    now[0] += keys.ttl_s / 3  # the next refresh is due (the saves above made one)
    keys.claim_due()  # that refresh: what was looked up so far is its business
    assert all(keys.known_not_erased(cid) for cid in ids[:2])  # in use since
    now[0] += keys.ttl_s * 0.6  # due: stale within half the cache time
    assert set(keys.claim_due()) == set(ids[:2])
    assert keys.claim_due() == {}  # at most every third of the cache time


def test_the_streams_noted_between_refreshes_are_bounded(engine: Engine) -> None:
    """A process that never refreshes (a replay, the projection worker) still looks keys
    up for every sealed value: what it notes for the next refresh stays within the cache's
    size."""
    keys = engine.store.keys  # type: ignore[attr-defined]
    keys.cache_size = 3
    for _ in range(10):
        keys.known_not_erased(uuid4())
    assert len(keys._looked_up) == 3


def test_keys_in_use_are_read_again_together_before_they_go_stale(
    engine: Engine, database_url: str, schema: str
) -> None:
    """Under steady traffic no command waits for a read of its own stream's key: the keys
    due soon are read again in one statement (and an erasure elsewhere is seen by it)."""
    keys = engine.store.keys  # type: ignore[attr-defined]
    now = [1000.0]
    keys.clock = lambda: now[0]  # the key ring's own clock, moved by hand
    ids = [engine.start_conversation("telegram", f"{MARK} {k}") for k in range(5)]
    assert all(keys.known_not_erased(cid) for cid in ids)
    single: list[UUID] = []
    fetch = keys._fetch
    keys._fetch = lambda stream: single.append(stream) or fetch(stream)
    now[0] += keys.ttl_s * 0.6  # due: stale within half the cache time
    keys.refresh_due()
    now[0] += keys.ttl_s * 0.6  # past the first reads' time: the fresh read vouches
    assert all(keys.known_not_erased(cid) for cid in ids) and not single
    with fresh_engine(database_url, schema) as eraser:
        eraser.store.erase(ids[0])  # type: ignore[attr-defined]
    keys.refresh_due()  # due again
    assert not keys.known_not_erased(ids[0]) and keys.is_erased(ids[0])
    assert all(keys.known_not_erased(cid) for cid in ids[1:]) and not single
    with pytest.raises(Erased):
        engine.add_message(ids[0], "user", "more")
