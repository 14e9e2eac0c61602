"""Shared by the debugging-command tests: a conversation with a completed flow, an edit and
an undo, built with the Engine, with the states the engine returned after each command;
and two ways to run the voxledger command (a real process, or in this process for loops)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, NamedTuple
from uuid import UUID

import pytest

from voxledger.domain.conversation import ConversationState
from voxledger.domain.engine import Engine
from voxledger.domain.flow import FlowState
from voxledger.scripts.main import build_parser

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]


class Scenario(NamedTuple):
    """What was built, and each state the engine returned, by version."""

    conversation_id: UUID
    flow_id: UUID
    conversations: dict[int, ConversationState]
    flows: dict[int, FlowState]


def build_scenario(engine: Engine) -> Scenario:
    """Start, a message, the intake flow in design mode with a rejected answer, an edit, an
    undo and a confirmation, then a turn and the end."""
    conversations: dict[int, ConversationState] = {}
    flows: dict[int, FlowState] = {}
    cid = engine.start_conversation("telegram", "alice", {"lang": "en"})

    def record() -> None:
        state = engine.get_conversation(cid)
        conversations[state.version] = state
        if state.active_flow_id or flows:
            current = engine.get_flow(flow_id)
            flows[current.version] = current

    flow_id: UUID | None = None
    record()
    engine.add_message(cid, "user", "/start")
    record()
    flow_id = engine.start_flow(cid, "intake", "design").flow_id
    record()
    for text in ("12a", "1042", "21.11.2026", "Anna Sidorova", "Main street 5", "office", "lobby"):
        engine.answer(flow_id, text, record_messages=True)
        record()
    engine.edit(flow_id, "place")
    record()
    engine.answer(flow_id, "Second street 7", record_messages=True)
    record()
    engine.undo(flow_id)  # withdraws the zone, the last answer accepted
    record()
    for text in ("north wing", "Berlin", "yes"):
        engine.answer(flow_id, text, record_messages=True)
        record()
    engine.start_turn(cid)
    record()
    engine.complete_turn(cid)
    record()
    engine.end(cid, "done")
    record()
    return Scenario(cid, flow_id, conversations, flows)


def voxledger(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The command as a real process."""
    result = subprocess.run(
        [*VOXLEDGER, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


class InProcess:
    """The command's own code (parser and command function) run in this process, for tests
    that call it many times; what it printed is returned."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, schema: str, *args: str) -> tuple[int, str]:
        self.monkeypatch.setenv("VOXLEDGER_SCHEMA", schema)
        self.capsys.readouterr()
        parsed = build_parser().parse_args(args)
        code = parsed.run(parsed)
        return code, self.capsys.readouterr().out

    def json(self, schema: str, *args: str) -> Any:
        code, out = self(schema, *args, "--json")
        assert code == 0
        return json.loads(out)
