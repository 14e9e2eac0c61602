"""`log`, `at`, `diff`, `bisect` and `watch` on a conversation with a completed flow, an
edit and an undo, against real PostgreSQL."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from datetime import timedelta

import pytest
from debug_scenario import VOXLEDGER, InProcess, Scenario, voxledger

from voxledger.adapters.debug.history import History
from voxledger.adapters.debug.timetravel import document, state_document
from voxledger.domain.engine import Engine
from voxledger.scripts.output import to_plain

# -- log ---------------------------------------------------------------------------------------


def test_log_merges_the_conversation_and_its_flow_by_time_then_position(
    cli_env: dict[str, str], scenario: Scenario
) -> None:
    cid, fid = str(scenario.conversation_id), str(scenario.flow_id)
    log = json.loads(voxledger(cli_env, "log", cid, "--json").stdout)
    keys = [(e["time"], e["position"]) for e in log]
    assert keys == sorted(keys)
    by_stream = {s: [e["version"] for e in log if e["stream"] == s] for s in (cid, fid)}
    assert by_stream[cid] == list(range(1, max(scenario.conversations) + 1))
    assert by_stream[fid] == list(range(1, max(scenario.flows) + 1))
    assert {e["stream_type"] for e in log} == {"conversation", "flow"}
    began = next(e for e in log if e["type"] == "FlowBegan")
    assert began["data"]["flow_id"] == fid and began["summary"].startswith("flow_id=")
    # The flow's start follows the conversation's FlowBegan: same time, later position.
    assert log[log.index(began) + 1]["type"] == "Started"
    assert log[log.index(began) + 1]["stream"] == fid


def test_log_for_people_prints_one_line_per_event_with_its_stream(
    cli_env: dict[str, str], scenario: Scenario
) -> None:
    lines = voxledger(cli_env, "log", str(scenario.conversation_id)).stdout.splitlines()
    assert len(lines) == max(scenario.conversations) + max(scenario.flows)
    assert "conversation  v1" in lines[0] and "Started" in lines[0]
    flow_label = f"flow {str(scenario.flow_id)[:8]}"
    assert any(flow_label in line and "AnswerWithdrawn" in line for line in lines)


def test_log_filters_by_type_time_window_and_flow(run: InProcess, schema: str, scenario) -> None:
    cid, fid = str(scenario.conversation_id), str(scenario.flow_id)
    picked = run.json(schema, "log", cid, "--type", "FlowBegan,EditRequested", "--type", "Ended")
    assert [e["type"] for e in picked] == ["FlowBegan", "EditRequested", "Ended"]
    started = run.json(schema, "log", cid, "--type", "Started")
    assert [e["stream_type"] for e in started] == ["conversation", "flow"]

    everything = run.json(schema, "log", cid)
    since, until = everything[5]["time"], everything[20]["time"]
    window = run.json(schema, "log", cid, "--since", since, "--until", until)
    assert window == [e for e in everything if since <= e["time"] <= until]
    assert window[0]["time"] == since and window[-1]["time"] == until

    flow_only = run.json(schema, "log", cid, "--flow", fid)
    assert flow_only == [e for e in everything if e["stream"] == fid]
    assert run.json(schema, "log", fid) == flow_only  # a flow's id logs that flow


def test_log_refuses_an_unknown_type_and_a_flow_of_another_conversation(
    cli_env: dict[str, str], engine: Engine, scenario: Scenario
) -> None:
    cid = str(scenario.conversation_id)
    unknown = voxledger(cli_env, "log", cid, "--type", "MessageAded", check=False)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    assert "no event type 'MessageAded'; known types: ActionFailed, ActionStarted" in unknown.stderr
    other = engine.start_flow(engine.start_conversation("chat"), "intake", "design").flow_id
    stranger = voxledger(cli_env, "log", cid, "--flow", str(other), check=False)
    assert stranger.returncode == 1
    assert stranger.stderr == f"voxledger: error: {other} is not a flow of {cid}\n"


# -- at ----------------------------------------------------------------------------------------


def test_at_each_version_shows_the_state_the_engine_returned_then(
    run: InProcess, schema: str, scenario: Scenario
) -> None:
    for version, state in scenario.conversations.items():
        shown = run.json(schema, "at", str(scenario.conversation_id), "--version", str(version))
        assert shown == to_plain(state_document(state)), f"version {version}"
    for version, state in scenario.flows.items():
        shown = run.json(schema, "at", str(scenario.flow_id), "--version", str(version))
        assert shown == to_plain(document(state)), f"flow version {version}"


def test_at_a_time_shows_the_last_version_recorded_by_then(
    run: InProcess, schema: str, scenario: Scenario
) -> None:
    for state in scenario.conversations.values():
        moment = state.updated_at + timedelta(milliseconds=500)  # before the next command
        shown = run.json(schema, "at", str(scenario.conversation_id), "--time", moment.isoformat())
        assert shown["version"] == state.version
    undone = next(s for s in scenario.flows.values() if "zone" not in s.answers and s.version > 8)
    shown = run.json(schema, "at", str(scenario.flow_id), "--time", undone.updated_at.isoformat())
    assert shown == to_plain(document(undone))


def test_at_before_the_conversation_began_or_past_its_last_version_is_one_clear_error(
    cli_env: dict[str, str], scenario: Scenario
) -> None:
    cid = str(scenario.conversation_id)
    first = scenario.conversations[1].started_at
    early = voxledger(
        cli_env, "at", cid, "--time", (first - timedelta(hours=1)).isoformat(), check=False
    )
    assert early.returncode == 1 and early.stderr.count("\n") == 1
    assert f"{cid} did not exist yet at" in early.stderr
    assert f"its first event is at {first.isoformat()}" in early.stderr
    last = max(scenario.conversations)
    late = voxledger(cli_env, "at", cid, "--version", str(last + 1), check=False)
    assert late.returncode == 1
    assert late.stderr == (
        f"voxledger: error: {cid} has versions 1 to {last}; there is no version {last + 1}\n"
    )
    human = voxledger(cli_env, "at", cid, "--version", "3").stdout
    assert "status                 idle" in human and "version                3" in human


# -- diff --------------------------------------------------------------------------------------

# What each event of the scenario changes, by type (N: the index of the new item).
CHANGED_BY = {
    "MessageAdded": {"messages.N", "usage.messages"},
    "FlowBegan": {"active_flow_id"},
    "FlowFinished": {"active_flow_id"},
    "TurnStarted": {"status", "turns.N", "current_turn_id"},
    "TurnCompleted": {
        "status",
        "usage.turns",
        "usage.response_time_ms_total",
        "usage.response_time_ms_min",
        "usage.response_time_ms_max",
        "turns.N.completed_at",
        "turns.N.duration_ms",
        "current_turn_id",
    },
    "Ended": {"status", "ended_at", "end_reason"},
    "AnswerAccepted": {"answers.FIELD", "step"},
    "AnswerRejected": {"rejections.N"},
    "EditRequested": {"editing", "step"},
    "FieldEdited": {"answers.FIELD", "editing", "step"},
    "AnswerWithdrawn": {"answers.FIELD", "step"},
    "Confirmed": set(),
    "Completed": {"status", "step"},
}


def test_diff_of_adjacent_versions_names_exactly_the_fields_the_event_changed(
    run: InProcess, schema: str, scenario: Scenario
) -> None:
    for stream in (scenario.conversation_id, scenario.flow_id):
        log = [e for e in run.json(schema, "log", str(stream)) if e["stream"] == str(stream)]
        for before, event in itertools.pairwise(log):
            found = run.json(
                schema, "diff", str(stream), str(before["version"]), str(event["version"])
            )
            paths = {_general(c["path"], event) for c in found["changes"]}
            assert paths == CHANGED_BY[event["type"]], f"v{event['version']} {event['type']}"
            assert (found["from"]["version"], found["to"]["version"]) == (
                before["version"],
                event["version"],
            )


def _general(path: str, event: dict) -> str:
    field = event["data"].get("field")
    if field and path == f"answers.{field}":
        return "answers.FIELD"
    parts = path.split(".")
    return ".".join("N" if p.isdigit() else p for p in parts)


def test_diff_between_two_times_shows_added_items_removed_keys_and_old_to_new_values(
    cli_env: dict[str, str], scenario: Scenario
) -> None:
    fid = str(scenario.flow_id)
    edited = next(s for s in scenario.flows.values() if s.answers.get("place") == "Second street 7")
    undone = next(
        s for s in scenario.flows.values() if s.version > edited.version and "zone" not in s.answers
    )
    out = voxledger(cli_env, "diff", fid, str(edited.version), undone.updated_at.isoformat()).stdout
    lines = out.splitlines()
    assert lines[0].startswith(f"{fid}: version {edited.version} (")
    assert f"-> version {undone.version} (" in lines[0]
    assert '  - answers.zone: "lobby"' in lines
    assert '  step: "city" -> "zone"' in lines
    cid = str(scenario.conversation_id)
    whole = json.loads(
        voxledger(cli_env, "diff", cid, "1", str(max(scenario.conversations)), "--json").stdout
    )
    added = [c["path"] for c in whole["changes"] if c["kind"] == "added"]
    assert "messages.0" in added and "turns.0" in added and "context.lang" not in added
    assert {"path": "status", "kind": "changed", "old": "idle", "new": "ended"} in whole["changes"]


# -- bisect ------------------------------------------------------------------------------------

MONOTONE = [
    'flow.answers.place == "Second street 7"',
    'flow.status == "completed"',
    "usage.messages >= 6",
    '"city" in flow.answers',
    "flow.rejections.length >= 1 and usage.messages > 2",
    "turns.length >= 1",
    "active_flow_id == null and messages.length > 0 and flow != null",
]


@pytest.mark.parametrize("condition", MONOTONE)
def test_bisect_finds_the_same_version_as_a_linear_scan(
    run: InProcess, schema: str, scenario: Scenario, condition: str
) -> None:
    cid = str(scenario.conversation_id)
    binary = run.json(schema, "bisect", cid, "--where", condition)
    linear = run.json(schema, "bisect", cid, "--where", condition, "--linear")
    assert binary["version"] is not None
    assert binary["version"] == linear["version"]
    assert binary["tested"] <= 7 < linear["tested"] or linear["version"] <= 7


def test_bisect_on_a_flow_id_searches_the_flows_own_versions(
    run: InProcess, schema: str, scenario: Scenario
) -> None:
    fid = str(scenario.flow_id)
    edited = run.json(schema, "bisect", fid, "--where", 'answers.place == "Second street 7"')
    assert edited["event_type"] == "FieldEdited"
    # An edit in progress is visible only between the flow's own versions.
    editing = run.json(schema, "bisect", fid, "--where", 'editing == "city"', "--linear")
    assert editing["event_type"] == "EditRequested"
    assert editing["version"] == edited["version"] - 1


def test_bisect_says_when_a_condition_no_longer_holds_and_linear_finds_where_it_did(
    cli_env: dict[str, str], scenario: Scenario
) -> None:
    cid = str(scenario.conversation_id)
    passing = 'flow.step == "zone"'  # asked twice (the undo), then answered for good
    binary = voxledger(cli_env, "bisect", cid, "--where", passing, check=False)
    assert binary.returncode == 1
    assert "does not hold at the last version" in binary.stdout and "--linear" in binary.stdout
    linear = voxledger(cli_env, "bisect", cid, "--where", passing, "--linear")
    assert linear.stdout.startswith("first holds at version ")
    assert "MessageAdded" in linear.stdout and "[linear," in linear.stdout


def test_bisect_refuses_unknown_fields_and_bad_syntax_in_one_line(
    cli_env: dict[str, str], scenario: Scenario
) -> None:
    cid = str(scenario.conversation_id)
    unknown = voxledger(cli_env, "bisect", cid, "--where", "usage.turn > 1", check=False)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    assert "unknown field 'usage.turn': usage has" in unknown.stderr
    bad = voxledger(cli_env, "bisect", cid, "--where", "status = 'ended'", check=False)
    assert bad.stderr == (
        "voxledger: error: bad condition at column 8: unexpected '=' in \"status = 'ended'\"\n"
    )


# -- watch -------------------------------------------------------------------------------------


def test_watch_follows_new_events_of_the_conversation_and_of_a_flow_it_begins(
    cli_env: dict[str, str], engine: Engine
) -> None:
    cid = engine.start_conversation("voice")
    process = subprocess.Popen(
        [
            *VOXLEDGER,
            "watch",
            str(cid),
            "--from-start",
            "--until-ended",
            "--timeout",
            "60",
            "--json",
        ],
        env={**cli_env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = json.loads(process.stdout.readline())
        assert (first["type"], first["version"]) == ("Started", 1)
        engine.add_message(cid, "user", "hello")
        flow_id = engine.start_flow(cid, "intake", "design").flow_id
        engine.answer(flow_id, "1042")
        engine.end(cid, "bye")
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0
    events = [first, *(json.loads(line) for line in out.splitlines())]
    assert [e["type"] for e in events if e["stream"] == str(cid)] == [
        "Started",
        "MessageAdded",
        "FlowBegan",
        "Ended",
    ]
    assert [e["type"] for e in events if e["stream"] == str(flow_id)] == [
        "Started",
        "AnswerAccepted",
    ]


def test_following_finds_a_new_flow_and_puts_its_events_before_the_later_ones(
    engine: Engine,
) -> None:
    # One read finds the flow's beginning and the conversation's end together (commands
    # come fast): the flow's events, read next, must still come before that end.
    cid = engine.start_conversation("voice")
    flow_id = engine.start_flow(cid, "intake", "design").flow_id
    engine.answer(flow_id, "1042")
    engine.end(cid, "bye")
    followed = []
    for recorded in History(engine.store).follow(cid, after={cid: 0}, until=lambda: False):
        followed.append((recorded.event.originator_id, type(recorded.event).__name__))
        if followed[-1] == (cid, "Ended"):
            break
    assert followed == [
        (cid, "Started"),
        (cid, "FlowBegan"),
        (flow_id, "Started"),
        (flow_id, "AnswerAccepted"),
        (cid, "Ended"),
    ]


def test_watch_stops_at_its_timeout_and_says_so_when_it_waited_for_the_end(
    cli_env: dict[str, str], engine: Engine
) -> None:
    cid = str(engine.start_conversation("voice"))
    quiet = voxledger(cli_env, "watch", cid, "--timeout", "0.3")
    assert quiet.stdout == ""
    waiting = voxledger(cli_env, "watch", cid, "--until-ended", "--timeout", "0.3", check=False)
    assert waiting.returncode == 1
    assert waiting.stderr == f"voxledger: error: {cid} had not ended after 0.3 s\n"
    engine.end(cid)
    assert voxledger(cli_env, "watch", cid, "--until-ended").returncode == 0  # already ended


# -- help --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["log", "watch", "at", "diff", "bisect", "replay", "export", "import"]
)
def test_each_debugging_command_explains_itself_in_one_screen_with_an_example(
    command: str,
) -> None:
    result = subprocess.run(
        [*VOXLEDGER, command, "--help"], capture_output=True, text=True, env=os.environ
    )
    assert result.returncode == 0
    assert "example" in result.stdout
    assert len(result.stdout.splitlines()) <= 40
