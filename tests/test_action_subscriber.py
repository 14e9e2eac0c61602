"""The action subscriber against a real log: the actions of an ended run run once each,
after the command and never inside it, every attempt recorded on the run's stream; a
failing action is tried again until its attempts end; a subscriber killed in the middle of
an action leaves a start with no outcome, which the next one tries again with the same
key; one subscriber at a time holds the schema's actions; `serve` runs them too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voxledger.adapters.bootstrap import catch_up, open_actions, open_engine, open_projections
from voxledger.domain.engine import Engine
from voxledger.domain.errors import DefinitionError
from voxledger.domain.flow_actions import ActionRun

VOXLEDGER = [sys.executable, "-m", "voxledger.scripts.main"]

ORDER = """
name: order
version: 1
on_complete: [notify, receipt]
on_cancel: [notify]
steps:
  - name: item
    prompt: Which item?
    next: count
  - name: count
    prompt: How many?
    validator: {type: integer, min: 1}
"""

# Actions that note each call in a file, and wait for a gate file when told to: a test can
# hold an action in the middle of its work, and kill the process that runs it.
CODE = """
import json, os, pathlib, time

def notify(run):
    noted = pathlib.Path(os.environ["ACTION_OUT"])
    with noted.open("a") as out:
        out.write(json.dumps({"flow": str(run.flow_id), "status": run.status,
                              "attempt": run.attempt, "key": run.key, "data": run.data}) + "\\n")
    gate = noted.with_suffix(".go")
    while os.environ.get("ACTION_GATE") and not gate.exists():
        time.sleep(0.02)
    return {"noted": run.attempt}

def receipt(run):
    return None

ACTIONS = {"notify": notify, "receipt": receipt}
"""


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


class Calls:
    """Actions for in-process tests: each call is kept; `fail` makes one raise."""

    def __init__(self) -> None:
        self.made: list[ActionRun] = []
        self.fail: dict[str, int] = {}  # action -> calls left that raise
        self.inside = threading.Event()  # an action has begun
        self.gate: threading.Event | None = None  # set: actions wait for it

    def action(self, name: str) -> Callable[[ActionRun], Any]:
        def run(run: ActionRun) -> Any:
            self.made.append(run)
            self.inside.set()
            if self.gate is not None:
                self.gate.wait(30)
            if self.fail.get(name, 0) > 0:
                self.fail[name] -= 1
                raise ConnectionError(f"{name}: the mail server hung up")
            return {"done": name}

        return run


@pytest.fixture
def order_file(tmp_path: Path) -> Path:
    path = tmp_path / "order.yaml"
    path.write_text(ORDER, encoding="utf-8")
    return path


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def shop(database_url, schema, clock, order_file, calls) -> Iterator[Engine]:
    actions = {name: calls.action(name) for name in ("notify", "receipt")}
    with open_engine(database_url, schema=schema, clock=clock, flows=[order_file],
                     actions=actions) as engine:  # fmt: skip
        yield engine


def complete(engine: Engine, item: str = "soup") -> Any:
    reply = engine.start_flow(engine.start_conversation("test"), "order")
    engine.answer(reply.flow_id, item)
    return engine.answer(reply.flow_id, "2").flow_id


def action_events(engine: Engine, flow_id) -> list[tuple[str, dict]]:
    return [
        (entry.type, entry.data)
        for entry in engine.history(flow_id)
        if entry.type.startswith("Action")
    ]


def test_the_actions_of_an_ended_run_run_once_each_after_the_command(
    shop, calls, run, schema
) -> None:
    done = complete(shop)
    assert calls.made == []  # completing the run ran nothing: the subscriber does
    tally = open_actions(shop).catch_up()
    assert (tally.runs, tally.attempts, tally.succeeded, tally.failed) == (1, 2, 2, 0)
    assert [(c.action, c.status, c.data, c.attempt) for c in calls.made] == [
        ("notify", "completed", {"item": "soup", "count": 2}, 1),
        ("receipt", "completed", {"item": "soup", "count": 2}, 1),
    ]
    assert action_events(shop, done) == [
        ("ActionStarted", {"action": "notify", "attempt": 1}),
        ("ActionSucceeded", {"action": "notify", "attempt": 1, "result": {"done": "notify"}}),
        ("ActionStarted", {"action": "receipt", "attempt": 1}),
        ("ActionSucceeded", {"action": "receipt", "attempt": 1, "result": {"done": "receipt"}}),
    ]
    again = open_actions(shop).catch_up()
    assert (again.runs, again.attempts) == (0, 0) and len(calls.made) == 2
    assert shop.get_flow(done).actions["receipt"].outcome == "succeeded"
    catch_up(shop.store)
    summaries = [e.summary for e in open_projections(shop.store).audit(done)]
    assert summaries[-2:] == [
        "action receipt: attempt 1 started",
        "action receipt: attempt 1 succeeded",
    ]
    code, shown = run(schema, "flow", str(done))
    assert code == 0 and "actions" in shown and "succeeded" in shown


def test_a_cancelled_run_runs_its_cancel_actions_with_the_answers_it_had(shop, calls) -> None:
    reply = shop.start_flow(shop.start_conversation("test"), "order")
    shop.answer(reply.flow_id, "cake")
    shop.cancel(reply.flow_id, "changed my mind")
    open_actions(shop).catch_up()
    assert [(c.action, c.status, c.data) for c in calls.made] == [
        ("notify", "cancelled", {"item": "cake"})
    ]


def test_a_failing_action_is_tried_again_until_its_last_attempt_fails_for_good(shop, calls) -> None:
    calls.fail["notify"] = 5
    done = complete(shop)
    tally = open_actions(shop, max_attempts=2, retry_wait_s=0).catch_up()
    assert (tally.attempts, tally.succeeded, tally.failed) == (3, 1, 2)
    notify = [(t, d) for t, d in action_events(shop, done) if d["action"] == "notify"]
    assert notify == [
        ("ActionStarted", {"action": "notify", "attempt": 1}),
        ("ActionFailed", {"action": "notify", "attempt": 1, "final": False,
                          "error": "ConnectionError: notify: the mail server hung up"}),
        ("ActionStarted", {"action": "notify", "attempt": 2}),
        ("ActionFailed", {"action": "notify", "attempt": 2, "final": True,
                          "error": "ConnectionError: notify: the mail server hung up"}),
    ]  # fmt: skip
    assert open_actions(shop, max_attempts=2).catch_up().attempts == 0  # final: left alone
    state = shop.get_flow(done).actions
    assert (state["notify"].outcome, state["notify"].final, state["receipt"].outcome) == (
        "failed", True, "succeeded"
    )  # fmt: skip


def test_one_subscriber_at_a_time_runs_the_actions_of_a_schema(shop, calls) -> None:
    calls.gate = threading.Event()
    complete(shop)
    worker = threading.Thread(target=open_actions(shop).catch_up)
    worker.start()
    try:
        assert calls.inside.wait(30)
        assert open_actions(shop).catch_up().standby
    finally:
        calls.gate.set()
        worker.join(30)
    assert len(calls.made) == 2  # notify and receipt, once each
    assert open_actions(shop).catch_up().standby is False


def test_a_run_whose_action_this_process_lacks_stops_the_subscriber_with_a_clear_error(
    database_url, schema, clock, shop
) -> None:
    complete(shop)
    with open_engine(database_url, schema=schema, clock=clock) as bare:
        with pytest.raises(DefinitionError, match="no action named 'notify' is registered"):
            open_actions(bare).catch_up()
        assert open_actions(bare).status().position == 0


# -- as processes ------------------------------------------------------------------------------


@pytest.fixture
def action_env(cli_env, tmp_path: Path, order_file: Path) -> dict[str, str]:
    (tmp_path / "order_code.py").write_text(CODE, encoding="utf-8")
    return {
        **cli_env,
        "VOXLEDGER_FLOWS": str(order_file),
        "VOXLEDGER_CODE": str(tmp_path / "order_code.py"),
        "ACTION_OUT": str(tmp_path / "calls.jsonl"),
    }


def noted(env: dict[str, str]) -> list[dict]:
    out = Path(env["ACTION_OUT"])
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def engine_of(env: dict[str, str], database_url: str, schema: str, clock) -> Engine:
    return open_engine(database_url, schema=schema, clock=clock,
                       flows=[env["VOXLEDGER_FLOWS"]], code=[env["VOXLEDGER_CODE"]])  # fmt: skip


def test_a_subscriber_killed_inside_an_action_leaves_a_start_that_the_next_one_tries_again(
    action_env, spawn, database_url, schema, clock
) -> None:
    with engine_of(action_env, database_url, schema, clock) as engine:
        done = complete(engine)
    held = {**action_env, "ACTION_GATE": "1"}
    subscriber = spawn([*VOXLEDGER, "actions", "run", "--poll", "0.2"], env=held,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_until(lambda: noted(action_env), "the first attempt of notify")
    with engine_of(action_env, database_url, schema, clock) as engine:
        # While it holds the action, no other subscriber runs it.
        assert open_actions(engine).catch_up().standby
        os.killpg(subscriber.pid, signal.SIGKILL)  # in the middle of the action
        subscriber.wait(30)
        assert action_events(engine, done) == [
            ("ActionStarted", {"action": "notify", "attempt": 1})
        ]
        assert engine.get_flow(done).actions["notify"].outcome == "started"
    Path(action_env["ACTION_OUT"]).with_suffix(".go").touch()  # the next attempt goes through
    rerun = subprocess.run([*VOXLEDGER, "actions", "run", "--once", "--json"], env=held,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout) | {"position": 0} == {
        "runs": 1, "attempts": 2, "succeeded": 2, "failed": 0, "position": 0, "standby": False
    }  # fmt: skip
    calls = noted(action_env)
    assert [(c["attempt"], c["key"]) for c in calls] == [
        (1, f"{done}/notify"),
        (2, f"{done}/notify"),
    ]
    with engine_of(action_env, database_url, schema, clock) as engine:
        assert action_events(engine, done) == [
            ("ActionStarted", {"action": "notify", "attempt": 1}),
            ("ActionStarted", {"action": "notify", "attempt": 2}),
            ("ActionSucceeded", {"action": "notify", "attempt": 2, "result": {"noted": 2}}),
            ("ActionStarted", {"action": "receipt", "attempt": 1}),
            ("ActionSucceeded", {"action": "receipt", "attempt": 1, "result": None}),
        ]
    status = subprocess.run([*VOXLEDGER, "actions", "status", "--json"], env=action_env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert json.loads(status.stdout)["position"] > 0


def test_serve_runs_the_actions_of_runs_that_end_while_it_serves(
    action_env, tmp_path: Path, database_url, schema, clock
) -> None:
    from test_http_server import Server

    server = Server({**action_env, "VOXLEDGER_API_TOKEN": "t"}, tmp_path / "serve.log").start()
    try:
        with engine_of(action_env, database_url, schema, clock) as engine:
            done = complete(engine, "tea")
            (call,) = wait_until(lambda: noted(action_env), "serve running notify")
            assert (call["flow"], call["data"]) == (str(done), {"item": "tea", "count": 2})
            wait_until(
                lambda: engine.get_flow(done).actions.get("receipt"), "the receipt's outcome"
            )
    finally:
        server.stop()


def test_the_actions_of_a_run_whose_data_was_erased_do_not_run(shop, calls) -> None:
    done = complete(shop)
    shop.store.erase(shop.get_flow(done).conversation_id)
    tally = open_actions(shop).catch_up()
    assert (tally.runs, tally.attempts, calls.made) == (1, 0, [])
    assert action_events(shop, done) == []
