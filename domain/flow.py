"""The Flow aggregate: one run of a multi-step form bound to a conversation.

Every step is an event: an accepted answer, a rejected one (recorded, state unchanged), an
edit, an undo, the confirmation, the end. A run names the definition version it started
with; the Engine hands that version's definition to each command.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from .errors import FlowExpired, InvalidTransition, ValidationFailed
from .events import data_of, status_events, trigger
from .flow_actions import ActionRecord, ActionRun, next_attempt
from .flow_definition import FlowDefinition


class FlowStatus(StrEnum):
    """Where a run of a flow is."""

    ACTIVE = "active"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Rejection(msgspec.Struct, frozen=True, gc=False):
    """An answer the step's validator refused, and why."""

    step: str
    raw: str
    reason: str
    at: datetime


class FlowState(msgspec.Struct, frozen=True):
    """An immutable picture of a flow run at one version."""

    id: UUID
    version: int
    conversation_id: UUID
    definition: str
    definition_version: int
    mode: str | None
    status: FlowStatus
    step: str | None
    answers: dict[str, Any]
    rejections: tuple[Rejection, ...]
    editing: str | None
    started_at: datetime
    updated_at: datetime
    idle_timeout_s: float | None
    actions: dict[str, ActionRecord] = {}  # once ended: each action's last attempt

    @property
    def is_active(self) -> bool:
        """True until the run completes, is cancelled or expires."""
        return self.status is FlowStatus.ACTIVE

    @property
    def expires_at(self) -> datetime | None:
        """When an idle active run expires, if its definition sets a timeout."""
        if not self.is_active or self.idle_timeout_s is None:
            return None
        return self.updated_at + timedelta(seconds=self.idle_timeout_s)


class Flow(Aggregate):
    """A run of a flow definition: current step, answers, rejections, edits, undo, the end."""

    TOPIC = "voxledger:Flow"

    class Event(Aggregate.Event):
        TOPIC = "voxledger:Flow.Event"

        def status_after(self, status: FlowStatus) -> FlowStatus:
            """The run's status after this event (all but the end leave it as it was). The
            status may come as its text value, as the read models keep it."""
            return status

    class Started(Aggregate.Created):
        TOPIC = "voxledger:Flow.Started"
        conversation_id: UUID
        definition: str
        definition_version: int
        mode: str | None
        step: str
        idle_timeout_s: float | None

        def status_after(self, status: FlowStatus | None) -> FlowStatus:
            return FlowStatus.ACTIVE

    def __init__(
        self,
        conversation_id: UUID,
        definition: str,
        definition_version: int,
        mode: str | None,
        step: str,
        idle_timeout_s: float | None,
    ) -> None:
        self.conversation_id = conversation_id
        self.definition = definition
        self.definition_version = definition_version
        self.mode = mode
        self.step: str | None = step
        self.idle_timeout_s = idle_timeout_s
        self.status = FlowStatus.ACTIVE
        self.answers: dict[str, Any] = {}
        self.trail: list[str] = []  # steps whose answers were accepted, in order (for undo)
        self.rejections: list[Rejection] = []
        self.editing: str | None = None  # the step to return to after an edit
        self.actions: dict[str, ActionRecord] = {}  # after the end: each action's attempts
        self.ended_at: datetime | None = None

    @classmethod
    def begin(
        cls,
        conversation_id: UUID,
        definition: FlowDefinition,
        mode: str | None = None,
        *,
        at: datetime,
        flow_id: UUID | None = None,
    ) -> Flow:
        """Start a run of the definition in the given mode, at its first step."""
        if definition.modes and mode is None:
            raise ValidationFailed(
                f"flow {definition.name!r} needs a mode: one of {', '.join(definition.modes)}"
            )
        data = data_of(
            cls.Started,
            conversation_id,
            definition.name,
            definition.version,
            mode,
            definition.first_step(mode),
            definition.idle_timeout_s,
        )
        return cls._create(cls.Started, id=flow_id, timestamp=at, **data)

    # -- answering ---------------------------------------------------------------------------

    class AnswerAccepted(Event):
        TOPIC = "voxledger:Flow.AnswerAccepted"
        PERSONAL = ("value",)
        step: str
        field: str
        value: Any
        next_step: str | None

        def apply(self, f: Flow) -> None:
            f.answers[self.field] = self.value
            f.trail.append(self.step)
            f.step = self.next_step

    class AnswerRejected(Event):
        TOPIC = "voxledger:Flow.AnswerRejected"
        PERSONAL = ("raw", "reason")  # a reason may quote the answer
        step: str
        raw: str
        reason: str

        def apply(self, f: Flow) -> None:
            f.rejections.append(Rejection(self.step, self.raw, self.reason, self.timestamp))

    class FieldEdited(Event):
        TOPIC = "voxledger:Flow.FieldEdited"
        PERSONAL = ("previous", "value")
        step: str
        field: str
        previous: Any
        value: Any
        next_step: str | None

        def apply(self, f: Flow) -> None:
            f.answers[self.field] = self.value
            f.editing = None
            f.step = self.next_step

    class ConfirmationDeclined(Event):
        TOPIC = "voxledger:Flow.ConfirmationDeclined"
        step: str

    def answer(
        self,
        definition: FlowDefinition,
        raw: str,
        *,
        expected_step: str | None = None,
        at: datetime,
    ) -> bool:
        """Answer the current step; True if accepted. A refused answer is recorded too.
        With ``expected_step``, an answer meant for a step the run has already left (another
        device or a late retry moved it on) is refused instead of landing on the next one."""
        step_name = self._require_step()
        if expected_step is not None and expected_step != step_name:
            raise InvalidTransition(
                f"flow {self.id} has moved on from {expected_step!r} to {step_name!r}"
            )
        step = definition.step(step_name)
        try:
            value = definition.validate(step_name, raw)
        except ValidationFailed as refused:
            trigger(self, self.AnswerRejected, step_name, raw, str(refused), at=at)
            return False
        if step.kind == "confirm":
            if value:
                self.confirm(definition, at=at)
            else:
                trigger(self, self.ConfirmationDeclined, step_name, at=at)
            return True
        assert step.field is not None  # an ask step always has one (checked at load)
        answers = {**self.answers, step.field: value}
        if self.editing is not None:
            previous, then = self.answers.get(step.field), self._after_edit(definition, answers)
            trigger(self, self.FieldEdited, step_name, step.field, previous, value, then, at=at)
        else:
            then = definition.next_step(step_name, self.mode, answers)
            trigger(self, self.AnswerAccepted, step_name, step.field, value, then, at=at)
        if self.step is None:
            self._complete(at)
        return True

    def _after_edit(self, definition: FlowDefinition, answers: dict[str, Any]) -> str | None:
        """After an edit, go back where the user was, unless the new answer opened a step
        on the path that has no answer yet (a branch changed)."""
        for name in definition.path(self.mode, answers):
            field = definition.step(name).field
            if field is not None and field not in answers:
                return name
        return self.editing

    # -- edit and undo -----------------------------------------------------------------------

    class EditRequested(Event):
        TOPIC = "voxledger:Flow.EditRequested"
        field: str
        step: str
        return_to: str

        def apply(self, f: Flow) -> None:
            f.editing = self.return_to
            f.step = self.step

    def edit(self, definition: FlowDefinition, field: str, *, at: datetime) -> None:
        """Ask a field again; after the new answer the run returns to where it was."""
        current = self._require_step()
        if field not in self.answers:
            known = ", ".join(self.answers) or "none yet"
            raise ValidationFailed(f"no answer to edit for {field!r} (answered: {known})")
        step = next(s.name for s in definition.steps if s.field == field)
        trigger(self, self.EditRequested, field, step, self.editing or current, at=at)

    def correct(self, definition: FlowDefinition, field: str, raw: str, *, at: datetime) -> bool:
        """Change an answer given before without going back to its step (the user edited
        the message that gave it): the new text is checked by that step, and the run stays
        where it is unless the new answer opens a step on its path that has no answer yet.
        True if accepted; a refused text is recorded and the answer stays as it was."""
        current = self._require_step()
        if self.editing is not None:
            raise InvalidTransition(f"flow {self.id} is editing {current!r}: finish that first")
        if field not in self.answers:
            known = ", ".join(self.answers) or "none yet"
            raise ValidationFailed(f"no answer to change for {field!r} (answered: {known})")
        step = next(s.name for s in definition.steps if s.field == field)
        try:
            value = definition.validate(step, raw)
        except ValidationFailed as refused:
            trigger(self, self.AnswerRejected, step, raw, str(refused), at=at)
            return False
        answers = {**self.answers, field: value}
        opened = next(
            (
                name
                for name in definition.path(self.mode, answers)
                if definition.step(name).field not in (None, *answers)
            ),
            None,
        )
        previous = self.answers[field]
        trigger(self, self.FieldEdited, step, field, previous, value, opened or current, at=at)
        return True

    class AnswerWithdrawn(Event):
        TOPIC = "voxledger:Flow.AnswerWithdrawn"
        PERSONAL = ("previous",)
        step: str
        field: str
        previous: Any

        def apply(self, f: Flow) -> None:
            f.trail.pop()
            f.answers.pop(self.field, None)
            f.editing = None
            f.step = self.step

    def undo(self, definition: FlowDefinition, *, at: datetime) -> None:
        """Withdraw the last accepted answer and ask its step again."""
        self._require_step()
        if not self.trail:
            raise InvalidTransition(f"flow {self.id}: nothing to undo at the first step")
        step = self.trail[-1]
        field = definition.step(step).field
        assert field is not None
        trigger(self, self.AnswerWithdrawn, step, field, self.answers.get(field), at=at)

    # -- the end -------------------------------------------------------------------------------

    class Confirmed(Event):
        TOPIC = "voxledger:Flow.Confirmed"

    class Completed(Event):
        TOPIC = "voxledger:Flow.Completed"
        PERSONAL = ("data",)
        data: dict[str, Any]

        def status_after(self, status: FlowStatus) -> FlowStatus:
            return FlowStatus.COMPLETED

        def apply(self, f: Flow) -> None:
            f.status = self.status_after(f.status)
            f.step = None
            f.editing = None
            f.ended_at = self.timestamp

    def confirm(self, definition: FlowDefinition, *, at: datetime) -> None:
        """The user confirmed the summary: the run completes with its data."""
        step = self._require_step()
        if definition.step(step).kind != "confirm":
            raise InvalidTransition(f"flow {self.id} is at step {step!r}, not at the confirmation")
        trigger(self, self.Confirmed, at=at)
        self._complete(at)

    def _complete(self, at: datetime) -> None:
        trigger(self, self.Completed, dict(self.answers), at=at)

    class Cancelled(Event):
        TOPIC = "voxledger:Flow.Cancelled"
        PERSONAL = ("reason",)
        REDACTED_IF_ERASED = ("reason",)
        step: str | None
        reason: str

        def status_after(self, status: FlowStatus) -> FlowStatus:
            return FlowStatus.CANCELLED

        def apply(self, f: Flow) -> None:
            f.status = self.status_after(f.status)
            f.ended_at = self.timestamp

    def cancel(self, reason: str = "", *, at: datetime) -> None:
        """The user gave up; the run ends where it was."""
        trigger(self, self.Cancelled, self._require_step(), reason, at=at)

    class Expired(Event):
        TOPIC = "voxledger:Flow.Expired"
        step: str | None
        idle_s: float

        def status_after(self, status: FlowStatus) -> FlowStatus:
            return FlowStatus.EXPIRED

        def apply(self, f: Flow) -> None:
            f.status = self.status_after(f.status)
            f.ended_at = self.timestamp

    def expire(self, *, at: datetime) -> None:
        """End a run that has been idle longer than its definition allows."""
        step = self._require_step()
        if not self.is_idle_at(at):
            raise InvalidTransition(f"flow {self.id} is not idle past its timeout")
        idle_s = (at - self.modified_on).total_seconds()
        trigger(self, self.Expired, step, idle_s, at=at)

    def is_idle_at(self, at: datetime) -> bool:
        """True if the run is active and has been idle longer than its timeout at ``at``."""
        return (
            self.status is FlowStatus.ACTIVE
            and self.idle_timeout_s is not None
            and (at - self.modified_on).total_seconds() > self.idle_timeout_s
        )

    # -- actions, once the run has ended -------------------------------------------------

    class ActionStarted(Event):
        TOPIC = "voxledger:Flow.ActionStarted"
        action: str
        attempt: int

        def apply(self, f: Flow) -> None:
            f.actions[self.action] = ActionRecord(self.action, self.attempt, "started")

    class ActionSucceeded(Event):
        TOPIC = "voxledger:Flow.ActionSucceeded"
        PERSONAL = ("result",)  # what the action gave back may name the user
        action: str
        attempt: int
        result: Any

        def apply(self, f: Flow) -> None:
            f.actions[self.action] = ActionRecord(self.action, self.attempt, "succeeded")

    class ActionFailed(Event):
        TOPIC = "voxledger:Flow.ActionFailed"
        PERSONAL = ("error",)  # an error message may quote the run's data
        action: str
        attempt: int
        error: str
        final: bool

        def apply(self, f: Flow) -> None:
            f.actions[self.action] = ActionRecord(
                self.action, self.attempt, "failed", self.error, self.final
            )

    def start_action(
        self, definition: FlowDefinition, action: str, *, max_attempts: int, at: datetime
    ) -> ActionRun | None:
        """Record the next attempt of one of the actions of the way this run ended, and
        what the action is to be given; None when there is no attempt to make (it
        succeeded, or failed for good). An interrupted last attempt is recorded as a final
        failure instead."""
        names = [a.name for a in definition.actions_for(self.status)]
        if self.status is FlowStatus.ACTIVE:
            raise InvalidTransition(f"flow {self.id} is active; its actions run once it ends")
        if action not in names:
            listed = ", ".join(names) or "none"
            raise ValidationFailed(
                f"flow {self.id} ({self.status}) has no action {action!r} (its actions: {listed})"
            )
        record = self.actions.get(action)
        attempt = next_attempt(record, max_attempts)
        if attempt is None:
            if record is not None and record.outcome == "started":
                reason = f"interrupted: attempt {record.attempt} recorded no outcome"
                trigger(self, self.ActionFailed, action, record.attempt, reason, True, at=at)
            return None
        trigger(self, self.ActionStarted, action, attempt, at=at)
        return ActionRun(
            flow_id=self.id,
            conversation_id=self.conversation_id,
            definition=self.definition,
            version=self.definition_version,
            mode=self.mode,
            status=str(self.status),
            data=dict(self.answers),
            ended_at=self.ended_at or self.modified_on,
            action=action,
            attempt=attempt,
            key=f"{self.id}/{action}",
        )

    def finish_action(
        self,
        action: str,
        attempt: int,
        *,
        error: str | None = None,
        result: Any = None,
        max_attempts: int,
        at: datetime,
    ) -> None:
        """Record how an attempt went: succeeded (with what the action gave back), or
        failed with an error (for good once it was the last attempt allowed)."""
        record = self.actions.get(action)
        if record is None or record.outcome != "started" or record.attempt != attempt:
            raise InvalidTransition(f"flow {self.id}: {action!r} attempt {attempt} is not running")
        if error is None:
            trigger(self, self.ActionSucceeded, action, attempt, result, at=at)
        else:
            trigger(self, self.ActionFailed, action, attempt, error, attempt >= max_attempts, at=at)

    def _require_step(self) -> str:
        if self.status is FlowStatus.EXPIRED:
            raise FlowExpired(f"flow {self.id} expired after being idle; start it again")
        if self.status is not FlowStatus.ACTIVE or self.step is None:
            raise InvalidTransition(f"flow {self.id} is {self.status}; it takes no more commands")
        return self.step

    # -- the state as a value ----------------------------------------------------------------

    def state(self) -> FlowState:
        """The run as an immutable value."""
        return FlowState(
            id=self.id,
            version=self.version,
            conversation_id=self.conversation_id,
            definition=self.definition,
            definition_version=self.definition_version,
            mode=self.mode,
            status=self.status,
            step=self.step,
            answers=dict(self.answers),
            rejections=tuple(self.rejections),
            editing=self.editing,
            started_at=self.created_on,
            updated_at=self.modified_on,
            idle_timeout_s=self.idle_timeout_s,
            actions=dict(self.actions),
        )


# The events that may end a run (read models follow its status through these alone).
STATUS_EVENTS = status_events(Flow)
