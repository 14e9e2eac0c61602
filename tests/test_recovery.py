"""Crashes and hostile input: a killed process loses nothing committed; unreadable events
are named, and the rest of the log stays readable."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from uuid import UUID

import msgspec
import psycopg
import pytest
from builtin_flows import INTAKE_V1
from conftest import Spawn
from hypothesis import given, settings
from hypothesis import strategies as st

from voxledger.adapters.store.mapper import CorruptEvent, MsgspecMapper
from voxledger.domain.engine import Engine
from voxledger.domain.errors import ValidationFailed

ANSWER_SLOWLY = """
import sys, time, uuid
from voxledger.adapters.bootstrap import open_engine
answers = ["1042", "21.11.2026", "Ivan", "Kazan Arena", "office", "north wing", "Kazan", "yes"]
with open_engine() as engine:
    flow_id = uuid.UUID(sys.argv[1])
    for text in answers:
        reply = engine.answer(flow_id, text, record_messages=True)
        print(reply.step, flush=True)
        time.sleep(0.3)
"""


def test_a_flow_killed_halfway_resumes_at_the_right_step_in_a_new_process(
    engine: Engine, cli_env: dict[str, str], spawn: Spawn
) -> None:
    cid = engine.start_conversation("telegram")
    flow_id = engine.start_flow(cid, "intake", "design").flow_id
    process = spawn(
        [sys.executable, "-c", ANSWER_SLOWLY, str(flow_id)],
        env=cli_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    asked = [process.stdout.readline().strip() for _ in range(4)]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert asked == INTAKE_V1.path("design")[1:5]
    shown = subprocess.run(
        [sys.executable, "-m", "voxledger.scripts.main", "flow", str(flow_id), "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        check=True,
    )
    state = json.loads(shown.stdout)
    answered = len(state["answers"])
    assert answered in (4, 5)  # the answer in flight when killed committed whole, or not at all
    assert state["step"] == INTAKE_V1.path("design")[answered]
    assert state["prompt"] == INTAKE_V1.prompt(state["step"], state["answers"])
    conversation = engine.get_conversation(cid)
    assert len(conversation.messages) == 2 * answered  # each answer with its reply, atomically


def test_every_log_line_carries_the_conversation_id(cli_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "voxledger.scripts.main", "demo", "--json"],
        env={**cli_env, "VOXLEDGER_LOG_LEVEL": "DEBUG"},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) > 40
    demo = json.loads(result.stdout)["conversation"]["id"]
    assert {line["conversation_id"] for line in lines} == {demo}
    assert all("version" in line and "type" in line for line in lines)


def plant(database_url: str, schema: str, stream: UUID, version: int, topic: str, state: bytes):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            f"UPDATE {schema}.voxledger_events SET topic = %s, state = %s "
            "WHERE originator_id = %s AND originator_version = %s",
            (topic, state, stream, version),
        )


@pytest.mark.parametrize(
    ("topic", "state", "reason"),
    [
        ("voxledger:Conversation.Renamed", msgspec.msgpack.encode({}), "unknown event topic"),
        ("voxledger:Conversation.MessageAdded", b"\x92\x01", "cannot decode"),
        ("voxledger:Conversation.MessageAdded", msgspec.msgpack.encode({"x": 1}), "cannot"),
    ],
)
def test_an_unreadable_event_is_named_and_other_conversations_stay_readable(
    engine: Engine, database_url: str, schema: str, topic: str, state: bytes, reason: str
) -> None:
    broken = engine.start_conversation("chat")
    engine.add_message(broken, "user", "hello")
    healthy = engine.start_conversation("chat")
    engine.add_message(healthy, "user", "still here")
    plant(database_url, schema, broken, 2, topic, state)
    engine.store.forget_cached()
    with pytest.raises(CorruptEvent, match=reason) as error:
        engine.get_conversation(broken)
    assert f"stream {broken} version 2" in str(error.value)
    assert engine.get_conversation(healthy).messages[0].content == "still here"
    assert [h.type for h in engine.history(healthy)] == ["Started", "MessageAdded"]


@given(
    st.binary(max_size=200),
    st.sampled_from(
        [
            "voxledger:Conversation.MessageAdded",
            "voxledger:Flow.Completed",
            "voxledger:Conversation.Snapshot",
        ]
    ),
)
@settings(max_examples=300, deadline=None)
def test_the_mapper_turns_any_garbage_into_a_named_error_or_an_event(data, topic) -> None:
    from eventsourcing.persistence import StoredEvent

    try:
        MsgspecMapper(transcoder=None).to_domain_event(StoredEvent(UUID(int=7), 3, topic, data))
    except CorruptEvent as error:
        assert "version 3" in str(error)


@pytest.mark.parametrize(
    "content",
    [
        "Robert'); DROP TABLE voxledger_events;--",
        "line\twith\x07control\x1bcharacters\r\n",
        "emoji 🎙️ and RTL \u202e text",
        "' OR 1=1 --",
    ],
)
def test_sql_looking_and_control_character_content_is_stored_and_returned_verbatim(
    engine: Engine, content: str
) -> None:
    cid = engine.start_conversation("chat")
    engine.add_message(cid, "user", content)
    engine.update_context(cid, {"note": content})
    engine.store.forget_cached()
    state = engine.get_conversation(cid)
    assert state.messages[0].content == content and state.context["note"] == content


def test_text_that_is_not_valid_unicode_is_refused_at_the_engine(engine: Engine) -> None:
    cid = engine.start_conversation("chat")
    invalid = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    with pytest.raises(ValidationFailed, match="UTF-8"):
        engine.add_message(cid, "user", invalid)
    assert engine.get_conversation(cid).version == 1


def test_oversized_context_is_refused_and_the_limit_is_configurable(engine: Engine) -> None:
    cid = engine.start_conversation("chat")
    with pytest.raises(ValidationFailed, match="context"):
        engine.update_context(cid, {"blob": "x" * 300_000})
    engine.max_context_bytes = 400_000
    engine.update_context(cid, {"blob": "x" * 300_000})
    assert engine.get_conversation(cid).version == 2


def test_a_nul_character_is_refused_by_every_command_and_nothing_is_recorded(
    engine: Engine,
) -> None:
    # PostgreSQL text cannot hold NUL: voxledger refuses it at every edge, one way.
    with pytest.raises(ValidationFailed, match="NUL"):
        engine.start_conversation("chat", "nul\x00participant")
    cid = engine.start_conversation("chat")
    reply = engine.start_flow(cid, "intake", "design")
    refusals = [
        lambda: engine.add_message(cid, "user", "a\x00b"),
        lambda: engine.add_message(cid, "user", "ok", metadata={"k\x00": 1}),
        lambda: engine.update_context(cid, {"note": ["x\x00"]}),
        lambda: engine.record_error(cid, "boom\x00"),
        lambda: engine.answer(reply.flow_id, "Iv\x00an", record_messages=True),
        lambda: engine.cancel(reply.flow_id, "no\x00"),
        lambda: engine.end(cid, "bye\x00"),
    ]
    for refused in refusals:
        with pytest.raises(ValidationFailed, match="NUL"):
            refused()
    # A lone surrogate (what a non-UTF-8 command-line argument decodes to) is no text either.
    for refused in (
        lambda: engine.add_message(cid, "user", "ok", metadata={"note": "half \udaa7"}),
        lambda: engine.record_error(cid, "half \udaa7"),
        lambda: engine.answer(reply.flow_id, "Iv\ud800an"),
    ):
        with pytest.raises(ValidationFailed, match="not valid Unicode"):
            refused()
    engine.store.forget_cached()
    assert engine.get_conversation(cid).version == 2  # started, flow begun: nothing more
    assert engine.get_flow(reply.flow_id).version == 1
