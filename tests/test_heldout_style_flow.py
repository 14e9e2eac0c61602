"""A flow written from docs/flows.md alone, in a style the page's examples do not use
(tests/fixtures/heldout: YAML, several choices in one answer, branches on a list's option, a
yes or a no and a skipped step, optional steps, actions), is validated, drawn, tested with
its own conversation tests and run with its actions, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voxledger.adapters.bootstrap import open_actions, open_engine

HELDOUT = Path(__file__).parent / "fixtures" / "heldout"
FLOW = str(HELDOUT / "bike_service.yaml")
CODE = str(HELDOUT / "bike_code.py")
VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]


def voxledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*VOXLEDGER, *args], env=env, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def test_it_validates(cli_env) -> None:
    done = voxledger(cli_env, "flows", "validate", FLOW, "--code", CODE)
    assert (done.returncode, done.stdout) == (0, "OK: 1 file(s), 1 flow definition(s): "
                                                 "bike_service v1\n")  # fmt: skip


def test_it_draws_every_step_and_every_way_on(cli_env) -> None:
    done = voxledger(cli_env, "flows", "graph", "bike_service", "--flows", FLOW, "--code", CODE)
    assert done.returncode == 0, done.stderr
    for line in (
        'step0 -->|"services contains tyres"| step1',
        'step2 -->|"notes skipped"| step4',
        'step4 -->|"collect = true"| step5',
        'step7["phone<br/>ask phone (phone, optional)"]',
        "step8 --> flow_end",
    ):
        assert f"    {line}\n" in done.stdout


def test_its_conversation_tests_pass(cli_env, tmp_path: Path) -> None:
    env = {**cli_env, "BIKE_BOOKINGS": str(tmp_path / "b.jsonl")}
    tests = str(HELDOUT / "bike_service.test.yaml")
    done = voxledger(env, "test", tests, "--flows", FLOW, "--code", CODE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.endswith("3 cases in 1 file: 3 passed, 0 failed\n")


def test_its_actions_run_once_when_runs_end(
    database_url, schema, clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BIKE_BOOKINGS", str(tmp_path / "bookings.jsonl"))
    with open_engine(database_url, schema=schema, clock=clock, flows=[FLOW],
                     code=[CODE]) as engine:  # fmt: skip
        done = engine.start_flow(engine.start_conversation("test"), "bike_service")
        for answer in ("chain, gears", "-", "no", "21.11.2026", "skip", "yes"):
            done = engine.answer(done.flow_id, answer)
        assert done.data == {"services": ["gears", "chain"], "notes": None, "collect": False,
                             "drop_day": "2026-11-21", "phone": None}  # fmt: skip
        left = engine.start_flow(engine.start_conversation("test"), "bike_service")
        engine.cancel(left.flow_id, "/cancel")
        tally = open_actions(engine).catch_up()
        assert (tally.runs, tally.succeeded, tally.failed) == (2, 2, 0)
        assert open_actions(engine).catch_up().attempts == 0
    noted = [json.loads(line) for line in (tmp_path / "bookings.jsonl").read_text().splitlines()]
    assert [(n["key"], n["status"]) for n in noted] == [
        (f"{done.flow_id}/book", "completed"),
        (f"{left.flow_id}/note_drop_out", "cancelled"),
    ]
