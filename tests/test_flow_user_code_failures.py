"""When the user's code fails (a custom validator or a hook raises, or gives what it may
not), the command fails with one line naming the flow, the step and the code, records
nothing, and a chat user gets a polite refusal instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxledger.adapters.bootstrap import open_chat_directory, open_engine
from voxledger.adapters.chat.bot import ChatBot, Incoming
from voxledger.adapters.chat.wording import CODE_FAILED
from voxledger.domain.engine import Engine
from voxledger.domain.errors import CodeFailed
from voxledger.domain.flow_definition import FlowDefinition

FRAGILE = {
    "name": "fragile",
    "version": 1,
    "steps": [
        {"name": "amount", "prompt_hook": "ask", "validator": {"type": "custom", "name": "amount"},
         "next": {"hook": "route", "targets": ["note"], "else": "confirm"}},
        {"name": "note", "prompt": "A note for {amount}?", "next": "confirm"},
        {"name": "confirm", "kind": "confirm", "prompt": "Done?"},
    ],
}  # fmt: skip


class Code:
    """The flow's code, each piece told how to fail by the test."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    def amount(self, raw: str):
        if "validator" in self.failing:
            return 100 // int("0" if raw else "1")
        if "unstorable" in self.failing:
            return {raw}  # a set: the log cannot hold it
        return int(raw)

    def ask(self, mode, answers):
        if "prompt" in self.failing:
            raise LookupError("no price list today")
        return "How much?"

    def route(self, mode, answers):
        if "route" in self.failing:
            return answers["missing"]
        return "note" if answers["amount"] > 10 else None


@pytest.fixture
def code() -> Code:
    return Code()


@pytest.fixture
def fragile(database_url, schema, clock, code) -> Iterator[Engine]:
    definition = FlowDefinition.from_mapping(
        FRAGILE, {"amount": code.amount}, {"ask": code.ask, "route": code.route}
    )
    with open_engine(database_url, schema=schema, clock=clock, flows=[definition]) as engine:
        yield engine


def started(engine: Engine):
    return engine.start_flow(engine.start_conversation("test"), "fragile")


def test_a_custom_validator_that_raises_fails_the_answer_naming_flow_step_and_validator(
    fragile, code
) -> None:
    run = started(fragile).flow_id
    before = fragile.get_flow(run).version
    code.failing.add("validator")
    with pytest.raises(CodeFailed) as failed:
        fragile.answer(run, "5", record_messages=True)
    assert str(failed.value) == (
        "flow 'fragile' v1: step 'amount': custom validator 'amount' failed: "
        "ZeroDivisionError: integer division or modulo by zero"
    )
    assert isinstance(failed.value.__cause__, ZeroDivisionError)  # for the operator's log
    state = fragile.get_flow(run)
    assert (state.version, state.rejections, state.answers) == (before, (), {})
    assert fragile.get_conversation(state.conversation_id).messages == ()


def test_a_value_the_log_cannot_hold_is_a_failure_of_the_validator(fragile, code) -> None:
    run = started(fragile).flow_id
    code.failing.add("unstorable")
    with pytest.raises(CodeFailed, match=(
        "step 'amount': custom validator 'amount' gave a set, which the log cannot hold"
    )):  # fmt: skip
        fragile.answer(run, "5")


def test_a_next_step_hook_that_raises_records_nothing(fragile, code) -> None:
    run = started(fragile).flow_id
    code.failing.add("route")
    with pytest.raises(CodeFailed) as failed:
        fragile.answer(run, "50")
    assert str(failed.value) == (
        "flow 'fragile' v1: step 'amount': hook 'route' failed: KeyError: 'missing'"
    )
    assert fragile.get_flow(run).answers == {}
    code.failing.clear()
    assert fragile.answer(run, "50").step == "note"


def test_a_prompt_hook_that_fails_at_the_start_starts_no_run(fragile, code) -> None:
    cid = fragile.start_conversation("test")
    code.failing.add("prompt")
    with pytest.raises(CodeFailed, match=(
        r"^flow 'fragile' v1: step 'amount': hook 'ask' failed: LookupError: no price list today$"
    )):  # fmt: skip
        fragile.start_flow(cid, "fragile")
    conversation = fragile.get_conversation(cid)
    assert (conversation.active_flow_id, conversation.version) == (None, 1)


def test_a_chat_user_gets_a_polite_refusal_and_can_answer_again(fragile, code) -> None:
    bot = ChatBot(fragile, "fragile", directory=open_chat_directory(fragile.store))

    replies = []

    def say(text: str, n: int) -> str:
        message = Incoming(channel="test", chat_id="ann", message_id=f"m{n}", text=text)
        replies.append(bot.handle_chat(message))
        return replies[-1].text

    assert say("/start", 1) == "How much?"
    chat = replies[0].conversation_id
    code.failing.add("validator")
    assert say("5", 2) == CODE_FAILED
    run = fragile.get_conversation(chat).active_flow_id
    assert fragile.get_flow(run).answers == {}
    said = [(m.role, m.content) for m in fragile.get_conversation(chat).messages][-2:]
    assert said == [("user", "5"), ("assistant", CODE_FAILED)]
    assert say("5", 2) == CODE_FAILED  # the same message again: the same reply
    code.failing.clear()
    assert say("5", 3) == "Done?\n\nAmount: 5"
    code.failing.add("prompt")
    assert say("/start", 4) == CODE_FAILED  # the new run's first prompt fails: none starts
    # One message is one save: the restart failed whole, so the earlier run is still open.
    assert fragile.get_conversation(chat).active_flow_id == run
    assert fragile.get_flow(run).status == "active"


def test_the_chat_command_shows_no_traceback_when_the_code_fails(cli_env, tmp_path: Path) -> None:
    (tmp_path / "fragile_code.py").write_text(
        "def amount(raw):\n    return {raw}\n\nVALIDATORS = {'amount': amount}\n"
        "HOOKS = {'ask': lambda mode, answers: 'How much?', 'route': lambda m, a: None}\n",
        encoding="utf-8",
    )
    import yaml

    (tmp_path / "fragile.yaml").write_text(yaml.safe_dump(FRAGILE), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "voxledger.scripts.main", "chat", "--flow", "fragile",
         "--flows", str(tmp_path / "fragile.yaml"), "--code", str(tmp_path / "fragile_code.py"),
         "--chat-id", "ann"],
        input="/start\n5\n", env=cli_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert f"bot: {CODE_FAILED}" in done.stdout
