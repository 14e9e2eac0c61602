"""`replay` (and --verify), `export` and `import`, against real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest
from debug_scenario import InProcess, Scenario, voxledger
from psycopg import sql

from voxledger.adapters.bootstrap import open_runner
from voxledger.domain.conversation import ConversationSnapshot, Status
from voxledger.domain.engine import Engine


@pytest.fixture
def other_schema(database_url: str) -> Iterator[str]:
    """A second, empty schema: the laptop an incident is imported into."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def execute(database_url: str, statement: str, schema: str, *params: object) -> list[tuple]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cursor = conn.execute(sql.SQL(statement).format(sql.Identifier(schema)), params)
        return cursor.fetchall() if cursor.description else []


def project(engine: Engine) -> None:
    """Bring the projections up to the log's head."""
    with open_runner(engine.store) as runner:
        runner.catch_up()


def plant_snapshot(engine: Engine, scenario: Scenario, version: int, **wrong: object) -> None:
    """Store a snapshot of the conversation at a version, with some fields changed."""
    state = engine.get_conversation(scenario.conversation_id, version=version)
    state = msgspec.structs.replace(state, **wrong)
    snapshot = ConversationSnapshot(
        originator_id=state.id,
        originator_version=version,
        timestamp=state.updated_at,
        topic=ConversationSnapshot.TOPIC,
        state=state,
    )
    assert engine.store.snapshots is not None
    engine.store.snapshots.put([snapshot])


# -- replay ------------------------------------------------------------------------------------


def test_replay_verify_passes_when_snapshots_and_projection_rows_agree_with_the_events(
    cli_env: dict[str, str], engine: Engine, scenario: Scenario
) -> None:
    plant_snapshot(engine, scenario, 10)  # a true one
    other = engine.start_conversation("chat")
    project(engine)
    engine.add_message(other, "user", "after the projection ran")
    # The projection has not applied that message yet: lag, not a difference.
    result = voxledger(cli_env, "replay", str(scenario.conversation_id), "--verify")
    events = max(scenario.conversations) + max(scenario.flows)
    assert result.stdout == (
        f"replayed 2 streams, {events} events; compared 1 snapshots, 2 projection rows: "
        "no differences\n"
    )
    summary = json.loads(voxledger(cli_env, "replay", "--all", "--verify", "--json").stdout)
    assert summary["differences"] == []
    assert (summary["streams"], summary["events"]) == (3, events + 2)
    assert (summary["snapshots"], summary["rows"]) == (1, 3)


def test_replay_verify_names_the_event_after_which_a_planted_snapshot_differs(
    cli_env: dict[str, str], engine: Engine, scenario: Scenario
) -> None:
    truth = engine.get_conversation(scenario.conversation_id, version=10)
    plant_snapshot(engine, scenario, 10, status=Status.ERROR, context={"planted": True})
    result = voxledger(cli_env, "replay", str(scenario.conversation_id), "--verify", check=False)
    assert result.returncode == 1
    where = f"conversation {scenario.conversation_id}: snapshot after v10 MessageAdded"
    assert result.stdout.splitlines()[:2] == [
        f'{where}: status: events say "{truth.status}", snapshot says "error"',
        f"{where}: context.planted: events say nothing, snapshot says true",
    ]
    assert result.stdout.splitlines()[-1].endswith(": 2 differences")


def test_replay_verify_names_a_tampered_projection_row_and_the_event_it_should_reflect(
    cli_env: dict[str, str], database_url: str, schema: str, engine: Engine, scenario: Scenario
) -> None:
    project(engine)
    execute(
        database_url,
        "UPDATE {}.current_conversations SET message_count = 99",
        schema,
    )
    execute(database_url, "UPDATE {}.current_flows SET current_step = 'nowhere'", schema)
    result = voxledger(cli_env, "replay", "--all", "--verify", check=False)
    assert result.returncode == 1
    last = max(scenario.conversations)
    messages = len(scenario.conversations[last].messages)
    assert result.stdout.splitlines()[:2] == [
        f"conversation {scenario.conversation_id}: projection after v{last} Ended: "
        f"message_count: events say {messages}, projection says 99",
        f"flow {scenario.flow_id}: projection after v{max(scenario.flows)} Completed: "
        'current_step: events say nothing, projection says "nowhere"',
    ]


def test_replay_reports_the_event_the_current_code_cannot_read(
    cli_env: dict[str, str], database_url: str, schema: str, scenario: Scenario
) -> None:
    execute(
        database_url,
        "UPDATE {}.voxledger_events SET state = %s WHERE originator_id = %s "
        "AND originator_version = 5",
        schema,
        b"\xc1 not msgpack",
        scenario.conversation_id,
    )
    result = voxledger(cli_env, "replay", str(scenario.conversation_id), check=False)
    assert result.returncode == 1
    first = result.stdout.splitlines()[0]
    assert first.startswith(
        f"conversation {scenario.conversation_id}: event v5  cannot be replayed: cannot decode "
        "voxledger:Conversation.MessageAdded"
    )


def test_replay_needs_an_id_or_all(cli_env: dict[str, str]) -> None:
    result = voxledger(cli_env, "replay", check=False)
    assert result.returncode == 1
    assert result.stderr == "voxledger: error: give a conversation id or --all, not both\n"


# -- export and import -------------------------------------------------------------------------


def export(cli_env: dict[str, str], scenario: Scenario, path: Path) -> list[str]:
    path.write_text(voxledger(cli_env, "export", str(scenario.conversation_id)).stdout)
    return path.read_text().splitlines()


def test_export_then_import_into_a_fresh_schema_gives_identical_at_output_for_every_version(
    cli_env: dict[str, str],
    run: InProcess,
    schema: str,
    other_schema: str,
    scenario: Scenario,
    tmp_path: Path,
) -> None:
    lines = export(cli_env, scenario, tmp_path / "incident.jsonl")
    header = json.loads(lines[0])
    assert header["streams"] == {
        str(scenario.conversation_id): "conversation",
        str(scenario.flow_id): "flow",
    }
    assert len(lines) == 1 + max(scenario.conversations) + max(scenario.flows)
    laptop = {**cli_env, "VOXLEDGER_SCHEMA": other_schema}
    imported = voxledger(laptop, "import", str(tmp_path / "incident.jsonl"), "--json")
    assert json.loads(imported.stdout)["events"] == len(lines) - 1
    for stream, versions in (
        (scenario.conversation_id, max(scenario.conversations)),
        (scenario.flow_id, max(scenario.flows)),
    ):
        for version in range(1, versions + 1):
            args = ("at", str(stream), "--version", str(version))
            assert run(other_schema, *args) == run(schema, *args), f"{stream} v{version}"
    # The same events in the same order (their positions are the other database's own).
    theirs = run.json(other_schema, "log", str(scenario.conversation_id))
    ours = run.json(schema, "log", str(scenario.conversation_id))
    assert [{**e, "position": 0} for e in theirs] == [{**e, "position": 0} for e in ours]


def test_import_with_new_ids_maps_every_stream_and_every_reference_to_it(
    cli_env: dict[str, str], run: InProcess, schema: str, scenario: Scenario, tmp_path: Path
) -> None:
    export(cli_env, scenario, tmp_path / "copy.jsonl")
    result = json.loads(
        voxledger(cli_env, "import", "--new-ids", str(tmp_path / "copy.jsonl"), "--json").stdout
    )
    cid, fid = (
        result["streams"][str(scenario.conversation_id)],
        result["streams"][str(scenario.flow_id)],
    )
    assert len({cid, fid, str(scenario.conversation_id), str(scenario.flow_id)}) == 4
    began = run.json(schema, "log", cid, "--type", "FlowBegan")
    assert [e["data"]["flow_id"] for e in began] == [fid]
    flow = run.json(schema, "at", fid, "--version", "1")
    assert flow["conversation_id"] == cid
    original = run.json(schema, "at", str(scenario.conversation_id), "--version", "20")
    copy = run.json(schema, "at", cid, "--version", "20")
    assert {**copy, "id": None, "active_flow_id": None} == {
        **original,
        "id": None,
        "active_flow_id": None,
    }
    assert voxledger(cli_env, "replay", "--all", "--verify").returncode == 0


def _drop(lines: list[str], index: int) -> list[str]:
    return lines[:index] + lines[index + 1 :]


def _edit(lines: list[str], index: int, **changes: object) -> list[str]:
    line = json.loads(lines[index])
    for key, value in changes.items():
        if key == "content":
            line["data"]["content"] = value
        else:
            line[key] = value
    return [*lines[:index], json.dumps(line), *lines[index + 1 :]]


def _header_without_flows(line: str) -> str:
    header = json.loads(line)
    header["streams"] = {k: v for k, v in header["streams"].items() if v != "flow"}
    return json.dumps(header)


BROKEN = {
    "bad JSON": (lambda ls: [*ls[:3], "{not json", *ls[4:]], "line 4: not an event line"),
    "an unknown topic": (
        lambda ls: _edit(ls, 2, topic="voxledger:Conversation.Teleported"),
        "line 3: unknown event topic 'voxledger:Conversation.Teleported'",
    ),
    "a topic naming a module": (
        lambda ls: _edit(ls, 2, topic="os:system"),
        "line 3: unknown event topic 'os:system'",
    ),
    "a version gap": (lambda ls: _drop(ls, 2), "has version 3 after version 1"),
    "no first event": (lambda ls: _drop(ls, 1), "has version 2 as its first event"),
    "data edited without its state": (
        lambda ls: _edit(ls, 2, content="something else"),
        "line 3: its data does not match its state (edit neither, or both)",
    ),
    "a stream the header does not list": (
        lambda ls: _edit(ls, 2, stream=str(uuid.uuid4())),
        "is not listed in the header",
    ),
    "a flow without its events": (
        lambda ls: [ln for ln in ls if json.loads(ln).get("stream_type") != "flow"],
        "is listed in the header but has no events",
    ),
    "a reference to a flow the file does not hold": (
        lambda ls: (
            [_header_without_flows(ls[0])]
            + [ln for ln in ls[1:] if json.loads(ln)["stream_type"] != "flow"]
        ),
        ", which the file does not hold",
    ),
    "an empty file": (lambda ls: [], "the file is empty; expected a voxledger export"),
    "no header": (lambda ls: ls[1:], "line 1: not a voxledger export header"),
}


@pytest.mark.parametrize("problem", list(BROKEN))
def test_import_refuses_a_file_that_does_not_validate_and_writes_nothing(
    cli_env: dict[str, str],
    database_url: str,
    other_schema: str,
    scenario: Scenario,
    tmp_path: Path,
    problem: str,
) -> None:
    lines = export(cli_env, scenario, tmp_path / "good.jsonl")
    # The third line is the conversation's second event, a MessageAdded.
    assert json.loads(lines[2])["topic"] == "voxledger:Conversation.MessageAdded"
    breaks, message = BROKEN[problem]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(line + "\n" for line in breaks(lines)))
    laptop = {**cli_env, "VOXLEDGER_SCHEMA": other_schema}
    result = voxledger(laptop, "import", str(bad), check=False)
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert execute(database_url, "SELECT count(*) FROM {}.voxledger_events", other_schema) == [(0,)]


def test_import_refuses_ids_the_database_already_holds(
    cli_env: dict[str, str], database_url: str, schema: str, scenario: Scenario, tmp_path: Path
) -> None:
    export(cli_env, scenario, tmp_path / "again.jsonl")
    before = execute(database_url, "SELECT count(*) FROM {}.voxledger_events", schema)
    result = voxledger(cli_env, "import", str(tmp_path / "again.jsonl"), check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"voxledger: error: the database already holds {scenario.conversation_id}, "
        f"{scenario.flow_id}; import with --new-ids\n"
    )
    assert execute(database_url, "SELECT count(*) FROM {}.voxledger_events", schema) == before
    missing = voxledger(cli_env, "import", str(tmp_path / "nothing.jsonl"), check=False)
    assert missing.stderr.startswith("voxledger: error: cannot read ")


def test_personal_data_travels_in_plaintext_and_is_sealed_again_with_the_targets_keys(
    cli_env: dict[str, str],
    database_url: str,
    other_schema: str,
    scenario: Scenario,
    tmp_path: Path,
) -> None:
    lines = [json.loads(line) for line in export(cli_env, scenario, tmp_path / "p.jsonl")]
    said = next(ln for ln in lines[1:] if ln["data"].get("content") == "12a")
    voxledger({**cli_env, "VOXLEDGER_SCHEMA": other_schema}, "import", str(tmp_path / "p.jsonl"))
    ((state,),) = execute(
        database_url,
        "SELECT state FROM {}.voxledger_events WHERE originator_id = %s "
        "AND originator_version = %s",
        other_schema,
        scenario.conversation_id,
        said["version"],
    )
    assert isinstance(msgspec.msgpack.decode(state)["content"], msgspec.msgpack.Ext)


def test_export_redact_leaves_the_shape_and_replaces_every_personal_value(
    cli_env: dict[str, str], run: InProcess, other_schema: str, scenario: Scenario, tmp_path: Path
) -> None:
    path = tmp_path / "redacted.jsonl"
    path.write_text(voxledger(cli_env, "export", str(scenario.conversation_id), "--redact").stdout)
    laptop = {**cli_env, "VOXLEDGER_SCHEMA": other_schema}
    voxledger(laptop, "import", str(path))
    last = max(scenario.conversations)
    state = run.json(other_schema, "at", str(scenario.conversation_id), "--version", str(last))
    assert {m["content"] for m in state["messages"]} == {"[erased]"}
    assert state["participant"] == "[erased]" and state["metadata"] == {}
    assert len(state["messages"]) == len(scenario.conversations[last].messages)
    flow = run.json(
        other_schema, "at", str(scenario.flow_id), "--version", str(max(scenario.flows))
    )
    assert set(flow["answers"].values()) == {"[erased]"} and flow["status"] == "completed"
    assert voxledger(laptop, "replay", "--all", "--verify").returncode == 0
