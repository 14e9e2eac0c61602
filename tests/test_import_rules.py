"""`voxledger import` lets in only what the commands would have recorded: each event is
re-enacted by its command on the state before it. A file that breaks a rule is refused as a
whole, in one line that names the line of the file, and nothing of it is written."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import sql

from voxledger.domain.engine import Engine

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]


def voxledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VOXLEDGER, *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def laptop_schema(database_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def exported(engine: Engine, cli_env: dict[str, str]) -> list[dict[str, Any]]:
    """A conversation with a message, a flow answered, refused and answered again, and an
    end: exported as the lines of a file."""
    cid = engine.start_conversation("chat", "Ivan", {"plan": "basic"})
    engine.add_message(cid, "user", "I want to report a visit")
    engine.start_turn(cid)
    engine.complete_turn(cid)
    flow = engine.start_flow(cid, "intake", "interview").flow_id
    engine.answer(flow, "not a number")
    engine.answer(flow, "1042")
    engine.end(cid, "done")
    result = voxledger(cli_env, "export", str(cid))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def import_file(
    lines: list[dict[str, Any]], cli_env: dict[str, str], schema: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return voxledger({**cli_env, "VOXLEDGER_SCHEMA": schema}, "import", str(path))


def stored(database_url: str, schema: str) -> tuple[int, int]:
    """Events and keys in the schema (zero where the tables do not exist)."""
    counts = []
    with psycopg.connect(database_url) as conn:
        for table in ("voxledger_events", "voxledger_keys"):
            exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()
            if exists and exists[0]:
                counts.append(conn.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()[0])
            else:
                counts.append(0)
    return counts[0], counts[1]


def changed(line: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The line with some fields of its event replaced, its state and data kept in step
    (as someone who edits a file with care would)."""
    state = msgspec.msgpack.decode(base64.b64decode(line["state"]))
    state.update(fields)
    raw = msgspec.msgpack.encode(state)
    data = msgspec.json.decode(msgspec.json.encode(msgspec.to_builtins(state, enc_hook=str)))
    time = state.get("timestamp", line["time"])
    when = time.isoformat() if isinstance(time, datetime) else line["time"]
    return {**line, "state": base64.b64encode(raw).decode(), "data": data, "time": when}


def index_of(lines: list[dict[str, Any]], topic: str, nth: int = 0) -> int:
    found = [k for k, line in enumerate(lines) if line.get("topic", "").endswith(topic)]
    return found[nth]


def test_an_untouched_export_imports(
    exported, cli_env, laptop_schema, tmp_path, database_url
) -> None:
    result = import_file(exported, cli_env, laptop_schema, tmp_path)
    assert result.returncode == 0, result.stderr
    assert stored(database_url, laptop_schema)[0] == len(exported) - 1


Tamper = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def _with(topic: str, nth: int = 0, **fields: Any) -> Tamper:
    def tamper(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        k = index_of(lines, topic, nth)
        return [*lines[:k], changed(lines[k], **fields), *lines[k + 1 :]]

    return tamper


def _message_after_end(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ended = index_of(lines, "Conversation.Ended")
    end = msgspec.msgpack.decode(base64.b64decode(lines[ended]["state"]))["timestamp"]
    message = changed(
        lines[index_of(lines, "MessageAdded")],
        message_id="late",
        content="after the end",
        timestamp=end,
    )
    message["version"] = lines[ended]["version"] + 1
    return [*lines, message]


def _time_backwards(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    k = index_of(lines, "Conversation.Ended")
    return [*lines[:k], changed(lines[k], timestamp=datetime(2001, 1, 1, tzinfo=UTC))]


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (_with("MessageAdded", content="a\x00b"), "NUL"),
        (_with("Conversation.Started", participant="Iv\x00an"), "NUL"),
        (_with("AnswerAccepted", value="not a number at all"), "AnswerAccepted"),
        (_with("AnswerRejected", reason="it was fine really"), "reason"),
        (_message_after_end, "has ended"),
        (_time_backwards, "backwards"),
        (_with("MessageAdded", timestamp=datetime(1, 1, 1, 12, tzinfo=UTC)), "outside"),
        (_with("Conversation.Ended", timestamp=datetime(9999, 1, 1, tzinfo=UTC)), "outside"),
        (_with("MessageAdded", metadata={"score": float("nan")}), "not finite"),
        (_with("MessageAdded", metadata={"score": float("inf")}), "not finite"),
        (_with("MessageAdded", extra="smuggled"), "no field extra"),
        (_with("TurnStarted", turn_id="x"), "turn_id"),
        (_with("AnswerAccepted", next_step="client_name"), "next_step"),
    ],
)
def test_a_file_that_breaks_a_rule_is_refused_naming_its_line_and_writes_nothing(
    exported, cli_env, laptop_schema, tmp_path, database_url, tamper: Tamper, says: str
) -> None:
    lines = tamper(exported)  # the scenario's export holds every event tampered with
    result = import_file(lines, cli_env, laptop_schema, tmp_path)
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("voxledger: error: line ")
    assert says in result.stderr
    assert stored(database_url, laptop_schema) == (0, 0)


def test_a_flow_that_ends_part_way_through_a_command_is_refused(
    scenario, cli_env, laptop_schema, tmp_path, database_url
) -> None:
    result = voxledger(cli_env, "export", str(scenario.conversation_id))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    completed = index_of(lines, "Flow.Completed")  # recorded with the answer before it
    cut = [*lines[:completed], *lines[completed + 1 :]]
    refused = import_file(cut, cli_env, laptop_schema, tmp_path)
    assert refused.returncode == 1 and refused.stderr.startswith("voxledger: error: line ")
    assert "Completed" in refused.stderr
    assert stored(database_url, laptop_schema) == (0, 0)
