"""Actions: the user's code that runs once a run of a flow has ended (completed, cancelled
or expired), named by the definition (`on_complete = ["notify"]`) and registered by name.

They never run inside a command: a subscriber reads the ends of runs from the log and runs
each action of a run once, recording on the run's stream when an attempt started and how
it went. This module holds what the domain knows of them: the named reference, what an
action is given, what is recorded of it, and the rule that decides the next attempt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import msgspec


class ActionRun(msgspec.Struct, frozen=True, kw_only=True):
    """What an action is given: the run that ended, how it ended, its data, and which
    attempt this is. ``key`` is the same for every attempt of one action on one run: an
    action that talks to another system can send it to make a repeated attempt harmless."""

    flow_id: UUID
    conversation_id: UUID
    definition: str
    version: int
    mode: str | None
    status: str  # completed, cancelled or expired
    data: dict[str, Any]  # the run's answers (a completed run's data)
    ended_at: datetime
    action: str
    attempt: int
    key: str


ActionFunction = Callable[[ActionRun], Any]
Actions = Mapping[str, ActionFunction]

# Where a definition lists the actions of each way a run can end.
ENDINGS: Mapping[str, str] = {
    "completed": "on_complete",
    "cancelled": "on_cancel",
    "expired": "on_expire",
}


class Action:
    """A named action: known in data by its name, run through its registered function.
    Actions compare by name."""

    __slots__ = ("function", "name")

    def __init__(self, name: str, function: ActionFunction | None) -> None:
        self.name = name
        self.function = function  # None: no action of this name is registered (a problem)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Action) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Action({self.name!r})"


Outcome = Literal["started", "succeeded", "failed"]


class ActionRecord(msgspec.Struct, frozen=True):
    """Where one action of a run stands: its last attempt and how it went. "started" with
    no outcome after it means the attempt was interrupted (the subscriber stopped while
    the action ran): whether the action did its work is not known."""

    action: str
    attempt: int
    outcome: Outcome
    error: str | None = None
    final: bool = False  # a failure that is not tried again

    @property
    def done(self) -> bool:
        """True once the action succeeded or failed for good."""
        return self.outcome == "succeeded" or (self.outcome == "failed" and self.final)


def next_attempt(record: ActionRecord | None, max_attempts: int) -> int | None:
    """The policy: the attempt to make next, or None when there is none to make. An action
    is tried until it succeeds, at most ``max_attempts`` times in all; an interrupted
    attempt counts as one (its action may have done its work, or part of it)."""
    if record is None:
        return 1
    if record.done or record.attempt >= max_attempts:
        return None
    return record.attempt + 1
