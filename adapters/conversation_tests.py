"""Conversation tests: scripted conversations (what the user says, what the bot must answer,
the data the run must end with) played through the chat bot users meet, each case a chat of
its own, with every failure reported as the difference between what was expected and what
came. `voxledger test FILE...` runs them on a fresh schema.

A test file (YAML or TOML; the format is in docs/flows.md) holds a list of cases:

    cases:
      - name: a happy customer
        flow: feedback
        steps:
          - bot: How would you rate us, from 1 to 5?
          - user: "4"
          - bot: {contains: Anything}
        data: {rating: 4}
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import msgspec
import yaml

from ..domain.errors import BadInput, VoxledgerError
from .chat.bot import ChatBot, Incoming, Reply

CHANNEL = "test"
SUFFIXES = (".yaml", ".yml", ".toml")


class Expected(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What a reply must be: exactly `text`, or `contains` each of some texts, or match a
    regular expression (searched anywhere: anchor with ^ and $); and offer `choices`."""

    text: str | None = None
    contains: str | list[str] | None = None
    regex: str | None = None
    choices: list[str] | None = None


class Step(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One line of the script: the user says something, and/or the bot must have answered
    something; or time passes (``wait`` seconds) before the next line."""

    user: str | None = None
    bot: str | Expected | None = None
    wait: float | None = None


class Case(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One scripted conversation: which flow (and mode) it starts, its steps, and how the
    run must end: its status and its data (every answer, compared whole)."""

    name: str
    flow: str | None = None
    mode: str | msgspec.UnsetType | None = msgspec.UNSET  # null: start with no mode
    steps: list[Step] = []
    status: Literal["active", "completed", "cancelled", "expired"] | None = None
    data: dict[str, Any] | None = None


class TestFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A file of cases; its ``flow`` and ``mode`` apply to the cases that name none."""

    flow: str | None = None
    mode: str | None = None
    cases: list[Case]


class Failure(msgspec.Struct, frozen=True):
    """Why a case failed: where (a step's number, or the run's status or data) and what was
    expected against what came, as a unified diff where one helps."""

    where: str
    reason: str
    diff: str = ""


class Outcome(msgspec.Struct, frozen=True):
    """One case played: passed, or the first failure met."""

    file: str
    case: str
    failure: Failure | None

    @property
    def passed(self) -> bool:
        """True when the case went as its script says."""
        return self.failure is None


def load_tests(path: str | Path) -> TestFile:
    """The cases of a test file (.yaml, .yml or .toml); BadInput names the file and the
    place of any problem."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise BadInput(f"{path}: a conversation test file ends in .yaml, .yml or .toml")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeError) as error:
        raise BadInput(f"{path}: cannot read the file: {error}") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as error:
        raise BadInput(f"{path}: cannot parse: {' '.join(str(error).split())}") from None
    try:
        tests = msgspec.convert(_texts(data), TestFile)
    except (msgspec.ValidationError, ValueError) as error:
        raise BadInput(f"{path}: {error}") from None
    for case in tests.cases:
        for number, step in enumerate(case.steps, 1):
            problem = _step_problem(step)
            if problem:
                raise BadInput(f"{path}: case {case.name!r}: step {number}: {problem}")
        if (case.flow or tests.flow) is None:
            raise BadInput(f"{path}: case {case.name!r}: which flow? (flow = NAME)")
    return tests


def _texts(data: Any) -> Any:
    """A user's line written as a bare number in YAML or TOML (`user: 4`) is the text
    "4"; a boolean is refused (YAML reads `yes` as one: quote it)."""
    if not isinstance(data, dict):
        return data
    for case in data.get("cases", []) if isinstance(data.get("cases"), list) else []:
        for step in case.get("steps", []) if isinstance(case, dict) else []:
            said = step.get("user") if isinstance(step, dict) else None
            if isinstance(said, bool):
                name = case.get("name")
                raise ValueError(f"case {name!r}: user: {said!r} is a boolean: quote it")
            if isinstance(said, int | float):
                step["user"] = str(said)
    return data


def _step_problem(step: Step) -> str | None:
    if step.wait is not None and (step.user is not None or step.bot is not None):
        return "wait goes on a line of its own"
    if step.wait is not None and step.wait <= 0:
        return "wait is a number of seconds, more than 0"
    if step.wait is None and step.user is None and step.bot is None:
        return "a step says user, bot or wait"
    if isinstance(step.bot, Expected):
        ways = [step.bot.text, step.bot.contains, step.bot.regex]
        if sum(way is not None for way in ways) > 1:
            return "bot: give text, contains or regex, not several"
        if all(way is None for way in ways) and step.bot.choices is None:
            return "bot: give text, contains, regex or choices"
        if step.bot.regex is not None:
            try:
                re.compile(step.bot.regex)
            except re.error as error:
                return f"bot: regex {step.bot.regex!r} is not a regular expression: {error}"
    return None


class ManualClock:
    """The tests' clock: it starts at a given time, moves a second per reading, and jumps
    when a script waits."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def wait(self, seconds: float) -> None:
        """Let time pass."""
        self.now += timedelta(seconds=seconds)


def play(
    bots: Callable[[str], ChatBot],
    clock: ManualClock,
    file: str,
    tests: TestFile,
) -> Iterable[Outcome]:
    """Play every case of a file, each in a chat of its own; ``bots(flow)`` gives the bot
    that runs a flow."""
    for index, case in enumerate(tests.cases, 1):
        chat_id = f"{file}#{index}"
        try:
            failure = _play(bots, clock, case, tests, chat_id)
        except VoxledgerError as error:
            failure = Failure("the run", " ".join(str(error).split()))
        yield Outcome(file, case.name, failure)


def _play(
    bots: Callable[[str], ChatBot], clock: ManualClock, case: Case, tests: TestFile, chat: str
) -> Failure | None:
    flow = case.flow or tests.flow
    assert flow is not None  # load_tests checked it
    bot = bots(flow)
    mode = tests.mode if case.mode is msgspec.UNSET else case.mode
    sent = 0
    last: Reply | None = None
    run: UUID | None = None

    def say(text: str) -> Reply:
        nonlocal sent, run
        sent += 1
        message = Incoming(
            channel=CHANNEL, chat_id=chat, message_id=str(sent), text=text, at=clock()
        )
        reply = bot.handle_chat(message)
        run = reply.flow_id or run
        return reply

    last = say(f"/start {mode}" if mode else "/start")
    for number, step in enumerate(case.steps, 1):
        if step.wait is not None:
            clock.wait(step.wait)
            continue
        if step.user is not None:
            last = say(step.user)
        if step.bot is not None:
            failure = _compare(step.bot, last)
            if failure is not None:
                return Failure(f"step {number} (bot)", *failure)
    if case.status is None and case.data is None:
        return None
    if run is None:
        return Failure("the run", "no run of the flow was started")
    state = bot.engine.get_flow(run)
    if case.status is not None and str(state.status) != case.status:
        return Failure("the run's status", f"expected {case.status}, got {state.status}")
    if case.data is not None and state.answers != case.data:
        differs = _diff(_json(case.data), _json(state.answers))
        return Failure("the run's data", "the data differs", differs)
    return None


def _compare(expected: str | Expected, reply: Reply) -> tuple[str, str] | None:
    """What is wrong with a reply, as (reason, diff), or None."""
    if isinstance(expected, str):
        expected = Expected(text=expected)
    got = reply.text
    if expected.text is not None and got != expected.text:
        return "the reply differs", _diff(expected.text, got)
    if expected.contains is not None:
        fragments = [expected.contains] if isinstance(expected.contains, str) else expected.contains
        missing = [f for f in fragments if f not in got]
        if missing:
            return f"the reply does not contain {missing[0]!r}", _quoted(got)
    if expected.regex is not None and re.search(expected.regex, got) is None:
        return f"the reply does not match the regex {expected.regex!r}", _quoted(got)
    if expected.choices is not None and list(reply.choices) != expected.choices:
        return "the choices differ", _diff("\n".join(expected.choices), "\n".join(reply.choices))
    return None


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _diff(expected: str, got: str) -> str:
    lines = difflib.unified_diff(
        expected.splitlines(), got.splitlines(), "expected", "got", lineterm=""
    )
    return "\n".join(lines)


def _quoted(got: str) -> str:
    return "\n".join(f"got: {line}" for line in got.splitlines() or [""])
