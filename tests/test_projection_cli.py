"""The projection commands, run as real processes against the test's schema."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from conftest import Spawn, StepClock

from voxledger.domain.engine import Engine

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]


def voxledger(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([*VOXLEDGER, *args], env=env, capture_output=True, text=True)
    assert result.returncode == code, result.stderr
    return result


def as_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(voxledger(env, *args, "--json").stdout)


def a_flow_with_a_bad_answer_and_an_edit(engine: Engine) -> tuple[UUID, UUID]:
    cid = engine.start_conversation("telegram", "chat-9")
    fid = engine.start_flow(cid, "intake", "interview").flow_id
    for text in ["1042", "yesterday", "21.11.2026", "Ivan"]:
        engine.answer(fid, text)
    engine.edit(fid, "employee")
    engine.answer(fid, "Anna")
    return cid, fid


def test_project_run_once_catches_up_and_status_reports_no_lag(
    engine: Engine, cli_env: dict[str, str]
) -> None:
    a_flow_with_a_bad_answer_and_an_edit(engine)
    head = engine.store.head()
    behind = as_json(cli_env, "project", "status")
    assert {(s["name"], s["position"], s["lag"]) for s in behind} == {
        ("audit", 0, head),
        ("current", 0, head),
        ("delivery", 0, head),
        ("metrics", 0, head),
        ("outbox", 0, head),
    }
    out = voxledger(cli_env, "project", "run", "--once").stdout
    assert "audit" in out and "current" in out and "metrics" in out
    status = as_json(cli_env, "project", "status")
    assert [(s["position"], s["head"], s["lag"]) for s in status] == [(head, head, 0)] * 5


def test_project_run_follows_new_events_until_sigterm(
    engine: Engine, cli_env: dict[str, str], spawn: Spawn
) -> None:
    process = spawn(
        [*VOXLEDGER, "project", "run"],
        env={**cli_env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "Ctrl-C to stop" in process.stdout.readline()
        cid = engine.start_conversation("voice")
        engine.add_message(cid, "user", "are you there?")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = as_json(cli_env, "conversations")
            if rows and rows[0]["message_count"] == 1:
                break
            time.sleep(0.05)
        assert rows[0]["conversation_id"] == str(cid) and rows[0]["message_count"] == 1
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "stopped at audit 2, current 2, delivery 2, metrics 2, outbox 2" in out


def test_project_rebuild_shows_progress_and_reports_the_position_reached(
    engine: Engine, cli_env: dict[str, str]
) -> None:
    _, fid = a_flow_with_a_bad_answer_and_an_edit(engine)
    voxledger(cli_env, "project", "run", "--once")
    before = as_json(cli_env, "audit", str(fid))
    result = voxledger(cli_env, "project", "rebuild", "audit")
    assert "rebuilding audit" in result.stderr
    assert f"audit rebuilt up to position {engine.store.head()}; 0 events behind" in result.stdout
    assert as_json(cli_env, "audit", str(fid)) == before
    done = as_json(cli_env, "project", "rebuild", "current")
    assert done == {"projection": "current", "position": engine.store.head(), "lag": 0}
    unknown = voxledger(cli_env, "project", "rebuild", "nope", code=2)
    assert "invalid choice: 'nope'" in unknown.stderr


def test_conversations_lists_by_status_with_the_current_flow(
    engine: Engine, cli_env: dict[str, str]
) -> None:
    cid, fid = a_flow_with_a_bad_answer_and_an_edit(engine)
    ended = engine.start_conversation("voice")
    engine.end(ended)
    voxledger(cli_env, "project", "run", "--once")
    rows = as_json(cli_env, "conversations")
    assert [r["conversation_id"] for r in rows] == [str(ended), str(cid)]
    (idle,) = as_json(cli_env, "conversations", "--status", "idle")
    assert (idle["active_flow_id"], idle["channel"], idle["participant"]) == (
        str(fid),
        "telegram",
        "chat-9",
    )
    assert as_json(cli_env, "conversations", "--status", "error") == []
    table = voxledger(cli_env, "conversations").stdout
    assert "2 conversations" in table and "ended" in table


def test_metrics_reports_totals_and_percentiles_since_a_time(
    engine: Engine, cli_env: dict[str, str], clock: StepClock
) -> None:
    cid = engine.start_conversation("voice")
    old = clock.now - timedelta(days=3)
    engine.add_message(cid, "user", "long ago", at=old)
    said = engine.add_message(cid, "user", "what time is it?")
    engine.start_turn(cid, said)
    engine.complete_turn(cid)
    engine.record_usage(cid, tokens_in=120, tokens_out=30, cost=0.004)
    voxledger(cli_env, "project", "run", "--once")
    everything = as_json(cli_env, "metrics")
    assert (everything["messages"], everything["turns"], everything["tokens_in"]) == (2, 1, 120)
    assert everything["response"]["count"] == 1 and everything["response"]["p99_ms"] is not None
    today = as_json(cli_env, "metrics", "--since", "24h")
    assert (today["messages"], today["cost"]) == (1, 0.004)
    iso = as_json(cli_env, "metrics", "--since", (old - timedelta(hours=1)).isoformat())
    assert iso["messages"] == 2
    bad = voxledger(cli_env, "metrics", "--since", "last week", code=2)  # usage
    assert "neither an ISO 8601 time nor a span like 24h" in bad.stderr
    assert "response time ms" in voxledger(cli_env, "metrics").stdout


def test_audit_lists_a_flows_answers_rejections_and_edits(
    engine: Engine, cli_env: dict[str, str]
) -> None:
    _, fid = a_flow_with_a_bad_answer_and_an_edit(engine)
    voxledger(cli_env, "project", "run", "--once")
    trail = as_json(cli_env, "audit", str(fid))
    assert [e["event_type"] for e in trail] == [
        "Started",
        "AnswerAccepted",
        "AnswerRejected",
        "AnswerAccepted",
        "AnswerAccepted",
        "EditRequested",
        "FieldEdited",
    ]
    assert trail[2]["summary"].startswith("date: rejected yesterday")
    assert trail[-1]["changes"]["employee"] == {"old": "Ivan", "new": "Anna"}
    table = voxledger({**cli_env, "COLUMNS": "250"}, "audit", str(fid)).stdout
    assert "employee: Ivan -> Anna" in table
    missing = voxledger(cli_env, "audit", "not-an-id", code=2)  # usage
    assert "is not a conversation id" in missing.stderr


def test_funnel_reports_each_step_and_refuses_an_unknown_flow(
    engine: Engine, cli_env: dict[str, str]
) -> None:
    a_flow_with_a_bad_answer_and_an_edit(engine)
    voxledger(cli_env, "project", "run", "--once")
    funnel = as_json(cli_env, "funnel", "intake")
    assert funnel["outcomes"]["started"] == 1
    assert [(s["step"], s["reached"], s["rejected"]) for s in funnel["steps"]] == [
        ("audio_number", 1, 0),
        ("date", 1, 1),
        ("employee", 1, 0),
        ("place", 1, 0),
    ]
    unknown = voxledger(cli_env, "funnel", "nope", code=1)
    assert "no runs of flow 'nope' are recorded" in unknown.stderr


@pytest.mark.parametrize("command", [["conversations"], ["metrics"], ["funnel", "intake"]])
def test_a_query_notes_on_stderr_when_the_projections_trail_the_log(
    engine: Engine, cli_env: dict[str, str], command: list[str]
) -> None:
    a_flow_with_a_bad_answer_and_an_edit(engine)
    voxledger(cli_env, "project", "run", "--once")
    engine.start_conversation("voice")
    result = voxledger(cli_env, *command, "--json")
    json.loads(result.stdout)
    assert "the projections are 1 events behind the log" in result.stderr
