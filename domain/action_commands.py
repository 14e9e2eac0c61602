"""The Engine's commands on the actions of ended runs: the subscriber that runs them
(adapters/actions.py) records each attempt's start and its outcome on the run's stream,
so that an action runs once per run and an interrupted attempt shows in the log."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from .definition_commands import DefinitionCommands
from .flow import Flow
from .flow_actions import Action, ActionRun
from .validators import storable

MAX_ATTEMPTS = 3  # the default: an action is tried at most this many times per run


class ActionCommands(DefinitionCommands):
    """Start an attempt of an action of an ended run; record how it went."""

    def actions_due(self, flow_id: UUID) -> list[Action]:
        """The actions of the way a run ended that have not succeeded or failed for good,
        in the order its definition lists them (none while it is active)."""
        flow = self._load(flow_id, Flow)
        definition = self.definition(flow.definition, flow.definition_version)
        return [
            action
            for action in definition.actions_for(flow.status)
            if action.name not in flow.actions or not flow.actions[action.name].done
        ]

    def start_action(
        self,
        flow_id: UUID,
        action: str,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        at: datetime | None = None,
    ) -> ActionRun | None:
        """Record the next attempt of an action of an ended run and return what the action
        is given; None if there is no attempt to make (see `flow_actions.next_attempt`)."""
        at = self._now(at)
        started: list[ActionRun | None] = []

        def work() -> list[Aggregate]:
            flow = self._load(flow_id, Flow, cached=True)
            definition = self.definition(flow.definition, flow.definition_version)
            started[:] = [flow.start_action(definition, action, max_attempts=max_attempts, at=at)]
            return [flow]

        self._transact(work)
        return started[0]

    def finish_action(
        self,
        flow_id: UUID,
        action: str,
        attempt: int,
        *,
        error: str | None = None,
        result: Any = None,
        max_attempts: int = MAX_ATTEMPTS,
        at: datetime | None = None,
    ) -> None:
        """Record that an attempt succeeded (with what the action returned: kept if the log
        can hold it, else as its text) or failed with ``error``."""
        at = self._now(at)
        try:
            kept = storable(result)
        except TypeError:
            kept = repr(result)

        def work() -> list[Aggregate]:
            flow = self._load(flow_id, Flow, cached=True)
            flow.finish_action(
                action, attempt, error=error, result=kept, max_attempts=max_attempts, at=at
            )
            return [flow]

        self._transact(work)
